"""What a model call gives back: several outputs, and outputs that are not numbers.

* A model that returns a dict, a tuple or a list: the model node's ``output``
  names the one to use; without it the only one is used, and several fail each
  element with a message listing them and their shapes. (Before: the first
  dict value was taken, and when it was not per element every element failed
  with "returned 0 outputs for a batch of 1".)
* An output holding NaN or infinity fails its element: it is not a result.
  (Before: inputs that overflow a float32 model came back as result rows of NaN.)

Each holds on every path (tests/paths.py). TorchScript, a code-capable format,
runs under :data:`CODE_OK`, which opts in to it; scikit-learn models are skops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import crossinfer as ci
from crossinfer.handlers.sklearn import load_skops
from paths import paths_for, run_path
from support import DIGITS_TOL, TwoHeads, float_tolerance

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))
#: The same, opted in to TorchScript for the specs with a TorchScript model.
CODE_OK = ci.LoadPolicy(allowed_classes=POLICY.allowed_classes, code_formats=("torchscript",))
SCALE = ci.Op("scale", {"factor": 1 / 16})
N = 24


def heads(zoo, name: str, output=None, cls: str = "TwoHeads", **extra) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="pytorch", format="state_dict",
                        uri=zoo.path("two_heads.pt" if cls == "TwoHeads" else "pair_heads.pt"),
                        model_class=f"support:{cls}", preprocess=(SCALE,), output=output,
                        **extra)


@pytest.fixture(scope="module")
def rows(digits_data) -> list[tuple[int, str, np.ndarray]]:
    x = digits_data[0]
    return [(i, ("a", "b")[i % 2], x[i]) for i in range(N)]


@pytest.fixture(scope="module")
def direct(zoo, digits_data) -> dict[str, np.ndarray]:
    """The heads' outputs, called directly."""
    model = TwoHeads()
    model.load_state_dict(torch.load(zoo.path("two_heads.pt")))
    with torch.no_grad():
        out = model(torch.from_numpy(digits_data[0][:N] / 16.0))
    return {"logits": out["logits"].numpy(), "embedding": out["embedding"].numpy()}


#: Heads: 64 inputs, then 4 -> 10 (two layers).
HEADS_TOL = float_tolerance(np.float32, terms=64, layers=2)


def test_the_spec_names_the_output_of_a_dict_a_tuple_on_every_path(zoo, rows, direct) -> None:
    arms = (ci.Arm("logits", heads(zoo, "by_key", "logits")),
            ci.Arm("embedding", heads(zoo, "by_index", 1, cls="PairHeads")),
            ci.Arm("script", ci.ModelNode(name="script", framework="pytorch",
                                          uri=zoo.path("two_heads.ts"), preprocess=(SCALE,),
                                          output="embedding")))
    spec = ci.InferenceSpec(ci.ABTestNode(name="ab", split="mirror", arms=arms))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, CODE_OK)
        assert outcome.failures == {}, (path, next(iter(outcome.failures.values())))
        for arm, want in (("logits/by_key", "logits"), ("embedding/by_index", "embedding"),
                          ("script/script", "embedding")):
            got = outcome.by_path(f"ab/{arm}")
            assert sorted(got) == list(range(N)), (path, arm)
            for i, r in got.items():
                np.testing.assert_allclose(r.inference, direct[want][i], **HEADS_TOL)


def test_without_output_several_outputs_fail_each_element_listing_them(zoo, rows) -> None:
    spec = ci.InferenceSpec(heads(zoo, "heads"))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        assert outcome.results == {}, path
        errors = outcome.failed_at("heads")
        assert sorted(errors) == list(range(N)), path
        for error in errors.values():
            assert "model 'heads' returned 3 outputs ('logits': shape [" in error, error
            assert "'embedding': shape [" in error and "'total': shape []" in error, error
            assert "set the model node's output to the one to use" in error


@pytest.mark.parametrize(("output", "fragment"), [
    ("total", "returned an output of shape [] for a batch of"),
    ("nope", "model 'heads' has no output 'nope'; its outputs: 'logits': shape ["),
    (0, "returned a dict of outputs ('logits': shape ["),
])
def test_an_output_that_cannot_be_used_says_why(zoo, rows, output, fragment) -> None:
    spec = ci.InferenceSpec(heads(zoo, "heads", output))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        errors = outcome.failed_at("heads")
        assert outcome.results == {} and sorted(errors) == list(range(N)), path
        assert all(fragment in e for e in errors.values()), next(iter(errors.values()))
        assert not any("0 outputs" in e for e in errors.values())


def test_an_output_on_a_model_of_one_array_is_refused_per_element(models, rows) -> None:
    node = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"), preprocess=(SCALE,),
                        output="logits")
    outcome = run_path("crossinfer_batches", rows, ci.InferenceSpec(node), POLICY)
    assert outcome.results == {}
    assert all("returned one array (shape [" in e and "output 'logits'" in e
               for e in outcome.failed_at("lr").values())


