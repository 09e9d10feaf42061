"""Timing (``model_ms`` / ``batch_size``) everywhere results are written: the
payload's ``timing`` field, the batch transport's timing columns, batch-native
input, and the expansion service over gRPC on a portable runner."""

# No ``from __future__ import annotations``: Beam reads the row types' annotations.

import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders import RowCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.external import NamedTupleBasedPayloadBuilder
from apache_beam.typehints.schemas import named_tuple_from_schema

import crossinfer as ci
from crossinfer.expansion import ExternalInference, encode_payload, schemas, transport
from crossinfer.expansion import payload as payload_mod
from crossinfer.expansion.report import decode_report_payload, encode_report_payload
from crossinfer.patterns.batched import BatchedInference
from crossinfer.wire import RESULT_COLUMNS, TIMING_COLUMNS, TIMING_FIELDS
from paths import Packed, pack
from support import run
from xlang_fixtures import (
    STORE,
    Collect,
    Digit,
    Plain,
    build_request,
    expansion_stub,
    shared_stack,
)

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*",))
SCALE = {"op": "scale", "factor": 1 / 16}


def ab_spec(models: Any) -> dict:
    """The demo's A/B (hash split on ``key``): 1 stage per control row, 2 per treatment
    row (a sequence), each with its own batch size."""
    lr = {"kind": "model", "name": "lr", "framework": "sklearn", "format": "skops",
          "uri": models.path("digits_lr.skops"), "method": "predict_proba",
          "preprocess": [SCALE], "postprocess": [{"op": "argmax"}],
          "batching": {"max_batch_size": 64}}
    seq = {"kind": "sequence", "name": "seq", "stages": [
        {"kind": "model", "name": "pca", "framework": "sklearn", "format": "skops",
         "uri": models.path("digits_pca.skops"), "method": "transform", "preprocess": [SCALE],
         "batching": {"max_batch_size": 32}},
        {"kind": "model", "name": "pca_mlp", "framework": "pytorch", "format": "state_dict",
         "uri": models.path("digits_pca_mlp.pt"), "model_class": "crossinfer.models:MLP",
         "model_params": {"sizes": [16, 32, 10]}, "postprocess": [{"op": "argmax"}],
         "batching": {"max_batch_size": 16}}]}
    return {"version": 1, "node": {"kind": "ab_test", "name": "ab", "split": "hash",
                                   "salt": "timing", "arms": [
                                       {"name": "control", "weight": 50, "node": lr},
                                       {"name": "treatment", "weight": 50, "node": seq}]}}


#: stages -> each stage's batch size bound, per arm of :func:`ab_spec`.
MOST = {"ab/control/lr": [64], "ab/treatment/seq/pca_mlp": [32, 16]}


def check_timing(path: str, model_ms: Any, batch_size: Any) -> None:
    """One entry per model on the row's path; finite, non-negative times; each call's
    rows between 1 and the node's batch size. (Never the times' values: tests do not
    assert on timing.)"""
    most = MOST[path]
    assert len(model_ms) == len(batch_size) == len(most), (path, model_ms, batch_size)
    assert all(isinstance(ms, float) and math.isfinite(ms) and ms >= 0 for ms in model_ms)
    assert all(1 <= size <= m for size, m in zip(batch_size, most, strict=True))


# ------------------------------------------------------------------ payload


def test_the_timing_field_is_decoded_strictly_and_absent_by_default() -> None:
    spec = '{"version": 1}'
    assert payload_mod.decode_payload(encode_payload(spec, timing=True)).timing is True
    plain = encode_payload(spec)
    assert payload_mod.decode_payload(plain).timing is False
    # Without timing, the payload is what it always was: the three-field Row.
    assert plain == NamedTupleBasedPayloadBuilder(payload_mod.PayloadRow(spec, None, None)
                                                  ).payload()
    schema = named_tuple_to_schema_of(Packed)
    batches = payload_mod.decode_payload(encode_payload(spec, input_schema=schema, timing=True))
    assert batches.timing is True and batches.transport == "batches"


def named_tuple_to_schema_of(t: type) -> Any:
    from apache_beam.typehints.schemas import named_tuple_to_schema

    return named_tuple_to_schema(t)


def timing_payload(value: Optional[str]) -> bytes:  # noqa: UP045
    row = NamedTuple("T", [("spec", str), ("timing", Optional[str])])(  # noqa: UP045
        '{"version": 1}', value)
    return NamedTupleBasedPayloadBuilder(row).payload()


def test_explicit_false_and_null_mean_no_timing() -> None:
    assert payload_mod.decode_payload(timing_payload("false")).timing is False
    assert payload_mod.decode_payload(timing_payload(None)).timing is False


@pytest.mark.parametrize("value", ["True", "1", "yes", " true", "", "x" * 10_000])
def test_a_bad_timing_value_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(payload_mod.PayloadError, match=r"^payload\.timing: .* is not one of "
                                                       r"'true', 'false' \(or null\)$") as exc:
        payload_mod.decode_payload(timing_payload(value))
    assert len(str(exc.value)) < 200  # the client's value is clipped in the message


