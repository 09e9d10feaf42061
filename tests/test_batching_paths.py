"""The fast paths: shape bucketing of ragged input, the record coder's cheap
size estimate, crossinfer's default batching, fast input validation."""

from __future__ import annotations

import itertools
import pickle
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import torch
from apache_beam import coders
from apache_beam.utils.windowed_value import WindowedValue

import crossinfer as ci
from crossinfer.handlers.keyed import Chunk
from crossinfer.handlers.registry import model_handler
from crossinfer.models import MeanPoolClassifier
from crossinfer.patterns.to_records import ToRecords
from crossinfer.records import Batch, Failure, Item, ItemBatch, RecordBase, RecordCoder
from crossinfer.rows import IOConfig, fields_view, screen_batch, stack_batch, to_item, to_output_row
from support import float_tolerance, run


def ragged_rows(n: int, seed: int = 0) -> list[beam.Row]:
    rng = np.random.default_rng(seed)
    return [beam.Row(id=i, features=rng.standard_normal(int(rng.integers(4, 12)))
                     .astype(np.float32)) for i in range(n)]


def drain(dofn: ToRecords, elements: list) -> list:
    """Run a DoFn by hand over one bundle; returns its outputs in order."""
    dofn.start_bundle()
    out = []
    for e in elements:
        out.extend(dofn.process(e))
    out.extend(wv.value if isinstance(wv, WindowedValue) else wv for wv in dofn.finish_bundle())
    return out


def test_equal_shapes_pass_straight_through() -> None:
    rows = [beam.Row(id=i, features=np.ones(3, dtype=np.float32)) for i in range(10)]
    out = drain(ToRecords(IOConfig(), "bucket", chunk=4), rows)
    assert [r.original.id for r in out] == list(range(10))


def test_ragged_shapes_come_out_grouped_and_none_is_lost() -> None:
    rows = ragged_rows(500)
    dofn = ToRecords(IOConfig(), "bucket", chunk=16)
    out = drain(dofn, [*rows, beam.Row(id=999, features=None)])
    assert sorted(r.original.id for r in out) == [*range(500), 999]
    assert sum(isinstance(r, Failure) for r in out) == 1
    items = [r for r in out if isinstance(r, Item)]
    runs = 1 + sum(a.features.shape != b.features.shape for a, b in itertools.pairwise(items))
    assert runs < 500 / 8, runs  # round-robin-ish shapes, regrouped into long runs


def test_bucketing_is_off_unless_asked() -> None:
    rows = ragged_rows(50)
    out = drain(ToRecords(IOConfig(), "items"), rows)
    assert [r.original.id for r in out] == list(range(50))


def test_batches_mode_emits_batches_of_one_shape() -> None:
    rows = [*ragged_rows(300), beam.Row(id=998, features=[1.0, float("nan")])]
    batches = drain(ToRecords(IOConfig(), "batches", chunk=8), rows)
    assert all(type(b) is ItemBatch and 0 < len(b) <= 8 for b in batches)
    records = [r for b in batches for r in b]
    assert sorted(r.original.id for r in records) == [*range(300), 998]
    for b in batches:
        assert len({r.features.shape if type(r) is Item else "failed" for r in b}) == 1
    assert sum(len(b) == 8 for b in batches) > len(batches) // 2


class _Releases:
    """Drives a ToRecords by hand, noting how many records it holds whenever
    it lets a batch go."""

    def __init__(self, dofn: ToRecords) -> None:
        self.dofn = dofn
        self.held_bytes: list[int] = []

    def run(self, rows: list) -> list:
        self.dofn.start_bundle()
        out = []
        for row in rows:
            released = list(self.dofn.process(row))
            if released:
                self.held_bytes.append(self.dofn._held_bytes)
            out.extend(released)
        out.extend(wv.value for wv in self.dofn.finish_bundle())
        return out


def test_held_records_of_many_shapes_are_bounded_by_bytes(monkeypatch) -> None:
    from crossinfer.patterns import to_records

    monkeypatch.setattr(to_records, "HELD_BYTES", 64 * 1024)
    rng = np.random.default_rng(1)
    # 1,000 rows of 16 lengths, 1-4 KiB each: far fewer than 16 batches of 256,
    # but ~2.5 MiB in all.
    rows = [beam.Row(id=i, features=np.ones(int(rng.integers(256, 1024)) // 64 * 64,
                                            dtype=np.float32)) for i in range(1_000)]
    probe = _Releases(ToRecords(IOConfig(), "batches", chunk=256))
    batches = probe.run(rows)
    assert sorted(r.original.id for b in batches for r in b) == list(range(1_000))
    assert len(probe.held_bytes) > 10  # batches left during the bundle, not only at its end
    assert max(probe.held_bytes) <= 64 * 1024
    assert all(len({r.features.shape for r in b}) == 1 for b in batches)


