"""The inference spec: its declaration, JSON (de)serialisation, JSON Schema, validation.

* :mod:`.nodes` declares the nodes and their fields, :mod:`.ops` the ops, with
  the rules of :mod:`.constraints` and the bounds of :mod:`.limits`;
* :mod:`.codec` decodes and encodes JSON, :mod:`.schema` writes the JSON Schema;
* :mod:`.validate` is the one entry point that checks a spec
  (:func:`load_spec` decodes, then calls it).

This package imports nothing of crossinfer's but :mod:`crossinfer.policy` and
:mod:`crossinfer.errors`: the layers above it (ops, engine, frameworks, Beam
transforms, expansion service) import it, never the reverse.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from crossinfer.policy import LoadPolicy
from crossinfer.spec.codec import (
    node_from_dict,
    node_to_dict,
    spec_from_dict,
    spec_from_json,
    spec_to_dict,
    spec_to_json,
)
from crossinfer.spec.errors import SpecError
from crossinfer.spec.limits import SpecLimits
from crossinfer.spec.nodes import (
    SPEC_VERSION,
    ABTestNode,
    Arm,
    Batching,
    InferenceSpec,
    KeyedNode,
    Memory,
    ModelNode,
    Node,
    Op,
    Route,
    SequenceNode,
    walk,
)
from crossinfer.spec.validate import validate_spec


def load_spec(source: str | dict[str, Any] | InferenceSpec,
              policy: LoadPolicy | None = None,
              limits: SpecLimits | None = None) -> InferenceSpec:
    """Decode (JSON text or object) and validate a spec; raise SpecError naming each bad field.

    ``policy``: what it may load (default: :class:`LoadPolicy`'s defaults);
    ``limits``: how large it may be (default: :class:`SpecLimits`'s defaults).
    Returns the checked spec (a normalised copy when ``source`` is a spec).
    """
    if isinstance(source, InferenceSpec):
        spec = source
    elif isinstance(source, str):
        spec = spec_from_json(source)
    else:
        spec = spec_from_dict(source)
    return validate_spec(spec, policy, limits)


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of spec documents (``spec/schema.json``)."""
    text = resources.files("crossinfer.spec").joinpath("schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


__all__ = [
    "SPEC_VERSION",
    "ABTestNode",
    "Arm",
    "Batching",
    "InferenceSpec",
    "KeyedNode",
    "LoadPolicy",
    "Memory",
    "ModelNode",
    "Node",
    "Op",
    "Route",
    "SequenceNode",
    "SpecError",
    "SpecLimits",
    "json_schema",
    "load_spec",
    "node_from_dict",
    "node_to_dict",
    "spec_from_dict",
    "spec_from_json",
    "spec_to_dict",
    "spec_to_json",
    "validate_spec",
    "walk",
]
