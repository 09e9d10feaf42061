"""The fast paths: shape bucketing of ragged input, the block coder's cheap
size estimate, crossinfer's default batching, fast input validation."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import torch
from apache_beam import coders
from apache_beam.utils.windowed_value import WindowedValue

import crossinfer as ci
from crossinfer.engine import assemble
from crossinfer.engine.assemble import Assembler
from crossinfer.engine.block import Block, BlockCoder, ColumnRows, Failure
from crossinfer.engine.emit import RowFormat
from crossinfer.handlers.registry import model_handler
from crossinfer.models import MeanPoolClassifier
from crossinfer.patterns.edges import RowReader, ToBlocks
from crossinfer.rows import IOConfig, fields_view
from support import float_tolerance, run


def ragged_rows(n: int, seed: int = 0) -> list[beam.Row]:
    rng = np.random.default_rng(seed)
    return [beam.Row(id=i, features=rng.standard_normal(int(rng.integers(4, 12)))
                     .astype(np.float32)) for i in range(n)]


def to_blocks(size: int | None, io: IOConfig | None = None) -> ToBlocks:
    """The step that reads rows into blocks (``size`` None: a block per element)."""
    io = io or IOConfig()
    dofn = ToBlocks(RowReader(io, keyed=False), size, io.features_field, keyed=False)
    dofn.setup()
    return dofn


def drain(dofn: ToBlocks, elements: list) -> list[Block]:
    """Run a DoFn by hand over one bundle; returns its outputs in order."""
    dofn.start_bundle()
    out = []
    for e in elements:
        out.extend(dofn.process(e))
    out.extend(wv.value if isinstance(wv, WindowedValue) else wv for wv in dofn.finish_bundle())
    return out


def row_ids(blocks: list[Block]) -> list[int]:
    """The ids of the blocks' rows, in order (failures not included)."""
    return [b.original(i).id for b in blocks for i in range(len(b))]


def failures_of(blocks: list[Block]) -> list[Failure]:
    return [f for b in blocks for f in b.failures]


def test_equal_shapes_pass_straight_through() -> None:
    rows = [beam.Row(id=i, features=np.ones(3, dtype=np.float32)) for i in range(10)]
    out = drain(to_blocks(4), rows)
    assert row_ids(out) == list(range(10))


def test_ragged_shapes_come_out_grouped_and_none_is_lost() -> None:
    rows = ragged_rows(500)
    out = drain(to_blocks(16), [*rows, beam.Row(id=999, features=None)])
    assert sorted(row_ids(out) + [f.original.id for f in failures_of(out)]) == [*range(500), 999]
    assert len(failures_of(out)) == 1
    shapes = [b.features.shape[1:] for b in out for _ in range(len(b))]
    runs = 1 + sum(a != b for a, b in itertools.pairwise(shapes))
    assert runs < 500 / 8, runs  # round-robin-ish shapes, regrouped into long runs


def test_bucketing_is_off_unless_asked() -> None:
    rows = ragged_rows(50)
    out = drain(to_blocks(None), rows)
    assert [len(b) for b in out] == [1] * 50  # a block per element, for Beam to batch
    assert row_ids(out) == list(range(50))


def test_batches_mode_emits_batches_of_one_shape() -> None:
    rows = [*ragged_rows(300), beam.Row(id=998, features=[1.0, float("nan")])]
    blocks = drain(to_blocks(8), rows)
    assert all(type(b) is Block and len(b) <= 8 for b in blocks)
    assert all(len(b) or b.failures for b in blocks)
    assert sorted(row_ids(blocks) + [f.original.id for f in failures_of(blocks)]) == [
        *range(300), 998]
    for b in blocks:  # one shape per block: its features are one stacked array
        assert b.features.shape[0] == len(b)
    assert sum(len(b) == 8 for b in blocks) > len(blocks) // 2


class _Releases:
    """Drives a ToBlocks by hand, noting how many bytes of rows it holds
    whenever it lets a block go."""

    def __init__(self, dofn: ToBlocks) -> None:
        self.dofn = dofn
        self.held_bytes: list[int] = []

    def run(self, rows: list) -> list:
        self.dofn.start_bundle()
        out = []
        for row in rows:
            released = list(self.dofn.process(row))
            if released:
                self.held_bytes.append(self.dofn._assembler.held_bytes)
            out.extend(released)
        out.extend(wv.value for wv in self.dofn.finish_bundle())
        return out


