"""Every element is accounted for: a result or a failure record, never lost."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import torch

import crossinfer as ci
from crossinfer.models import MeanPoolClassifier
from support import DIGITS_TOL, assert_same_label, float_tolerance, metric, run

#: MeanPoolClassifier on signals of up to 64 values: embed, mean over <= 64, output layer.
RAGGED_TOL = float_tolerance(np.float32, terms=64, layers=3)

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))


def lr(models, name: str = "lr", **extra) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"),
                        method="predict_proba", preprocess=(ci.Op("scale", {"factor": 1 / 16}),),
                        postprocess=(ci.Op("argmax"),), **extra)


BAD_INPUTS = [
    (beam.Row(id=101, key="k", other=[1.0]), "input", "the input has no field 'features'"),
    (beam.Row(id=102, key="k", features=None), "input", "field 'features' is null"),
    (beam.Row(id=103, key="k", features=["a", "b"]), "input", "must contain only numbers"),
    (beam.Row(id=104, key="k", features=[[1.0], [1.0, 2.0]]), "input", "not a numeric array"),
    (beam.Row(id=105, key="k", features=[]), "input", "field 'features' is empty"),
    (beam.Row(id=106, key="k", features=[1.0, float("nan")]), "input", "NaN or infinity"),
    (beam.Row(id=107, key="k", features=[float("inf")]), "input", "NaN or infinity"),
    (beam.Row(id=108, key="k", features="1,2,3"), "input", "must be an array of numbers"),
    (beam.Row(id=110, key="k", features=b"\x00" * 10), "input", "4 bytes each"),
    (beam.Row(id=111, key="k", features=np.array([np.nan], np.float32).tobytes()), "input",
     "NaN or infinity"),
    (beam.Row(id=109, key="k", features=[1.0] * 10), "lr",
     "features have shape [10], but model 'lr' expects input_shape [64]"),
]


def test_each_class_of_bad_input_comes_out_as_a_failure_with_its_element(models, digits_data):
    x, _ = digits_data
    good = [beam.Row(id=i, key="k", features=x[i].tolist()) for i in range(50)]
    rows = good + [row for row, _, _ in BAD_INPUTS]
    results, failures, result = run(rows, ci.Model(lr(models, input_shape=(64,))))
    assert len(results) + len(failures) == len(rows)
    assert sorted(r.id for r in results) == list(range(50))
    got = {f.element.id: f for f in failures}
    for row, node, fragment in BAD_INPUTS:
        failure = got[row.id]
        assert repr(failure.element) == repr(row), "the failure must carry the original element"
        assert failure.node == node
        assert fragment in failure.error, failure.error
    assert metric(result, "crossinfer/lr", "failures") == 1


def test_a_model_error_fails_only_the_elements_that_caused_it() -> None:
    node = ci.ModelNode(name="picky", framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": "picky", "poison": 13.0},
                        batching=ci.Batching(min_batch_size=10, max_batch_size=10))
    rows = [beam.Row(id=i, features=[float(i)]) for i in range(40)]
    results, failures, _ = run(rows, ci.Model(node, policy=POLICY))
    assert sorted(r.id for r in results) == [i for i in range(40) if i != 13]
    assert [(f.element.id, f.node) for f in failures] == [(13, "picky")]
    assert "ValueError: poisoned input 13.0" in failures[0].error


def test_results_plus_failures_equal_inputs_in_every_pattern(models, digits_data):
    x, _ = digits_data
    rows = [beam.Row(id=i, key=f"u{i % 7}", features=x[i].tolist()) for i in range(60)]
    rows += [row for row, _, _ in BAD_INPUTS] + [beam.Row(id=200, features=x[0].tolist())]
    patterns = {
        "hash": ci.ABTestNode(name="ab", split="hash",
                              arms=(ci.Arm("a", lr(models, "a")), ci.Arm("b", lr(models, "b")))),
        "sequence": ci.SequenceNode(name="seq", stages=(
            lr(models, "s1"),
            ci.ModelNode(name="s2", framework="sklearn", format="skops",
                         uri=models.path("digits_pca.skops"),
                         method="transform", preprocess=(ci.Op("pad_truncate",
                                                               {"length": 64}),)))),
        "keyed": ci.KeyedNode(name="keyed", max_models_per_worker=1, routes=(
            ci.Route(("u0", "u1", "u2"), lr(models, "k1")),
            ci.Route(("u3", "u4", "u5"), lr(models, "k2")))),
    }
    for name, node in patterns.items():
        results, failures, _ = run(rows, ci.Inference(node))
        assert len(results) + len(failures) == len(rows), name
        assert sorted([r.id for r in results] + [f.element.id for f in failures]) == sorted(
            r.id for r in rows), name
    # mirror: per arm
    mirror = ci.ABTestNode(name="m", split="mirror",
                           arms=(ci.Arm("a", lr(models, "a")), ci.Arm("b", lr(models, "b"))))
    results, failures, _ = run(rows, ci.Inference(mirror))
    for arm in ("a", "b"):
        in_arm = [r for r in results if r.path.startswith(f"m/{arm}/")]
        arm_failures = [f for f in failures if f.node in ("input", f"m/{arm}/{arm}")]
        assert len(in_arm) + len(arm_failures) == len(rows)


def test_ragged_inputs_batch_without_the_equal_size_crash(tmp_path) -> None:
    torch.manual_seed(0)
    model = MeanPoolClassifier(hidden=8, classes=3).eval()
    path = tmp_path / "ragged.pt"
    torch.save(model.state_dict(), path)
    node = ci.ModelNode(name="ragged", framework="pytorch", format="state_dict", uri=str(path),
                        model_class="crossinfer.models:MeanPoolClassifier",
                        model_params={"hidden": 8, "classes": 3},
                        batching=ci.Batching(min_batch_size=16, max_batch_size=64))
    rng = np.random.default_rng(0)
    signals = [rng.normal(size=rng.integers(4, 65)).astype(np.float32) for _ in range(300)]
    rows = [beam.Row(id=i, features=s.tolist()) for i, s in enumerate(signals)]
    results, failures, _ = run(rows, ci.Model(node))
    assert failures == [] and len(results) == 300
    with torch.no_grad():
        for row in results:
            expected = model(torch.from_numpy(signals[row.id])[None])[0].numpy()
            np.testing.assert_allclose(row.inference, expected, **RAGGED_TOL)


def test_plain_beam_runinference_crashes_on_the_same_ragged_inputs(tmp_path) -> None:
    """The Beam sharp edge crossinfer removes, reproduced."""
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

    path = tmp_path / "ragged.pt"
    torch.save(MeanPoolClassifier().state_dict(), path)
    handler = PytorchModelHandlerTensor(state_dict_path=str(path), model_class=MeanPoolClassifier,
                                        model_params={}, min_batch_size=8, max_batch_size=8)
    tensors = [torch.ones(n) for n in (4, 5, 6, 7, 8, 9, 10, 11)]
    with pytest.raises(Exception, match="stack expects each tensor to be equal size"):
        with beam.Pipeline(runner="FnApiRunner") as p:
            _ = p | beam.Create(tensors) | RunInference(handler)


def test_pad_truncate_feeds_ragged_inputs_to_a_fixed_size_model(models, digits_data):
    x, _ = digits_data
    rows = [beam.Row(id=i, features=x[i][: 40 + i % 30].tolist()) for i in range(100)]
    node = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"),
                        preprocess=(ci.Op("pad_truncate", {"length": 64}),
                                    ci.Op("scale", {"factor": 1 / 16})))
    results, failures, _ = run(rows, ci.Model(node))
    assert failures == [] and len(results) == 100


def test_packed_float32_features_give_the_results_of_a_list(models, digits_data):
    x, _ = digits_data
    listed = [beam.Row(id=i, features=x[i].tolist()) for i in range(40)]
    packed = [beam.Row(id=i, features=x[i].astype("<f4").tobytes()) for i in range(40)]
    by_list, none_1, _ = run(listed, ci.Model(lr(models, input_shape=(64,))))
    by_bytes, none_2, _ = run(packed, ci.Model(lr(models, input_shape=(64,))))
    assert not none_1 and not none_2
    assert sorted(r.id for r in by_bytes) == sorted(r.id for r in by_list) == list(range(40))
    listed_by_id = {r.id: r for r in by_list}
    for r in by_bytes:  # float32 either way; batches may differ, so within the tolerance
        want = listed_by_id[r.id]
        np.testing.assert_allclose(r.inference, want.inference, **DIGITS_TOL)
        assert_same_label(r.label, want.label, want.inference, DIGITS_TOL["atol"])
    assert all(type(r.features) is bytes for r in by_bytes), "input fields pass through as sent"
