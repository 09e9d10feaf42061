"""What the docs tell a client about its rows and models, shown.

* docs/service.md: a ``beam.Row`` whose list field is empty gets ``List[Any]``
  from Beam's inference, which the service refuses; a declared schema works.
* README (*PyTorch state dicts*): the layout of ``crossinfer.models:MLP``'s state dict.
"""

# No ``from __future__ import annotations``: Beam reads the annotations below.

from collections.abc import Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.typehints.row_type import RowTypeConstraint

import crossinfer as ci
from crossinfer.expansion import environments, payload
from crossinfer.expansion.servicer import CrossinferExpansionServicer
from crossinfer.models import MLP
from xlang_fixtures import build_request


class Declared(NamedTuple):
    id: int
    features: Sequence[float]


beam.coders.registry.register_coder(Declared, beam.coders.RowCoder)


def _expand(models: Any, element_type: Any) -> str:
    spec = (models.root / "sequence.json").read_text()
    service = CrossinferExpansionServicer(
        ci.LoadPolicy(model_roots=(str(models.root),)),
        environments.build_environment("external", "localhost:1"))
    return service.Expand(build_request("beam:transform:crossinfer:sequence:v1",
                                        payload.encode_payload(spec), element_type)).error


def test_an_inferred_empty_list_is_refused_and_a_declared_schema_is_not(models) -> None:
    p = beam.Pipeline()
    inferred = (p | beam.Create([beam.Row(id=1, features=[])])).element_type
    assert "features=List[Any]" in str(inferred)
    error = _expand(models, inferred)
    assert "input schema field 'features' has logical type 'beam:logical:pythonsdk_any:v1'" \
        in error
    declared = RowTypeConstraint.from_fields([("id", int), ("features", Sequence[float])])
    assert _expand(models, declared) == ""
    assert _expand(models, Declared) == ""


def test_the_mlp_state_dict_layout_is_the_documented_one() -> None:
    shapes = {k: tuple(v.shape) for k, v in MLP([64, 64, 10]).state_dict().items()}
    assert shapes == {"net.0.weight": (64, 64), "net.0.bias": (64,),
                      "net.2.weight": (10, 64), "net.2.bias": (10,)}