def test_a_non_string_timing_field_is_refused() -> None:
    row = NamedTuple("B", [("spec", str), ("timing", bool)])('{"version": 1}', True)
    with pytest.raises(payload_mod.PayloadError, match=r"payload\.timing: must be a STRING, "
                                                       "got BOOLEAN"):
        payload_mod.decode_payload(NamedTupleBasedPayloadBuilder(row).payload())


def test_the_report_payload_decodes_through_the_shared_helper() -> None:
    decoded = decode_report_payload(encode_report_payload('{"version": 1}', "truth",
                                                          confidence=0.9))
    assert decoded.spec == {"version": 1}
    assert decoded.settings["ground_truth"] == "truth" and decoded.settings["confidence"] == 0.9
    with pytest.raises(payload_mod.PayloadError, match=r"unknown field.*'timing'"):
        decode_report_payload(timing_payload("true"))


def test_results_schema_gains_the_timing_fields_only_when_asked() -> None:
    schema = named_tuple_to_schema_of(Plain)
    plain = schemas.results_schema(schema)
    timed = schemas.results_schema(schema, timing=True)
    assert [f.name for f in timed.fields] == [f.name for f in plain.fields] + list(TIMING_FIELDS)
    assert schemas.describe(timed.fields[-2].type) == "ARRAY<DOUBLE>"
    assert schemas.describe(timed.fields[-1].type) == "ARRAY<INT64>"
    assert timed.id != plain.id


# ------------------------------------------------------------------ in-process pipelines


def unpack_timing(batches: list[Any], schema: Any) -> list[dict[str, Any]]:
    """A timed result batch -> {row, path, model_ms, batch_size} per result, as a
    client unpacks it (the timing columns of docs/wire-contract.md)."""
    decode = RowCoder(schema).decode
    out = []
    for b in batches:
        node = np.frombuffer(b.node, RESULT_COLUMNS["node"])
        ms = np.frombuffer(b.model_ms, TIMING_COLUMNS["model_ms"])
        sizes = np.frombuffer(b.batch_size, TIMING_COLUMNS["batch_size"])
        lengths = np.frombuffer(b.model_ms_lengths, TIMING_COLUMNS["model_ms_lengths"])
        assert len(lengths) == len(b.rows) and len(ms) == len(sizes) == lengths.sum()
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        for i, row in enumerate(b.rows):
            lo, hi = offsets[i], offsets[i + 1]
            out.append({"row": decode(row), "path": b.paths[node[i]],
                        "model_ms": ms[lo:hi].tolist(), "batch_size": sizes[lo:hi].tolist()})
    return out


def test_the_batch_transport_carries_timing_columns(models, digits_data) -> None:
    x, _ = digits_data
    rows = [Packed(i, f"user-{i}", x[i].astype("<f4").tobytes()) for i in range(200)]
    batches, schema = pack(rows, 64)
    results, failures, _ = run(batches, transport.BatchTransportInference(
        ab_spec(models), input_schema=schema, policy=POLICY, key_field="key", timing=True))
    assert failures == []
    assert all(type(b)._fields == tuple(transport.TIMED_RESULT_BATCH_SCHEMA.fields[i].name
                                        for i in range(len(b))) for b in results)
    got = unpack_timing(results, schema)
    assert sorted(r["row"].id for r in got) == list(range(200))
    assert {r["path"] for r in got} == set(MOST)
    for r in got:
        check_timing(r["path"], r["model_ms"], r["batch_size"])


def test_the_batch_transport_without_timing_keeps_its_schema(models, digits_data) -> None:
    x, _ = digits_data
    rows = [Packed(i, f"user-{i}", x[i].astype("<f4").tobytes()) for i in range(20)]
    batches, schema = pack(rows, 8)
    results, _, _ = run(batches, transport.BatchTransportInference(
        ab_spec(models), input_schema=schema, policy=POLICY, key_field="key"))
    assert results and all(not hasattr(b, "model_ms") for b in results)
    assert all(type(b)._fields == tuple(f.name for f in transport.RESULT_BATCH_SCHEMA.fields)
               for b in results)


def test_batch_native_results_carry_timing(models, digits_data) -> None:
    x, _ = digits_data
    seq = ab_spec(models)["node"]["arms"][1]["node"]
    elements = [beam.Row(id=i, features=x[i:i + 10]) for i in range(0, 100, 10)]
    elements.append(beam.Row(id=999, features=x[:40]))  # larger than both batch sizes
    results, failures, _ = run(elements, BatchedInference({"version": 1, "node": seq},
                                                          policy=POLICY, timing=True))
    assert failures == [] and sum(len(r.index) for r in results) == 140
    for r in results:
        assert len(r.model_ms) == len(r.batch_size) == 2
        assert all(math.isfinite(ms) and ms >= 0 for ms in r.model_ms)
        # An element's rows run together in each stage's call: at least all of them.
        assert all(size >= len(r.index) for size in r.batch_size)
    plain, _, _ = run(elements[:2], BatchedInference({"version": 1, "node": seq},
                                                     policy=POLICY))
    assert all(not hasattr(r, "model_ms") for r in plain)