def test_one_shape_is_held_until_it_fills_a_batch_whatever_its_bytes(monkeypatch) -> None:
    from crossinfer.patterns import to_records

    monkeypatch.setattr(to_records, "HELD_BYTES", 1024)
    rows = [beam.Row(id=i, features=np.ones(512, dtype=np.float32)) for i in range(100)]
    batches = drain(ToRecords(IOConfig(), "batches", chunk=32), rows)
    assert [len(b) for b in batches] == [32, 32, 32, 4]  # the batch size the model asked for


def test_ragged_pipeline_matches_calling_the_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = MeanPoolClassifier(hidden=8, classes=3)
    torch.save(model.state_dict(), tmp_path / "pool.pt")
    node = ci.ModelNode(name="pool", framework="pytorch", format="state_dict",
                        uri=str(tmp_path / "pool.pt"),
                        model_class="crossinfer.models:MeanPoolClassifier",
                        model_params={"hidden": 8, "classes": 3}, postprocess=(ci.Op("argmax"),))
    rows = ragged_rows(700, seed=3)
    results, failures, _ = run(rows, ci.Model(node))
    assert failures == [] and len(results) == 700
    with torch.no_grad():
        for r in results:
            x = torch.from_numpy(rows[r.id].features)[None]
            np.testing.assert_allclose(r.inference, model(x)[0].numpy(), **float_tolerance(
                np.float32, terms=12, layers=3))  # mean over at most 12 values


def test_record_coder_round_trips_and_estimates_without_pickling() -> None:
    impl = RecordCoder().get_impl()
    item = to_item(beam.Row(id=1, key="k", features=np.arange(8, dtype=np.float32)), IOConfig())
    item.inference_list, item.label = [1.0, 2.0], 1
    batch = Batch("orig", np.zeros((5, 3), dtype=np.float32), np.arange(5))
    failure = Failure("orig", "node", "why", index=2)
    for record in (item, batch, failure):
        back = impl.decode(impl.encode(record))
        assert type(back) is type(record)
        assert pickle.dumps(back) == pickle.dumps(record)
    assert impl.estimate_size(item) == 128 + 32
    chunk = Chunk("route", [item] * 10)  # keyed: a route's records, sized without pickling
    assert coders.registry.get_coder(Chunk) == RecordCoder()
    assert impl.estimate_size(chunk) == 10 * (128 + 32)
    assert impl.decode(impl.encode(chunk)).items[0].label == 1
    assert coders.registry.get_coder(RecordBase) == RecordCoder()


def test_default_batching_is_a_fixed_size_and_a_min_makes_it_adaptive(models) -> None:
    def kwargs(batching: ci.Batching) -> dict:
        node = ci.ModelNode(name="m", framework="sklearn", format="skops",
                            uri=models.path("digits_lr.skops"),
                            batching=batching)
        return model_handler(node, ci.LoadPolicy(), "m").batch_elements_kwargs()

    assert kwargs(ci.Batching()) == {"min_batch_size": 256, "max_batch_size": 256}
    assert kwargs(ci.Batching(max_batch_size=64)) == {"min_batch_size": 64,
                                                       "max_batch_size": 64}
    assert kwargs(ci.Batching(min_batch_size=8)) == {"min_batch_size": 8, "max_batch_size": 256}


def test_fast_validation_agrees_with_the_careful_one() -> None:
    io = IOConfig()
    huge = np.full(4, 3e38, dtype=np.float32)  # finite, but its sum of squares overflows
    with np.errstate(over="ignore"):
        assert isinstance(to_item(beam.Row(features=huge), io), Item)
    for bad in (np.array([1.0, np.nan], dtype=np.float32), np.array([np.inf]),
                np.array([[1.0], [-np.inf]])):
        failure = to_item(beam.Row(features=bad), io)
        assert isinstance(failure, Failure) and "NaN or infinity" in failure.error
    assert isinstance(to_item({"features": np.array([1, 2])}, io), Item)
    assert to_item({"features": np.zeros(0, dtype=np.float32)}, io).error.endswith("is empty")


