"""Call a running crossinfer expansion service from a Python pipeline.

This is what a Java or Go pipeline does, from Python: the spec travels as JSON
in the v1 payload, the service validates and expands it, the transform runs in
the service's worker environment. Python pipelines that do not need a separate
service use ``crossinfer.Inference`` directly.

    outputs = rows | "AB" >> ExternalInference(spec, "localhost:8097")
    outputs.results, outputs.failures
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import PCollection

from crossinfer.expansion.payload import encode_payload
from crossinfer.expansion.urns import BY_URN, FAILURES_TAG, MODEL_URN, PATTERNS, RESULTS_TAG
from crossinfer.patterns import InferenceOutputs
from crossinfer.spec import InferenceSpec, spec_to_json
from crossinfer.spec.nodes import ABTestNode, KeyedNode, ModelNode, SequenceNode

_APPLIED = itertools.count(1)

SpecLike = InferenceSpec | ModelNode | ABTestNode | SequenceNode | KeyedNode | dict[str, Any] | str


def spec_json(spec: SpecLike) -> str:
    """The spec as JSON text (an InferenceSpec, a root node, a JSON object or text)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        # allow_nan=False: the payload is plain JSON, which has no NaN.
        return json.dumps(spec, allow_nan=False)
    if not isinstance(spec, InferenceSpec):
        spec = InferenceSpec(node=spec)
    return spec_to_json(spec, indent=None)


def urn_for_spec(text: str) -> str:
    """The URN for the spec's root kind. A spec without a known kind gets the
    model URN, so that the *service* reports what is wrong with it, with the
    field path, as it would to any other SDK."""
    try:
        kind = json.loads(text)["node"]["kind"]
    except (ValueError, TypeError, KeyError):
        return MODEL_URN
    for pattern in PATTERNS:
        if pattern.name == kind:
            return pattern.urn
    return MODEL_URN


class ExternalInference(beam.PTransform[Any, Any]):
    """Apply a crossinfer spec through the expansion service at ``expansion_service``
    (``host:port``). Returns ``InferenceOutputs(results, failures)`` of Rows.

    ``urn`` overrides the URN picked from the spec's root kind (for tests of the
    service's own checks); ``features_field`` / ``key_field`` default, on the
    service, to ``features`` / ``key``; ``timing=True`` asks for the result rows'
    ``model_ms`` and ``batch_size`` (the payload's ``timing`` field, as in
    :class:`crossinfer.Inference`).
    """

    def __init__(self, spec: SpecLike, expansion_service: str, *,
                 features_field: str | None = None, key_field: str | None = None,
                 urn: str | None = None, timing: bool = False,
                 label: str | None = None) -> None:
        super().__init__(label)
        text = spec_json(spec)
        self.urn = urn or urn_for_spec(text)
        self.payload = encode_payload(text, features_field, key_field, timing=timing)
        self.expansion_service = expansion_service

    def expand(self, pcoll: PCollection[Any]) -> InferenceOutputs:
        outputs: Any = pcoll | beam.ExternalTransform(self.urn, self.payload,
                                                      self.expansion_service)
        return InferenceOutputs(outputs[RESULTS_TAG], outputs[FAILURES_TAG])


def external_inference(pcoll: PCollection[Any], spec: SpecLike, expansion_service: str, *,
                       features_field: str | None = None, key_field: str | None = None,
                       urn: str | None = None, timing: bool = False) -> InferenceOutputs:
    """``pcoll | ExternalInference(...)``, labelled by the URN's pattern."""
    transform = ExternalInference(spec, expansion_service, features_field=features_field,
                                  key_field=key_field, urn=urn, timing=timing)
    name = BY_URN[transform.urn].name if transform.urn in BY_URN else "external"
    # Beam labels must be unique within a pipeline; number each application.
    out: InferenceOutputs = pcoll | f"crossinfer_{name}_{next(_APPLIED)}" >> transform
    return out
