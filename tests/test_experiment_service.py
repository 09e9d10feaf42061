"""The experiment report URN in the expansion service: in-process expansion and
refusals (the Java end-to-end test, ExperimentReportIT, runs it on a runner)."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from apache_beam.coders import RowCoder
from apache_beam.coders.typecoders import registry
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


# ------------------------------------------------------------ through the real service

HASH_AB = {**AB, "node": {**AB["node"], "split": "hash", "name": "exp"}}


def _hash_rows(keys_per_arm: dict[str, dict[str, int]]) -> list[ReportInput]:
    """Report input rows of a hash split: ``{arm: {key: elements}}``."""
    model = {"control": "a", "treatment": "b"}
    return [ReportInput(f"exp/{arm}/{model[arm]}", False, 1, 0.9, None, None, None, None, None,
                        key)
            for arm, keys in keys_per_arm.items() for key, n in keys.items() for _ in range(n)]


#: A sound hash split on 4 keys, 2 per arm, that carry unequal traffic: 500
#: elements, 4 units of assignment. Counted by element (400 vs 100) its SRM
#: would fire; counted by key it cannot.
SOUND = {"control": {"k0": 300, "k1": 100}, "treatment": {"k2": 50, "k3": 50}}
#: A broken 50/50 hash split: 600 keys to 400 (one element each).
BROKEN = {"control": {f"c{i}": 1 for i in range(600)},
          "treatment": {f"t{i}": 1 for i in range(400)}}


def _run_through_service(models: Any, inputs: dict[str, tuple[list[Any], type]]
                         ) -> dict[str, list[ArmReport]]:
    """Each ``{tag: (rows, row type)}`` through the report URN of a real
    expansion service (gRPC), run on Beam's Python job server."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from xlang_fixtures import STORE, Collect, shared_stack

    stack = shared_stack(models.root)
    options = PipelineOptions(runner="PortableRunner", job_endpoint=stack.job_endpoint,
                              environment_type="LOOPBACK")
    with beam.Pipeline(options=options) as p:
        for tag, (rows, row_type) in inputs.items():
            out = (p | f"{tag}/in" >> beam.Create(rows).with_output_types(row_type)
                   | f"{tag}/report" >> beam.ExternalTransform(
                       REPORT_URN, encode_report_payload(json.dumps(HASH_AB)),
                       stack.service_address))
            _ = out["arms"] | f"{tag}/arms" >> beam.Map(Collect(f"svc/{tag}"))
    return {tag: STORE.pop(f"svc/{tag}", []) for tag in inputs}


def _srm(found: list[Any]) -> float:
    (p,) = {arm.srm_p_value for arm in found}
    assert p is not None
    return float(p)


@pytest.mark.slow
def test_a_hash_splits_srm_through_the_service_counts_distinct_keys(models: Any) -> None:
    from scipy.stats import chisquare

    found = _run_through_service(models, {"sound": (_hash_rows(SOUND), ReportInput),
                                          "broken": (_hash_rows(BROKEN), ReportInput)})
    assert {a.arm: a.routed for a in found["sound"]} == {"control": 400, "treatment": 100}
    assert chisquare([400, 100]).pvalue < 1e-3  # what counting elements would say
    assert _srm(found["sound"]) == pytest.approx(1.0, rel=1e-12)  # 2 keys to 2
    assert _srm(found["broken"]) == pytest.approx(chisquare([600, 400]).pvalue, rel=1e-9)
    assert _srm(found["broken"]) < 1e-3  # flagged (summary.SRM_ALPHA)


#: The report input rows of a client from before ``key``: its first nine fields
#: (the functional form: Beam reads no string annotations).
KeylessInput = typing.NamedTuple(  # type: ignore[misc]
    "KeylessInput", [(f, ReportInput.__annotations__[f]) for f in ReportInput._fields[:9]])
registry.register_coder(KeylessInput, RowCoder)
#: ... and of a client from before the timing fields: the first seven.
UntimedInput = typing.NamedTuple(  # type: ignore[misc]
    "UntimedInput", [(f, ReportInput.__annotations__[f]) for f in ReportInput._fields[:7]])
registry.register_coder(UntimedInput, RowCoder)


@pytest.mark.slow
def test_rows_without_keys_still_work_and_count_elements(models: Any) -> None:
    from scipy.stats import chisquare

    rows = [KeylessInput(*row[:9]) for row in _hash_rows(SOUND)]
    untimed = [UntimedInput(*row[:7]) for row in _hash_rows(SOUND)]
    found = _run_through_service(models, {"keyless": (rows, KeylessInput),
                                          "untimed": (untimed, UntimedInput)})
    for tag in ("keyless", "untimed"):
        assert {a.arm: a.routed for a in found[tag]} == {"control": 400, "treatment": 100}
        assert _srm(found[tag]) == pytest.approx(chisquare([400, 100]).pvalue, rel=1e-9)
    assert all(a.latency_count == 0 for a in found["untimed"])
