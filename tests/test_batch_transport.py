"""The batch transport (crossinfer.expansion.transport): rows sent in batches
give exactly the results and failures of the row transport.

The tests pack batches as a client does (each row Row-encoded, the features
concatenated) and unpack the result batches as a client does, then compare
with the same rows through the row transport (``crossinfer.Inference``).
"""

# No ``from __future__ import annotations``: Beam reads the row types' annotations.

import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.coders import RowCoder
from apache_beam.portability.api import schema_pb2
from apache_beam.typehints.schemas import named_tuple_to_schema

import crossinfer as ci
from crossinfer.engine.assemble import Assembler
from crossinfer.engine.emit import ResultBatchFormat
from crossinfer.expansion import payload as payload_mod
from crossinfer.expansion import transport
from crossinfer.expansion.schemas import InputSchemaError, atomic_type
from crossinfer.rows import IOConfig
from paths import Packed, pack, unpack
from support import DIGITS_TOL, assert_same_label, float_tolerance, run


class Doubles(NamedTuple):
    id: int
    key: Optional[str]  # noqa: UP045
    features: Optional[Sequence[Optional[float]]]  # noqa: UP045


Batch = transport.named_tuple_from_schema(transport.BATCH_SCHEMA)
POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*",))


def both_ways(rows: list[Any], spec: Any, size: int = 100) -> tuple[dict, dict, dict, dict]:
    """(results, failures) by id through the batch transport, then the row transport."""
    batches, schema = pack(rows, size)
    results, failures, _ = run(batches, transport.BatchTransportInference(
        spec, input_schema=schema, policy=POLICY))
    decode = RowCoder(schema).decode
    got = {}
    for r in unpack(results, schema):
        got.setdefault(r["row"].id, []).append(r)
    got_failed = {decode(f.element).id: (f.node, f.error) for f in failures}
    direct, direct_failed, _ = run(rows, ci.Inference(spec, policy=POLICY))
    want = {}
    for r in direct:
        want.setdefault(r.id, []).append(r)
    want_failed = {f.element.id: (f.node, f.error) for f in direct_failed}
    return got, got_failed, want, want_failed


def packed_rows(x: np.ndarray, n: int) -> list[Packed]:
    return [Packed(i, f"user-{i}", x[i].astype("<f4").tobytes()) for i in range(n)]


@pytest.fixture()
def specs(models) -> dict[str, dict]:
    return {name: json.loads((models.root / f"{name}.json").read_text())
            for name in ("ab", "sequence", "keyed")}


def model_spec(models) -> dict:
    return {"version": 1, "node": {
        "kind": "model", "name": "mlp", "framework": "pytorch", "format": "state_dict",
        "uri": models.path("digits_mlp.pt"), "model_class": "crossinfer.models:MLP",
        "model_params": {"sizes": [64, 64, 10]}, "batching": {"max_batch_size": 32},
        "preprocess": [{"op": "scale", "factor": 1 / 16}],
        "postprocess": [{"op": "softmax"}, {"op": "top_k", "k": 3}]}}


def test_a_failed_row_is_named_by_its_bytes() -> None:
    """Each row's original is its bytes: a failed row's failure carries them."""
    reader = transport.BatchTransportReader(
        IOConfig(), named_tuple_to_schema(Packed).SerializeToString(), keyed=False)
    reader.setup()
    batch = Batch(rows=[b"a", b"b"], features=np.ones(2, "<f4").tobytes(), dtype="<f4",
                  lengths=np.asarray([2, transport.UNPACKED], "<i4").tobytes(), keys=None)
    (failed, block) = reader.read(batch, Assembler(None, "features", keyed=False))
    assert block.originals == [b"a"] and len(block) == 1
    assert [f.original for f in failed.failures] == [b"b"]
    _, failure_type = transport.batch_output_types()
    row = ResultBatchFormat(*transport.batch_output_types()).failure(failed.failures[0])
    assert type(row) is failure_type and row.element == b"b"