def test_held_records_of_many_shapes_are_bounded_by_bytes(monkeypatch) -> None:
    monkeypatch.setattr(assemble, "HELD_BYTES", 64 * 1024)
    rng = np.random.default_rng(1)
    # 1,000 rows of 16 lengths, 1-4 KiB each: far fewer than 16 batches of 256,
    # but ~2.5 MiB in all.
    rows = [beam.Row(id=i, features=np.ones(int(rng.integers(256, 1024)) // 64 * 64,
                                            dtype=np.float32)) for i in range(1_000)]
    probe = _Releases(to_blocks(256))
    blocks = probe.run(rows)
    assert sorted(row_ids(blocks)) == list(range(1_000))
    assert len(probe.held_bytes) > 10  # blocks left during the bundle, not only at its end
    assert max(probe.held_bytes) <= 64 * 1024
    assert all(b.features.ndim == 2 for b in blocks)  # one shape per block


def test_one_shape_is_held_until_it_fills_a_batch_whatever_its_bytes(monkeypatch) -> None:
    monkeypatch.setattr(assemble, "HELD_BYTES", 1024)
    rows = [beam.Row(id=i, features=np.ones(512, dtype=np.float32)) for i in range(100)]
    blocks = drain(to_blocks(32), rows)
    assert [len(b) for b in blocks] == [32, 32, 32, 4]  # the batch size the model asked for


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


