"""Batch-native input (crossinfer.patterns.batched): elements that are batches
already, packed float32 tensors, per-row failures, row accounting."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import torch

import crossinfer as ci
from crossinfer.demo import DemoModels
from crossinfer.engine.assemble import Assembler
from crossinfer.models import MLP
from crossinfer.patterns.batched import BatchedInference, BatchReader
from support import DIGITS_TOL, LiveModels, assert_same_label, metric, run

SCALE = ci.Op("scale", {"factor": 1 / 16})
POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))


def mlp_node(models: DemoModels, **extra) -> ci.ModelNode:
    return ci.ModelNode(name="mlp", framework="pytorch", format="state_dict",
                        uri=models.path("digits_mlp.pt"), model_class="crossinfer.models:MLP",
                        model_params={"sizes": [64, 64, 10]}, preprocess=(SCALE,),
                        postprocess=(ci.Op("softmax"), ci.Op("argmax")), **extra)


def direct(models: DemoModels, x: np.ndarray) -> np.ndarray:
    mlp = MLP([64, 64, 10])
    mlp.load_state_dict(torch.load(models.path("digits_mlp.pt")))
    with torch.no_grad():
        return torch.softmax(mlp(torch.from_numpy(x / 16.0)), dim=1).numpy()


def batches_of(x: np.ndarray, size: int) -> list[beam.Row]:
    return [beam.Row(id=i, features=x[i:i + size]) for i in range(0, len(x), size)]


def rows_out(results: list) -> int:
    return sum(len(r.index) for r in results)


def test_batches_give_the_same_results_as_calling_the_model(models, digits_data) -> None:
    x, _ = digits_data
    x = x[:300]
    results, failures, _ = run(batches_of(x, 32), BatchedInference(mlp_node(models)))
    assert failures == []
    assert rows_out(results) == 300
    expected = direct(models, x)
    for r in results:
        rows = r.id + np.asarray(r.index)
        assert r.model == "mlp" and r.path == "mlp"
        np.testing.assert_allclose(r.inference, expected[rows], **DIGITS_TOL)
        for label, want in zip(r.label.tolist(), expected[rows], strict=True):
            assert_same_label(label, int(want.argmax()), want, DIGITS_TOL["atol"])
        np.testing.assert_allclose(r.score, expected[rows].max(axis=1), **DIGITS_TOL)
        assert r.features.shape[0] == len(r.index)  # input fields pass through


def test_packed_float32_bytes_with_a_shape_field(models, digits_data) -> None:
    x, _ = digits_data
    x = np.ascontiguousarray(x[:50], dtype="<f4")
    row = beam.Row(id=0, features=x.tobytes(), shape=[50, 64])
    results, failures, _ = run([row], BatchedInference(mlp_node(models)))
    assert failures == []
    [r] = results
    np.testing.assert_array_equal(r.index, np.arange(50))
    np.testing.assert_allclose(r.inference, direct(models, x), **DIGITS_TOL)


def test_bad_rows_fail_alone_with_their_index(models, digits_data) -> None:
    x, _ = digits_data
    x = x[:40].copy()
    x[3, 5] = np.nan
    x[17, 0] = np.inf
    good, bad = batches_of(x, 20), [
        beam.Row(id=100, features=x[0]),                      # one row, not a batch
        beam.Row(id=101, features=b"\x00" * 12, shape=[2, 2]),  # bytes do not match shape
        beam.Row(id=102, features=None),
        beam.Row(id=103, features="1,2"),
    ]
    results, failures, _ = run(good + bad, BatchedInference(mlp_node(models)))
    assert rows_out(results) == 38
    row_failures = sorted((f.element.id + f.index, f.node) for f in failures
                          if f.index is not None)
    assert row_failures == [(3, "input"), (17, "input")]
    whole = sorted(f.element.id for f in failures if f.index is None)
    assert whole == [100, 101, 102, 103]
    assert all(f.error for f in failures)


def test_a_model_error_fails_only_the_rows_that_cause_it() -> None:
    node = ci.ModelNode(name="picky", framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": "picky_batched", "poison": 13.0},
                        batching=ci.Batching(max_batch_size=64))
    x = np.arange(100, dtype=np.float32).reshape(50, 2)  # 13 is in row 6
    results, failures, result = run([beam.Row(id=0, features=x)],
                                    BatchedInference(node, policy=POLICY))
    assert [(f.index, f.node) for f in failures] == [(6, "picky")]
    assert "poisoned input 13.0" in failures[0].error
    [r] = results
    assert list(r.index) == [i for i in range(50) if i != 6]
    np.testing.assert_array_equal(r.inference, x[r.index])
    assert metric(result, "crossinfer/picky", "failures") == 1


def test_small_batches_are_joined_up_to_max_batch_size_rows() -> None:
    LiveModels.reset()
    node = ci.ModelNode(name="joined", framework="custom",
                        handler_class="support:CountingHandler",
                        handler_params={"name": "joined"},
                        batching=ci.Batching(max_batch_size=16))
    rows = [beam.Row(id=i, features=np.full((4, 1), float(i), dtype=np.float32))
            for i in range(10)]
    results, failures, _ = run(rows, BatchedInference(node, policy=POLICY))
    assert failures == []
    assert rows_out(results) == 40
    sizes = LiveModels.batch_sizes["joined"]
    assert max(sizes) <= 16 and len(sizes) < 10, sizes  # 4-row elements share model calls
    for r in results:
        np.testing.assert_array_equal(r.inference[:, 0], np.full(len(r.index), float(r.id)))


def test_a_sequence_runs_batched(models, digits_data) -> None:
    x, _ = digits_data
    pca = ci.ModelNode(name="pca", framework="sklearn", format="skops",
                       uri=models.path("digits_pca.skops"),
                       method="transform", preprocess=(SCALE,))
    head = ci.ModelNode(name="head", framework="pytorch", format="state_dict",
                        uri=models.path("digits_pca_mlp.pt"),
                        model_class="crossinfer.models:MLP", model_params={"sizes": [16, 32, 10]},
                        postprocess=(ci.Op("softmax"), ci.Op("argmax")))
    seq = ci.SequenceNode(name="seq", stages=(pca, head))
    batched, failures, _ = run(batches_of(x[:64], 16), BatchedInference(seq))
    assert failures == []
    single, _, _ = run([beam.Row(id=i, features=x[i].tolist()) for i in range(64)],
                       ci.Sequence(seq))
    by_id = {r.id: r for r in single}
    for r in batched:
        assert r.path == "seq/head"
        for j, (row, label) in enumerate(zip(r.index, r.label, strict=True)):
            single_row = by_id[r.id + int(row)]
            np.testing.assert_allclose(r.inference[j], single_row.inference, **DIGITS_TOL)
            assert_same_label(int(label), single_row.label, single_row.inference,
                              DIGITS_TOL["atol"])


def test_ab_and_keyed_specs_are_refused_at_construction(models) -> None:
    def node(name: str) -> ci.ModelNode:
        return ci.ModelNode(name=name, framework="sklearn", format="skops",
                            uri=models.path("digits_lr.skops"))

    ab = ci.ABTestNode(name="ab", arms=(ci.Arm("a", node("a"), 1), ci.Arm("b", node("b"), 1)))
    keyed = ci.KeyedNode(name="k", routes=(ci.Route(("x",), node("c")),))
    for spec in (ab, keyed, ci.SequenceNode(name="s", stages=(node("d"), keyed))):
        with pytest.raises(TypeError, match="BatchedInference runs model and sequence nodes"):
            BatchedInference(spec)


def test_a_batch_reader_splits_valid_rows_from_invalid_ones() -> None:
    x = np.ones((4, 3), dtype=np.float32)
    x[2, 1] = np.nan
    for element in ({"features": x}, x):
        (block,) = BatchReader("features", "shape").read(element, Assembler(None, "features",
                                                                             keyed=False))
        assert block.index.tolist() == [0, 1, 3]  # the valid rows, carried on
        assert [(f.index, f.node) for f in block.failures] == [(2, "input")]
        assert "NaN or infinity" in block.failures[0].error