@pytest.mark.parametrize("name", ["model", "sequence", "ab", "keyed"])
def test_batches_give_the_row_transports_results(models, digits_data, specs, name) -> None:
    x, _ = digits_data
    rows = packed_rows(x, 250)
    if name == "keyed":
        routes = ["sklearn", "torch", "onnx"]
        rows = [r._replace(key=routes[r.id % 3]) for r in rows]
    spec = model_spec(models) if name == "model" else specs[name]
    got, got_failed, want, want_failed = both_ways(rows, spec, size=64)
    assert got_failed == want_failed == {}
    assert len(got) == 250
    for i, results in want.items():
        for m, t in zip(sorted(got[i], key=lambda r: r["path"]),
                        sorted(results, key=lambda r: r.path), strict=True):
            assert m["row"] == rows[i]  # the row itself comes back, untouched
            assert (m["model"], m["path"]) == (t.model, t.path)
            # The transports batch the rows differently: float32 within the tolerance,
            # labels equal unless the top scores tie within it.
            np.testing.assert_allclose(m["inference"], t.inference, **DIGITS_TOL)
            assert_same_label(m["label"], t.label, t.inference, DIGITS_TOL["atol"])
            assert (m["score"] is None) == (t.score is None)
            if t.scores is not None:
                np.testing.assert_allclose(m["scores"], t.scores, **DIGITS_TOL)
                for got_label, want_label in zip(m["labels"], t.labels, strict=True):
                    assert_same_label(got_label, want_label, t.inference, DIGITS_TOL["atol"])
    if name == "model":
        assert all(r[0]["labels"] is not None and len(r[0]["labels"]) == 3
                   for r in got.values())


def test_bad_rows_fail_with_the_row_transports_messages(models, specs) -> None:
    good = [1.0] * 64
    rows = [Doubles(0, "a", good), Doubles(1, "b", None), Doubles(2, "c", [1.0, None] * 32),
            Doubles(3, "d", [math.nan, *good[1:]]), Doubles(4, "e", []),
            Doubles(5, "f", good[:10]), Doubles(6, "g", [math.inf] * 64), Doubles(7, "h", good)]
    for spec in (specs["sequence"], specs["ab"]):
        got, got_failed, want, want_failed = both_ways(rows, spec, size=5)
        assert got_failed == want_failed
        assert set(got_failed) == {1, 2, 3, 4, 5, 6}
        assert sorted(got) == sorted(want) == [0, 7]
        assert "is null" in got_failed[1][1] and "NaN or infinity" in got_failed[3][1]


def test_odd_packed_byte_counts_fail_like_the_row_transport(models, specs) -> None:
    rows = [Packed(0, "a", b"\0" * 256), Packed(1, "b", b"\0" * 7), Packed(2, "c", None)]
    got, got_failed, _, want_failed = both_ways(rows, specs["sequence"])
    assert got_failed == want_failed and set(got_failed) == {1, 2}
    assert "7 bytes" in got_failed[1][1]
    assert sorted(got) == [0]


def test_a_malformed_batch_fails_every_row_it_carries() -> None:
    rows = [b"r0", b"r1"]
    for bad in (dict(lengths=np.asarray([2], "<i4").tobytes()),
                dict(dtype="object"), dict(features=b"\0" * 12),
                dict(lengths=np.asarray([2, -5], "<i4").tobytes()), dict(keys=["k"])):
        fields = dict(rows=rows, features=b"\0" * 16, dtype="<f4",
                      lengths=np.asarray([2, 2], "<i4").tobytes(), keys=None)
        fields.update(bad)
        into = Assembler(8, "features", keyed=True)
        reader = transport.BatchTransportReader(
            IOConfig(), named_tuple_to_schema(Packed).SerializeToString(), keyed=True)
        reader.setup()
        blocks = [*reader.read(Batch(**fields), into), *into.finish()]
        assert sum(len(b) for b in blocks) == 0
        failures = [f for b in blocks for f in b.failures]
        assert [f.original for f in failures] == rows
        assert all(f.error.startswith("malformed batch from the client: ") for f in failures)