# ------------------------------------------------------------------ through the service


class Timed(NamedTuple):
    """An input row with a field named like a timing field: replaced with timing."""

    id: int
    key: Optional[str]  # noqa: UP045
    features: Sequence[float]
    model_ms: Optional[str]  # noqa: UP045


BatchRow = named_tuple_from_schema(transport.BATCH_SCHEMA)
# Schema'd element types cross the language boundary as Rows.
beam.coders.registry.register_coder(Timed, beam.coders.RowCoder)
beam.coders.registry.register_coder(BatchRow, beam.coders.RowCoder)


@pytest.mark.slow
def test_timing_through_the_service_rows_and_batches(models, digits_data) -> None:
    """One PortableRunner pipeline through the real service over gRPC: the A/B with
    timing on both transports, and without (no timing fields)."""
    x, _ = digits_data
    stack = shared_stack(models.root)
    text = json.dumps(ab_spec(models))
    rows = [Timed(i, f"user-{i}", [float(v) for v in x[i]], "mine") for i in range(120)]
    packed = [Packed(i, f"user-{i}", x[i].astype("<f4").tobytes()) for i in range(120)]
    batches, packed_schema = pack(packed, 50)
    options = PipelineOptions(runner="PortableRunner", job_endpoint=stack.job_endpoint,
                              environment_type="LOOPBACK")
    with beam.Pipeline(options=options) as p:
        timed = (p | "rows" >> beam.Create(rows).with_output_types(Timed)
                 | "timed" >> ExternalInference(text, stack.service_address, timing=True))
        _ = timed.results | "r" >> beam.Map(Collect("timing/rows"))
        _ = timed.failures | "f" >> beam.Map(Collect("timing/rows-failures"))
        plain = (p | "plain rows" >> beam.Create(rows[:10]).with_output_types(Timed)
                 | "plain" >> ExternalInference(text, stack.service_address))
        _ = plain.results | "rp" >> beam.Map(Collect("timing/plain"))
        outs = (p | "batches" >> beam.Create(batches).with_output_types(BatchRow)
                | "batched" >> beam.ExternalTransform(
                    "beam:transform:crossinfer:ab_test:v1",
                    encode_payload(text, input_schema=packed_schema, timing=True),
                    stack.service_address))
        _ = outs["results"] | "rb" >> beam.Map(Collect("timing/batches"))
        _ = outs["failures"] | "fb" >> beam.Map(Collect("timing/batches-failures"))
    got = STORE.pop("timing/rows", [])
    assert STORE.pop("timing/rows-failures", []) == []
    assert sorted(r.id for r in got) == list(range(120))
    for r in got:
        assert r.model_ms != "mine"  # the input field of that name is replaced
        check_timing(r.path, list(r.model_ms), list(r.batch_size))
    assert {r.path for r in got} == set(MOST)
    plain_rows = STORE.pop("timing/plain", [])
    assert len(plain_rows) == 10
    assert all(r.model_ms == "mine" and not hasattr(r, "batch_size") for r in plain_rows)
    assert STORE.pop("timing/batches-failures", []) == []
    unpacked = unpack_timing(STORE.pop("timing/batches", []), packed_schema)
    assert sorted(r["row"].id for r in unpacked) == list(range(120))
    for r in unpacked:
        check_timing(r["path"], r["model_ms"], r["batch_size"])


@pytest.mark.slow
def test_the_service_refuses_a_bad_timing_value_and_answers_the_next(models) -> None:
    stack = shared_stack(models.root)
    stub = expansion_stub(stack.service_address)
    spec = json.dumps({"version": 1, "node": ab_spec(models)["node"]["arms"][0]["node"]})
    row = NamedTuple("T", [("spec", str), ("timing", Optional[str])])(  # noqa: UP045
        spec, "TRUE")
    bad = stub.Expand(build_request("beam:transform:crossinfer:model:v1",
                                    NamedTupleBasedPayloadBuilder(row).payload(), Digit))
    assert "payload.timing: 'TRUE' is not one of 'true', 'false'" in bad.error
    assert not bad.transform.outputs
    good = stub.Expand(build_request("beam:transform:crossinfer:model:v1",
                                     encode_payload(spec, "pixels", timing=True), Digit))
    assert good.error == ""
    results = good.transform.outputs["results"]
    coder = good.components.pcollections[results].coder_id
    assert coder  # the results carry a Row schema with the timing fields
    text = good.components.coders[coder].spec.payload
    assert b"model_ms" in text and b"batch_size" in text