def test_block_coder_round_trips_and_estimates_without_pickling() -> None:
    impl = BlockCoder().get_impl()
    rows = [beam.Row(id=i, key="k", features=np.arange(8, dtype=np.float32)) for i in range(10)]
    block = Block(rows, np.stack([r.features for r in rows]), keys=["k"] * 10,
                  failures=[Failure("orig", "node", "why", index=2)])
    native = Block(["orig"], np.zeros((5, 3), dtype=np.float32), np.zeros(5, np.int64),
                   np.arange(5))  # a batch-native element's rows
    for value in (block, native, Block.of_failures([Failure("orig", "node", "why")])):
        back = impl.decode(impl.encode(value))
        assert type(back) is Block
        _assert_same_block(back, value)
    assert impl.decode(impl.encode(block)).failures[0].index == 2
    assert impl.estimate_size(block) == 10 * (128 + 32)  # sized without pickling
    assert impl.estimate_size(("route", block)) == 10 * (128 + 32)  # keyed: (route, block)
    assert coders.registry.get_coder(Block) == BlockCoder()


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (type(a) is type(b) and a.dtype.str == b.dtype.str and a.shape == b.shape
                and a.dtype.metadata == b.dtype.metadata
                and a.flags.writeable == b.flags.writeable
                and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f")))
    if type(a) is beam.Row:
        return type(b) is beam.Row and list(vars(a)) == list(vars(b)) and all(
            _same_value(x, y) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    if type(a) is dict:
        return type(b) is dict and list(a) == list(b) and all(
            _same_value(x, y) for x, y in zip(a.values(), b.values(), strict=True))
    if isinstance(a, Failure):
        return (isinstance(b, Failure) and _same_value(a.original, b.original)
                and (a.node, a.error, a.index) == (b.node, b.error, b.index))
    if isinstance(a, (list, tuple)):
        # (rows rebuilt from columns are a list that also holds them: ColumnRows)
        same_type = type(a) is type(b) or {type(a), type(b)} == {list, ColumnRows}
        return same_type and len(a) == len(b) and all(
            _same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _assert_same_block(back: Block, value: Block) -> None:
    """Every part of ``back`` equals ``value``'s: types, dtypes, shapes, values."""
    for name in Block.__slots__:
        assert _same_value(getattr(back, name), getattr(value, name)), name


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def test_block_coder_keeps_every_kind_of_original() -> None:
    """Rows of the same fields travel as columns (their arrays stacked); any
    other originals as they are; either way each original comes back with its
    fields, types, dtypes and shapes (0-d arrays, arrays of other dtypes or
    shapes row to row, lists, dicts, fields in another order, NaN; byte order,
    dtype metadata and read-only flags; rows without fields)."""
    impl = BlockCoder().get_impl()
    n = 4
    kinds = {
        "stacked": [beam.Row(id=i, features=np.full(3, i, np.float32), tag=None)
                    for i in range(n)],
        "nan": [beam.Row(features=np.array([np.nan, i], np.float64)) for i in range(n)],
        "zero_d": [beam.Row(features=np.float32(i) * np.ones((), np.float32)) for i in range(n)],
        "dtypes": [beam.Row(features=np.ones(3, np.float32 if i % 2 else np.float64))
                   for i in range(n)],
        "shapes": [beam.Row(features=np.ones(2 + i, np.float32)) for i in range(n)],
        "lists": [beam.Row(features=[float(i)] * 3) for i in range(n)],
        "order": [beam.Row(a=1, features=np.ones(3)) if i % 2 else
                  beam.Row(features=np.ones(3), a=1) for i in range(n)],
        "dicts": [{"features": np.ones(3, np.float32), "id": i} for i in range(n)],
        "mixed": [beam.Row(features=np.ones(3)), {"features": np.ones(3)}] * 2,
        # (a reviewer's: np.stack would make these native-order and writeable)
        "big_endian": [beam.Row(features=np.arange(3, dtype=">i4") + i) for i in range(n)],
        "read_only": [beam.Row(features=_read_only(np.full(3, i, np.float32)))
                      for i in range(n)],
        "metadata": [beam.Row(features=np.ones(3, np.dtype(np.float32, metadata={"unit": "m"})))
                     for i in range(n)],
        "no_fields": [beam.Row() for i in range(n)],
    }
    for kind, originals in kinds.items():
        block = Block(originals, np.zeros((n, 3), np.float32))
        back = impl.decode(impl.encode(block))
        _assert_same_block(back, block)
        assert len(back.originals) == n, kind
        # Rows that travelled as columns keep them, in row order (what the
        # experiment report reads a field of every row from); a list made
        # from them is a plain list, without columns.
        if type(back.originals) is ColumnRows:
            assert kind not in ("order", "dicts", "mixed", "no_fields")
            for name in vars(originals[0]):
                column = back.originals.columns[name]
                assert len(column) == n
                for i, row in enumerate(back.originals):
                    assert np.array_equal(column[i], getattr(row, name), equal_nan=True) \
                        if isinstance(column[i], np.ndarray) else column[i] == getattr(row, name)
            assert type(back.originals[1:]) is list
        else:
            assert kind in ("order", "dicts", "mixed", "no_fields")


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


def read_one(element: object, io: IOConfig | None = None) -> Block:
    """One element through the row reader, alone (its block, or its failure's)."""
    io = io or IOConfig()
    (block,) = RowReader(io, keyed=False).read(element, Assembler(None, io.features_field,
                                                                  keyed=False))
    return block


def test_fast_validation_agrees_with_the_careful_one() -> None:
    huge = np.full(4, 3e38, dtype=np.float32)  # finite, but its sum of squares overflows
    with np.errstate(over="ignore"):
        assert len(read_one(beam.Row(features=huge))) == 1
    for bad in (np.array([1.0, np.nan], dtype=np.float32), np.array([np.inf]),
                np.array([[1.0], [-np.inf]])):
        block = read_one(beam.Row(features=bad))
        assert len(block) == 0 and "NaN or infinity" in block.failures[0].error
    assert len(read_one({"features": np.array([1, 2])})) == 1
    assert read_one({"features": np.zeros(0, dtype=np.float32)}).failures[0].error.endswith(
        "is empty")


def test_a_batch_screened_once_fails_the_same_elements_as_screening_each() -> None:
    rows = [np.full(3, 1.0, np.float32), np.array([1.0, np.nan, 2.0], np.float32),
            np.full(3, 3e38, np.float32),  # finite, though the batch's sum overflows
            np.array([np.inf, 0.0, 0.0]), np.array([1, 2, 3])]
    elements = [beam.Row(id=i, features=x) for i, x in enumerate(rows)] + [{"other": 1}]
    with np.errstate(over="ignore"):
        one_by_one = drain(to_blocks(None), elements)
        screened = drain(to_blocks(8), elements)
    # One element at a time: a block of its row, or one of its failure.
    assert [("ok" if len(b) else "failed") for b in one_by_one] == [
        "ok", "failed", "ok", "failed", "ok", "failed"]
    assert [id(r) for b in screened for r in b.originals] == [
        id(r) for b in one_by_one for r in b.originals]
    key = lambda f: id(f.original)  # noqa: E731
    assert [(id(f.original), f.node, f.error) for f in sorted(failures_of(screened), key=key)] \
        == [(id(f.original), f.node, f.error) for f in sorted(failures_of(one_by_one), key=key)]


def test_a_stacked_batch_is_kept_only_when_every_record_is_a_finite_item() -> None:
    rows = [beam.Row(id=i, features=np.arange(3, dtype=np.float32) + i) for i in range(4)]
    (block,) = drain(to_blocks(4), rows)
    assert [block.original(i) for i in range(4)] == rows and not block.failures
    np.testing.assert_array_equal(block.features, np.stack([r.features for r in rows]))
    (ints,) = drain(to_blocks(2), [beam.Row(features=[1, 2])] * 2)
    assert ints.features.dtype.kind == "i"
    nan = beam.Row(id=9, features=np.array([1, np.nan, 2], np.float32))
    (screened,) = drain(to_blocks(3), [*rows[:2], nan])
    assert [screened.original(i).id for i in range(len(screened))] == [0, 1]
    assert [f.original.id for f in screened.failures] == [9]
    assert "NaN or infinity" in screened.failures[0].error
    (with_failure,) = drain(to_blocks(2), [rows[0], {"other": 1}])
    assert len(with_failure) == 1 and len(with_failure.failures) == 1


def test_a_block_keeps_its_stacked_features_across_the_coder() -> None:
    impl = BlockCoder().get_impl()
    rows = [beam.Row(id=i, features=np.ones(4, np.float32) * i) for i in range(3)]
    (block,) = drain(to_blocks(3), rows)
    back = impl.decode(impl.encode(block))
    assert type(back) is Block and [r.id for r in back.originals] == [0, 1, 2]
    np.testing.assert_array_equal(back.features, np.ones((3, 4), np.float32) * [[0], [1], [2]])


def test_a_stacked_batch_of_the_wrong_shape_fails_each_element(models) -> None:
    node = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"),
                        input_shape=(64,))
    handler = model_handler(node, ci.LoadPolicy(), "lr")
    rows = [beam.Row(id=i, features=np.zeros(8, np.float32)) for i in range(3)]
    (block,) = drain(to_blocks(3), rows)
    out = handler.run_inference(block, handler.load_model())
    assert [len(b) for b in out] == [0]
    assert [f.original.id for f in out[0].failures] == [0, 1, 2]
    assert "expects input_shape [64]" in out[0].failures[0].error


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


def finished(element: object, inference: list[float], io: IOConfig | None = None,
             **outputs: object) -> Block:
    """``element`` read alone, as if a model ``m`` at path ``ab/m`` gave ``inference``."""
    from crossinfer.processing.ops import Outputs

    out = Outputs(np.asarray([inference]))
    for name, value in outputs.items():
        setattr(out, name, np.asarray([value]))
    return read_one(element, io).finish("m", "ab/m", out)


def test_named_tuple_rows_are_read_and_extended_in_place() -> None:
    """Rows from another SDK arrive as NamedTuples: read without a dict copy,
    and their result row built as one tuple, equal to the general path's."""
    packed = np.array([1.0, 2.0, 3.0], dtype="<f4").tobytes()
    element = _In(7, packed)
    assert dict(fields_view(element)) == {"id": 7, "features": packed}
    block = read_one(element)
    assert len(block) == 1 and block.features[0].tolist() == [1.0, 2.0, 3.0]
    (fast,) = RowFormat(_Out).results(finished(element, [0.25, 0.75], label=1, score=0.75))
    assert type(fast) is _Out
    general = _Out(**{**element._asdict(), "model": "m", "path": "ab/m", "inference": [0.25, 0.75],
                      "label": 1, "score": 0.75, "labels": None, "scores": None})
    assert fast == general
    (row,) = RowFormat().results(finished(_Renamed(8, packed, 5), [1.0]))
    assert (row.id, row.label, row.inference) == (8, None, [1.0]), "output fields win"
    assert read_one(_In(9, packed), IOConfig(features_field="pixels")).failures[0].error \
        .startswith("the input has no field 'pixels' (fields: features, id)")