def test_ragged_rows_are_grouped_by_length_and_all_accounted_for(models, digits_data,
                                                                  specs) -> None:
    x, _ = digits_data
    spec = {"version": 1, "node": {
        "kind": "model", "name": "mean", "framework": "sklearn", "method": "predict_proba",
        "format": "skops", "uri": models.path("digits_lr.skops"),
        "preprocess": [{"op": "pad_truncate", "length": 64}, {"op": "scale", "factor": 1 / 16}]}}
    rows = [Doubles(i, None, x[i][: 16 + (i * 7) % 49].tolist()) for i in range(120)]
    got, got_failed, want, want_failed = both_ways(rows, spec, size=50)
    assert got_failed == want_failed == {}
    assert sorted(got) == sorted(want) == list(range(120))
    for i in want:
        # Other batch compositions: float32 LR (64 terms, 1 layer) within its tolerance.
        np.testing.assert_allclose(got[i][0]["inference"], want[i][0].inference,
                                   **float_tolerance(np.float32, terms=64, layers=1))


def test_transport_needs_bounded_input_in_the_global_window(models, specs) -> None:
    from apache_beam.transforms import window

    _, schema = pack([Packed(0, None, b"\0" * 256)])
    core = transport.BatchTransportInference(specs["sequence"], input_schema=schema)
    p = beam.Pipeline()
    windowed = p | beam.Create([]) | beam.WindowInto(window.FixedWindows(10))
    with pytest.raises(ValueError, match="bounded input in the global window"):
        _ = windowed | core


# ------------------------------------------------------------ the service side


def test_payload_carries_the_transport_and_the_rows_schema() -> None:
    schema = named_tuple_to_schema(Packed)
    data = payload_mod.encode_payload('{"version": 1, "node": {}}', input_schema=schema)
    decoded = payload_mod.decode_payload(data)
    assert decoded.transport == "batches"
    assert [f.name for f in decoded.input_schema.fields] == ["id", "key", "features"]
    assert payload_mod.decode_payload(payload_mod.encode_payload("{}")).input_schema is None


@pytest.mark.parametrize("fields,message", [
    (("batches", None), "payload.input_schema: required with transport 'batches'"),
    (("rows", "AAAA"), "payload.input_schema: only used with transport 'batches'"),
    (("pigeons", None), "payload.transport: 'pigeons' is not one of rows, batches"),
    (("batches", "%%%"), "payload.input_schema: not a base64 serialized Schema"),
])
def test_bad_transport_payloads_are_refused_naming_the_field(fields, message) -> None:
    row = NamedTuple("P", [("spec", str), ("transport", Optional[str]),  # noqa: UP045
                           ("input_schema", Optional[str])])("{}", *fields)  # noqa: UP045
    data = beam.transforms.external.NamedTupleBasedPayloadBuilder(row).payload()
    with pytest.raises(payload_mod.PayloadError, match=message.replace("(", r"\(")):
        payload_mod.decode_payload(data)


def test_only_the_batch_schema_is_taken_as_batches() -> None:
    transport.check_batch_schema(transport.BATCH_SCHEMA)
    wrong = schema_pb2.Schema()
    wrong.CopyFrom(transport.BATCH_SCHEMA)
    wrong.fields[1].type.atomic_type = schema_pb2.STRING
    with pytest.raises(InputSchemaError, match="field 'features' must be BYTES, got STRING"):
        transport.check_batch_schema(wrong)
    extra = schema_pb2.Schema()
    extra.CopyFrom(transport.BATCH_SCHEMA)
    extra.fields.add(name="fn", type=atomic_type(schema_pb2.BYTES))
    with pytest.raises(InputSchemaError, match="no field"):
        transport.check_batch_schema(extra)