def test_a_batch_screened_once_fails_the_same_elements_as_screening_each() -> None:
    io = IOConfig()
    rows = [np.full(3, 1.0, np.float32), np.array([1.0, np.nan, 2.0], np.float32),
            np.full(3, 3e38, np.float32),  # finite, though the batch's sum overflows
            np.array([np.inf, 0.0, 0.0]), np.array([1, 2, 3])]
    elements = [beam.Row(id=i, features=x) for i, x in enumerate(rows)] + [{"other": 1}]
    with np.errstate(over="ignore"):
        one_by_one = [to_item(e, io) for e in elements]
        screened = screen_batch([to_item(e, io, screen_finite=False) for e in elements],
                                io.features_field)
    assert [type(r) for r in screened] == [type(r) for r in one_by_one] == [
        Item, Failure, Item, Failure, Item, Failure]
    for got, want in zip(screened, one_by_one, strict=True):
        assert got.original is want.original
        assert getattr(got, "error", None) == getattr(want, "error", None)
    clean = [to_item(beam.Row(features=np.ones((2, 2))), io, screen_finite=False)] * 3
    assert screen_batch(clean, "features") is clean  # nothing to replace: the same list


def test_a_stacked_batch_is_kept_only_when_every_record_is_a_finite_item() -> None:
    io = IOConfig()
    rows = [beam.Row(id=i, features=np.arange(3, dtype=np.float32) + i) for i in range(4)]
    items = [to_item(r, io, screen_finite=False) for r in rows]
    batch = stack_batch(items, "features")
    assert type(batch) is ItemBatch and list(batch) == items
    np.testing.assert_array_equal(batch.stacked, np.stack([r.features for r in rows]))
    ints = stack_batch([to_item(beam.Row(features=[1, 2]), io)] * 2, "features")
    assert ints.stacked is not None and ints.stacked.dtype.kind == "i"
    nan = to_item(beam.Row(id=9, features=np.array([1, np.nan, 2], np.float32)), io,
                  screen_finite=False)
    screened = stack_batch([*items[:2], nan], "features")
    assert screened.stacked is None and type(screened[2]) is Failure
    assert "NaN or infinity" in screened[2].error
    with_failure = stack_batch([items[0], Failure("x", "input", "bad")], "features")
    assert with_failure.stacked is None and len(with_failure) == 2


def test_an_item_batch_keeps_its_stacked_features_across_the_coder() -> None:
    impl = RecordCoder().get_impl()
    items = [to_item(beam.Row(id=i, features=np.ones(4, np.float32) * i), IOConfig())
             for i in range(3)]
    back = impl.decode(impl.encode(stack_batch(items, "features")))
    assert type(back) is ItemBatch and [r.original.id for r in back] == [0, 1, 2]
    np.testing.assert_array_equal(back.stacked, np.ones((3, 4), np.float32) * [[0], [1], [2]])


def test_a_stacked_batch_of_the_wrong_shape_fails_each_element(models) -> None:
    node = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"),
                        input_shape=(64,))
    handler = model_handler(node, ci.LoadPolicy(), "lr")
    items = [to_item(beam.Row(id=i, features=np.zeros(8, np.float32)), IOConfig())
             for i in range(3)]
    out = handler.run_inference(stack_batch(items, "features"), handler.load_model())
    assert [type(r) for r in out] == [Failure] * 3
    assert "expects input_shape [64]" in out[0].error


class _In(NamedTuple):
    id: int
    features: bytes


class _Out(NamedTuple):  # the expansion service's results type for _In: input fields, then outputs
    id: int
    features: bytes
    model: str
    path: str
    inference: list
    label: int | None
    score: float | None
    labels: list | None
    scores: list | None


class _Renamed(NamedTuple):  # an input field named like an output field: the general path
    id: int
    features: bytes
    label: int


def test_named_tuple_rows_are_read_and_extended_in_place() -> None:
    """Rows from another SDK arrive as NamedTuples: read without a dict copy,
    and their result row built as one tuple, equal to the general path's."""
    packed = np.array([1.0, 2.0, 3.0], dtype="<f4").tobytes()
    element = _In(7, packed)
    assert dict(fields_view(element)) == {"id": 7, "features": packed}
    item = to_item(element, IOConfig())
    assert isinstance(item, Item) and item.features.tolist() == [1.0, 2.0, 3.0]
    item.model, item.path, item.inference = "m", "ab/m", np.array([0.25, 0.75])
    item.label, item.score = 1, 0.75
    fast = to_output_row(item, _Out)
    assert type(fast) is _Out
    general = _Out(**{**element._asdict(), "model": "m", "path": "ab/m", "inference": [0.25, 0.75],
                      "label": 1, "score": 0.75, "labels": None, "scores": None})
    assert fast == general
    renamed = to_item(_Renamed(8, packed, 5), IOConfig())
    renamed.model, renamed.path, renamed.inference = "m", "m", np.array([1.0])
    row = to_output_row(renamed, beam.Row)
    assert (row.id, row.label, row.inference) == (8, None, [1.0]), "output fields win"
    assert to_item(_In(9, packed), IOConfig(features_field="pixels")).error.startswith(
        "the input has no field 'pixels' (fields: features, id)")