def test_onnx_outputs_by_name_or_index_and_several_without_one_listed(zoo, rows,
                                                                      digits_data) -> None:
    def onnx(name: str, output=None) -> ci.ModelNode:
        return ci.ModelNode(name=name, framework="onnx", uri=zoo.path("two_outputs.onnx"),
                            preprocess=(SCALE,), output=output)

    spec = ci.InferenceSpec(ci.ABTestNode(name="ab", split="mirror", arms=(
        ci.Arm("probs", onnx("probs", "probs")), ci.Arm("logits", onnx("logits", 0)),
        ci.Arm("none", onnx("none")), ci.Arm("wrong", onnx("wrong", "nope")))))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        probs, logits = outcome.by_path("ab/probs/probs"), outcome.by_path("ab/logits/logits")
        assert sorted(probs) == sorted(logits) == list(range(N)), path
        for i in range(N):
            np.testing.assert_allclose(probs[i].inference.sum(), 1.0, **DIGITS_TOL)
            softmax = np.exp(logits[i].inference - logits[i].inference.max())
            np.testing.assert_allclose(probs[i].inference, softmax / softmax.sum(),
                                       **DIGITS_TOL)
        none, wrong = outcome.failed_at("ab/none/none"), outcome.failed_at("ab/wrong/wrong")
        assert sorted(none) == sorted(wrong) == list(range(N)), path
        assert all("model 'none' could not be loaded from " in e and "has 2 outputs ('logits': "
                   "shape ['batch', 10], 'probs': shape ['batch', 10]); set the model node's "
                   "output" in e for e in none.values()), next(iter(none.values()))
        assert all("has no output 'nope'; its outputs (by index 0..1): 'logits'" in e
                   for e in wrong.values())


def test_sklearn_tuple_outputs_with_inference_args(zoo, rows, digits_data) -> None:
    """BayesianRidge.predict(X, return_std=True) returns (mean, std)."""
    def ridge(name: str, output: int) -> ci.ModelNode:
        return ci.ModelNode(name=name, framework="sklearn", format="skops",
                            uri=zoo.path("ridge.skops"), preprocess=(SCALE,),
                            inference_args={"return_std": True}, output=output)

    model = load_skops(Path(zoo.path("ridge.skops")).read_bytes(), "ridge")
    mean, std = model.predict(digits_data[0][:N] / 16.0, return_std=True)
    spec = ci.InferenceSpec(ci.ABTestNode(name="ab", split="mirror", arms=(
        ci.Arm("mean", ridge("mean", 0)), ci.Arm("std", ridge("std", 1)))))
    tol = float_tolerance(np.float32, terms=64, layers=1)
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        assert outcome.failures == {}, path
        for arm, want in (("mean/mean", mean), ("std/std", std)):
            got = outcome.by_path(f"ab/{arm}")
            assert sorted(got) == list(range(N))
            for i, r in got.items():
                np.testing.assert_allclose(r.inference, [want[i]], **tol)


def test_custom_handlers_results_and_keyed_routes_select_their_own_output(rows) -> None:
    def custom(name: str, output: str) -> ci.ModelNode:
        return ci.ModelNode(name=name, framework="custom", handler_class="support:DictHandler",
                            output=output)

    spec = ci.InferenceSpec(ci.KeyedNode(name="keyed", routes=(
        ci.Route(("a",), custom("same", "same")), ci.Route(("b",), custom("double", "double")))))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        assert outcome.failures == {}, path
        for i, key, x in rows:
            [r] = outcome.results[i]
            np.testing.assert_array_equal(r.inference, x if key == "a" else 2 * x)


# ------------------------------------------------------------ non-finite outputs


def overflowing(rows: list) -> list[tuple[int, str, np.ndarray]]:
    """Every third row at 3e38: finite in float32, but it overflows a model's sums."""
    return [(i, k, np.full(64, 3e38, np.float32) if i % 3 == 0 else x) for i, k, x in rows]


def test_non_finite_outputs_are_failures_on_every_path(models, rows) -> None:
    common = dict(preprocess=(SCALE,))
    nodes = {
        "state_dict": ci.ModelNode(name="mlp", framework="pytorch", format="state_dict",
                                   uri=models.path("digits_mlp.pt"),
                                   model_class="crossinfer.models:MLP",
                                   model_params={"sizes": [64, 64, 10]},
                                   postprocess=(ci.Op("softmax"), ci.Op("argmax")), **common),
        "torchscript": ci.ModelNode(name="ts", framework="pytorch",
                                    uri=models.path("digits_mlp.ts"), **common),
        "onnx": ci.ModelNode(name="onnx", framework="onnx", uri=models.path("digits_mlp.onnx"),
                             **common),
    }  # (scikit-learn's models compute in float64: float32 input cannot overflow them)
    data = overflowing(rows)
    bad = [i for i, _, _ in data if i % 3 == 0]
    good = [i for i, _, _ in data if i % 3]
    mirror = ci.InferenceSpec(ci.ABTestNode(name="ab", split="mirror", arms=tuple(
        ci.Arm(framework, node) for framework, node in nodes.items())))
    for spec, prefix in [(mirror, "ab/{framework}/"),
                         *[(ci.InferenceSpec(n), "") for n in nodes.values()]]:
        paths = paths_for(spec) if spec is mirror else ("batch_native",)
        for path in paths:
            outcome = run_path(path, data, spec, CODE_OK)
            for framework, node in nodes.items():
                at = prefix.format(framework=framework) + node.name
                if spec is not mirror and spec.node is not node:
                    continue
                failed = outcome.failed_at(at)
                assert sorted(failed) == bad, (path, at, sorted(failed))
                assert all(f"model {node.name!r} gave a non-finite output (NaN or infinity)"
                           in e for e in failed.values()), next(iter(failed.values()))
                results = outcome.by_path(at)
                assert sorted(results) == good, (path, at)
                assert all(np.isfinite(r.inference).all() for r in results.values())
