"""The experiment report URN in the expansion service: in-process expansion and
refusals (the Java end-to-end test, ExperimentReportIT, runs it on a runner)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from apache_beam.portability import common_urns
from apache_beam.transforms.external import NamedTupleBasedPayloadBuilder

from crossinfer.expansion import environments
from crossinfer.expansion.report import REPORT_URN, encode_report_payload
from crossinfer.expansion.servicer import CrossinferExpansionServicer
from crossinfer.experiments import ReportInput
from crossinfer.experiments.schema import SCHEMA_IDS, ArmReport, PairReport
from crossinfer.policy import LoadPolicy
from xlang_fixtures import Plain, build_request

AB = {"version": 1, "node": {"kind": "ab_test", "name": "exp", "split": "random", "arms": [
    {"name": "control", "weight": 50, "node": {"kind": "model", "name": "a",
                                               "framework": "sklearn", "uri": "a.pkl"}},
    {"name": "treatment", "weight": 50, "node": {"kind": "model", "name": "b",
                                                 "framework": "sklearn", "uri": "b.pkl"}}]}}


def _servicer() -> CrossinferExpansionServicer:
    return CrossinferExpansionServicer(
        LoadPolicy(), environments.build_environment("external", "localhost:1"))


def test_the_report_urn_expands_to_arms_and_pairs_with_fixed_schemas() -> None:
    """The spec's model files need not exist: the report reads the spec's
    structure (arms, weights), never its models."""
    response = _servicer().Expand(build_request(
        REPORT_URN, encode_report_payload(json.dumps(AB), ground_truth="digit",
                                          confidence=0.9), ReportInput))
    assert not response.error, response.error
    outputs = dict(response.transform.outputs)
    assert set(outputs) == {"arms", "pairs"}
    for tag, row_type in (("arms", ArmReport), ("pairs", PairReport)):
        coder = response.components.coders[
            response.components.pcollections[outputs[tag]].coder_id]
        assert coder.spec.urn == common_urns.coders.ROW.urn
        from apache_beam.portability.api import schema_pb2

        schema = schema_pb2.Schema.FromString(coder.spec.payload)
        assert schema.id == SCHEMA_IDS[row_type]
        assert [f.name for f in schema.fields] == list(row_type._fields)


def _raw(**fields: Any) -> bytes:
    from typing import NamedTuple

    row_type = NamedTuple("P", [(k, type(v)) for k, v in fields.items()])  # type: ignore[misc]
    return NamedTupleBasedPayloadBuilder(row_type(**fields)).payload()


@pytest.mark.parametrize(("payload", "element_type", "message"), [
    (_raw(spec=json.dumps(AB), fn="x"), ReportInput, "payload: unknown field(s) 'fn'"),
    (_raw(spec=json.dumps(AB), confidence="0.9"), ReportInput,
     "payload.confidence: must be a DOUBLE"),
    (encode_report_payload(json.dumps(AB), confidence=1.5), ReportInput,
     "payload.confidence: 1.5 is not in (0, 1)"),
    (encode_report_payload(json.dumps(AB), control="nope"), ReportInput,
     "payload.control: 'nope' is not an arm of 'exp'"),
    (encode_report_payload(json.dumps(AB), metric="f1"), ReportInput,
     "payload.metric: 'f1' is not one of accuracy, mean_abs_error"),
    (encode_report_payload(json.dumps({"version": 1, "node": AB["node"]["arms"][0]["node"]})),
     ReportInput, "payload.spec.node: the report reads an A/B test's results"),
    (encode_report_payload("[1]"), ReportInput, "payload.spec: expected a JSON object"),
    (encode_report_payload(json.dumps(AB)), Plain,
     "input: the report reads rows of the report input schema"),
])
def test_report_refusals_name_the_field(payload: bytes, element_type: type,
                                        message: str) -> None:
    servicer = _servicer()
    response = servicer.Expand(build_request(REPORT_URN, payload, element_type))
    assert response.error.startswith("crossinfer: "), response.error
    assert message in response.error, response.error
    # and the service answers the next request
    assert not servicer.Expand(build_request(
        REPORT_URN, encode_report_payload(json.dumps(AB)), ReportInput)).error


def test_unknown_urn_message_lists_the_report() -> None:
    response = _servicer().Expand(build_request("beam:transform:crossinfer:nope:v1", b""))
    assert REPORT_URN in response.error
