"""Every setting of a model node runs in a real pipeline, per framework where it applies.

One table, one mirror A/B pipeline: each row of :data:`CASES` is an arm - a
model node using one setting (a spec field, a format, a method, a device, a
batching or memory field, an op) - and a check of that arm's results and
failures against calling the model (or numpy) directly. The arms whose format can
run code (pickle, joblib, TorchScript) run under a policy that opts in to them,
every other arm under the default policy, in mirrors of at most
``SpecLimits().max_arms`` arms (the bound on one A/B test). A last test holds the
table to the spec: every field of ``ModelNode``, ``Batching`` and ``Memory``,
every format, method, device and op must appear in it, so a new setting
without a pipeline test fails here.

Settings also shown elsewhere, on every engine path: ``memory``
(test_model_memory.py), ``inference_args`` (test_inference_args.py),
``output`` (test_model_outputs.py), ``sha256`` pins that do not match
(test_load_failures.py), ragged ``pad_truncate`` (test_failures.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import torch

import crossinfer as ci
from crossinfer.demo import sha256_of
from crossinfer.handlers.sklearn import load_skops
from crossinfer.models import MLP
from crossinfer.policy import CODE_FORMATS
from crossinfer.processing.ops import POST_ONLY, REGISTRY
from crossinfer.spec import SpecLimits
from crossinfer.spec.nodes import DEVICES, FORMATS, SKLEARN_METHODS
from support import DIGITS_TOL, float_tolerance, metric, run

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))
#: For the arms whose format can run code when loaded (an explicit opt-in).
CODE_OK = ci.LoadPolicy(allowed_classes=POLICY.allowed_classes,
                        code_formats=("pickle", "joblib", "torchscript"))
SCALE = ci.Op("scale", {"factor": 1 / 16})
N = 24
#: Element-wise ops over at most 64 values (a softmax's sum): float32, one layer.
OPS_TOL = float_tolerance(np.float32, terms=64, layers=1)


@dataclass
class Refs:
    """What the models give, computed directly, for the first N digits."""

    x: np.ndarray            # raw pixels (0..16), float32
    lr: Any                  # the LogisticRegression
    pca: Any
    logits: np.ndarray       # the digits MLP on x / 16


Check = Callable[[dict[int, Any], dict[int, Any], Refs, Any], None]


@dataclass(frozen=True)
class Case:
    arm: str
    covers: tuple[str, ...]  # what the case shows: "field", "field=value", "op:name"
    node: Callable[[Any], ci.ModelNode]  # models -> a node named after the arm
    check: Check


def _results_equal(expected: Callable[[Refs], np.ndarray], tol: dict = DIGITS_TOL) -> Check:
    def check(results: dict, failures: dict, refs: Refs, _: Any) -> None:
        assert failures == {}, next(iter(failures.values())).error
        assert sorted(results) == list(range(N))
        want = expected(refs)
        for i, r in results.items():
            np.testing.assert_allclose(r.inference, np.reshape(want[i], -1), **tol)
    return check


def _probabilities(refs: Refs) -> np.ndarray:
    return refs.lr.predict_proba(refs.x / 16.0)


def _identity(name: str, *, pre: tuple = (), post: tuple = (), **extra: Any) -> ci.ModelNode:
    """A custom model returning its input: the ops' effect is the output."""
    return ci.ModelNode(name=name, framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": name}, preprocess=pre, postprocess=post,
                        **extra)


def _lr(name: str, models: Any, **extra: Any) -> ci.ModelNode:
    extra.setdefault("preprocess", (SCALE,))
    extra.setdefault("format", "skops")
    uri = models.path("digits_lr.skops" if extra["format"] == "skops" else "digits_lr.pkl")
    return ci.ModelNode(name=name, framework="sklearn", uri=uri, **extra)


def _mlp_sd(name: str, models: Any, **extra: Any) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="pytorch", format="state_dict",
                        uri=models.path("digits_mlp.pt"), model_class="crossinfer.models:MLP",
                        model_params={"sizes": [64, 64, 10]}, preprocess=(SCALE,), **extra)


def _ts(name: str, models: Any, **extra: Any) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="pytorch", uri=models.path("digits_mlp.ts"),
                        preprocess=(SCALE,), **extra)


def _onnx(name: str, models: Any, **extra: Any) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="onnx", uri=models.path("digits_mlp.onnx"),
                        preprocess=(SCALE,), **extra)


def _gpu_check(results: dict, failures: dict, refs: Refs, _: Any) -> None:
    """device 'gpu': results on a CUDA machine, else every element fails saying why."""
    if torch.cuda.is_available():
        _results_equal(lambda r: r.logits)(results, failures, refs, _)
        return
    assert results == {} and sorted(failures) == list(range(N))
    assert all("could not be loaded" in f.error and ("device 'gpu' was requested" in f.error)
               for f in failures.values()), next(iter(failures.values())).error


def _batch_sizes_at_most(limit: int, expected: Callable[[Refs], np.ndarray]) -> Check:
    def check(results: dict, failures: dict, refs: Refs, pipeline: Any) -> None:
        _results_equal(expected)(results, failures, refs, pipeline)
        arm = next(iter(results.values())).path
        sizes = metric(pipeline, f"crossinfer/{arm}", "inference_request_batch_size",
                       "distributions")
        assert sizes and max(d.max for d in sizes) <= limit, sizes
    return check


def _labels(expected_label: Callable[[np.ndarray], Any],
            expected_score: Callable[[np.ndarray], Any]) -> Check:
    def check(results: dict, failures: dict, refs: Refs, _: Any) -> None:
        assert failures == {} and sorted(results) == list(range(N))
        for i, r in results.items():
            assert r.label == expected_label(refs.x[i])
            np.testing.assert_allclose(r.score, expected_score(refs.x[i]), **OPS_TOL)
    return check


def _top3(results: dict, failures: dict, refs: Refs, _: Any) -> None:
    assert failures == {} and sorted(results) == list(range(N))
    for i, r in results.items():
        order = np.argsort(-refs.x[i], kind="stable")[:3]
        assert r.labels == order.tolist()
        np.testing.assert_allclose(r.scores, refs.x[i][order], **OPS_TOL)


def _shape_refused(results: dict, failures: dict, refs: Refs, _: Any) -> None:
    assert results == {} and sorted(failures) == list(range(N))
    assert all("expects input_shape [32]" in f.error for f in failures.values())


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


CASES: tuple[Case, ...] = (
    # ---- framework / format / uri
    Case("skops", ("framework=sklearn", "format=skops", "uri", "name"),
         lambda m: _lr("skops", m, format="skops", method="predict_proba"),
         _results_equal(_probabilities)),
    Case("pickle", ("format=pickle",),
         lambda m: _lr("pickle", m, format="pickle", method="predict_proba"),
         _results_equal(_probabilities)),
    Case("joblib", ("format=joblib",),
         lambda m: ci.ModelNode(name="joblib", framework="sklearn",
                                   uri=m.path("digits_lr.joblib"), format="joblib",
                                   method="predict_proba", preprocess=(SCALE,)),
         _results_equal(_probabilities)),
    Case("state_dict", ("framework=pytorch", "format=state_dict", "model_class",
                        "model_params"),
         lambda m: _mlp_sd("state_dict", m), _results_equal(lambda r: r.logits)),
    Case("torchscript", ("format=torchscript",),
         lambda m: _ts("torchscript", m, format="torchscript"),
         _results_equal(lambda r: r.logits)),
    Case("onnx", ("framework=onnx", "format=onnx"), lambda m: _onnx("onnx", m, format="onnx"),
         _results_equal(lambda r: r.logits)),
    Case("custom", ("framework=custom", "format=custom", "handler_class", "handler_params"),
         lambda m: ci.ModelNode(name="custom", framework="custom", format="custom",
                                   handler_class="support:CountingHandler",
                                   handler_params={"name": "custom", "scale": 3.0}),
         _results_equal(lambda r: 3.0 * r.x, {"rtol": 0, "atol": 0})),
    # ---- scikit-learn methods
    Case("predict", ("method=predict",), lambda m: _lr("predict", m, method="predict"),
         _results_equal(lambda r: r.lr.predict(r.x / 16.0).astype(float))),
    Case("predict_proba", ("method=predict_proba",),
         lambda m: _lr("predict_proba", m, method="predict_proba"),
         _results_equal(_probabilities)),
    Case("decision_function", ("method=decision_function",),
         lambda m: _lr("decision_function", m, method="decision_function"),
         _results_equal(lambda r: r.lr.decision_function(r.x / 16.0))),
    Case("transform", ("method=transform",),
         lambda m: ci.ModelNode(name="transform", framework="sklearn", format="skops",
                                   uri=m.path("digits_pca.skops"), method="transform",
                                   preprocess=(SCALE,)),
         _results_equal(lambda r: r.pca.transform(r.x / 16.0))),
    # ---- the call: inference args and the output used
    Case("inference_args", ("inference_args",),
         lambda m: ci.ModelNode(name="inference_args", framework="custom",
                                   handler_class="support:ArgsHandler",
                                   inference_args={"factor": 2.0}),
         _results_equal(lambda r: 2.0 * r.x, {"rtol": 0, "atol": 0})),
    Case("output", ("output",),
         lambda m: ci.ModelNode(name="output", framework="custom",
                                   handler_class="support:DictHandler", output="double"),
         _results_equal(lambda r: 2.0 * r.x, {"rtol": 0, "atol": 0})),
    # ---- devices, per framework
    Case("cpu", ("device=cpu",), lambda m: _onnx("cpu", m, device="cpu"),
         _results_equal(lambda r: r.logits)),
    Case("auto_torch", ("device=auto",), lambda m: _mlp_sd("auto_torch", m, device="auto"),
         _results_equal(lambda r: r.logits)),
    Case("auto_onnx", ("device=auto",), lambda m: _onnx("auto_onnx", m, device="auto"),
         _results_equal(lambda r: r.logits)),
    Case("gpu_torch", ("device=gpu",), lambda m: _mlp_sd("gpu_torch", m, device="gpu"),
         _gpu_check),
    Case("gpu_onnx", ("device=gpu",), lambda m: _onnx("gpu_onnx", m, device="gpu"),
         _gpu_check),
    # ---- dtype and input_shape
    Case("float64_sklearn", ("dtype",),
         lambda m: _lr("float64_sklearn", m, method="predict_proba", dtype="float64"),
         _results_equal(_probabilities)),
    Case("float64_custom", ("dtype",), lambda m: _identity("float64_custom", dtype="float64"),
         _results_equal(lambda r: r.x.astype(np.float64), {"rtol": 0, "atol": 0})),
    Case("input_shape", ("input_shape",),
         lambda m: _lr("input_shape", m, method="predict_proba", input_shape=(64,)),
         _results_equal(_probabilities)),
    Case("input_shape_2d", ("input_shape",),
         lambda m: _identity("input_shape_2d", pre=(ci.Op("reshape", {"shape": [8, 8]}),),
                                input_shape=(8, 8)),
         _results_equal(lambda r: r.x, {"rtol": 0, "atol": 0})),
    Case("input_shape_wrong", ("input_shape",),
         lambda m: _onnx("input_shape_wrong", m, input_shape=(32,)), _shape_refused),
    # ---- batching, per framework
    Case("batch_sklearn", ("batching.max_batch_size", "batching.min_batch_size"),
         lambda m: _lr("batch_sklearn", m, method="predict_proba",
                          batching=ci.Batching(min_batch_size=2, max_batch_size=5)),
         _batch_sizes_at_most(5, _probabilities)),
    Case("batch_torch", ("batching.max_batch_size",),
         lambda m: _mlp_sd("batch_torch", m, batching=ci.Batching(max_batch_size=4)),
         _batch_sizes_at_most(4, lambda r: r.logits)),
    Case("batch_onnx", ("batching.max_batch_size", "batching.max_wait_secs"),
         lambda m: _onnx("batch_onnx", m,
                            batching=ci.Batching(max_batch_size=7, max_wait_secs=0.5)),
         _batch_sizes_at_most(7, lambda r: r.logits)),
    Case("batch_custom", ("batching.min_batch_size", "batching.max_batch_size"),
         lambda m: _identity("batch_custom", batching=ci.Batching(min_batch_size=3,
                                                                     max_batch_size=6)),
         _batch_sizes_at_most(6, lambda r: r.x)),
    # ---- memory (per framework and on every path: test_model_memory.py)
    Case("large_model", ("memory.large_model",),
         lambda m: _mlp_sd("large_model", m, memory=ci.Memory(large_model=True)),
         _results_equal(lambda r: r.logits)),
    Case("model_copies", ("memory.model_copies",),
         lambda m: _onnx("model_copies", m, memory=ci.Memory(model_copies=2)),
         _results_equal(lambda r: r.logits)),
    # ---- sha256 pins, per framework (a wrong pin: test_load_failures.py)
    Case("sha256_sklearn", ("sha256",),
         lambda m: _lr("sha256_sklearn", m, method="predict_proba",
                          sha256=sha256_of(m.path("digits_lr.skops"))),
         _results_equal(_probabilities)),
    Case("sha256_torch", ("sha256",),
         lambda m: _mlp_sd("sha256_torch", m, sha256=sha256_of(m.path("digits_mlp.pt"))),
         _results_equal(lambda r: r.logits)),
    Case("sha256_onnx", ("sha256",),
         lambda m: _onnx("sha256_onnx", m, sha256=sha256_of(m.path("digits_mlp.onnx"))),
         _results_equal(lambda r: r.logits)),
    # ---- pre-processing ops (on a model that returns its input)
    Case("pre_cast", ("preprocess", "op:cast"),
         lambda m: _identity("pre_cast", pre=(ci.Op("cast", {"dtype": "float64"}),),
                                dtype="float64"),
         _results_equal(lambda r: r.x.astype(np.float64), {"rtol": 0, "atol": 0})),
    Case("pre_reshape_flatten", ("op:reshape", "op:flatten"),
         lambda m: _identity("pre_reshape_flatten", pre=(
             ci.Op("reshape", {"shape": [8, -1]}), ci.Op("flatten"))),
         _results_equal(lambda r: r.x, {"rtol": 0, "atol": 0})),
    Case("pre_normalize", ("op:normalize",),
         lambda m: _identity("pre_normalize", pre=(
             ci.Op("normalize", {"mean": 8.0, "std": [4.0] * 64}),)),
         _results_equal(lambda r: (r.x - 8.0) / 4.0, OPS_TOL)),
    Case("pre_scale", ("op:scale",), lambda m: _identity("pre_scale", pre=(SCALE,)),
         _results_equal(lambda r: r.x / 16.0, OPS_TOL)),
    Case("pre_pad_truncate", ("op:pad_truncate",),
         lambda m: _identity("pre_pad_truncate", pre=(
             ci.Op("pad_truncate", {"length": 70, "value": -1.0}),)),
         _results_equal(lambda r: np.concatenate([r.x, np.full((N, 6), -1.0)], axis=1),
                        {"rtol": 0, "atol": 0})),
    Case("pre_softmax_sigmoid", ("op:softmax", "op:sigmoid"),
         lambda m: _identity("pre_softmax_sigmoid", pre=(
             SCALE, ci.Op("softmax"), ci.Op("sigmoid"))),
         _results_equal(lambda r: 1 / (1 + np.exp(-np.stack([_softmax(v) for v in r.x / 16]))),
                        OPS_TOL)),
    # ---- post-processing ops
    Case("post_softmax", ("postprocess", "op:softmax"),
         lambda m: _mlp_sd("post_softmax", m, postprocess=(ci.Op("softmax"),)),
         _results_equal(lambda r: np.stack([_softmax(v) for v in r.logits]))),
    Case("post_sigmoid_cast", ("op:sigmoid", "op:cast"),
         lambda m: _onnx("post_sigmoid_cast", m, postprocess=(
             ci.Op("sigmoid"), ci.Op("cast", {"dtype": "float64"}))),
         _results_equal(lambda r: 1 / (1 + np.exp(-r.logits)))),
    Case("post_normalize_scale", ("op:normalize", "op:scale"),
         lambda m: _identity("post_normalize_scale", post=(
             ci.Op("normalize", {"mean": 1.0, "std": 2.0}), ci.Op("scale", {"factor": 4.0}))),
         _results_equal(lambda r: (r.x - 1.0) / 2.0 * 4.0, OPS_TOL)),
    Case("post_reshape_flatten", ("op:reshape", "op:flatten"),
         lambda m: _identity("post_reshape_flatten", post=(
             ci.Op("reshape", {"shape": [8, 8]}), ci.Op("flatten"))),
         _results_equal(lambda r: r.x, {"rtol": 0, "atol": 0})),
    Case("post_pad_truncate", ("op:pad_truncate",),
         lambda m: _identity("post_pad_truncate", post=(
             ci.Op("pad_truncate", {"length": 10}),)),
         _results_equal(lambda r: r.x[:, :10], {"rtol": 0, "atol": 0})),
    Case("post_argmax", ("op:argmax",),
         lambda m: _identity("post_argmax", post=(ci.Op("argmax"),)),
         _labels(lambda v: int(np.argmax(v)), lambda v: float(np.max(v)))),
    Case("post_top_k", ("op:top_k",),
         lambda m: _identity("post_top_k", post=(ci.Op("top_k", {"k": 3}),)), _top3),
    Case("post_threshold", ("op:threshold",),
         lambda m: _identity("post_threshold", post=(
             ci.Op("threshold", {"threshold": 8.0, "index": 10}),)),
         _labels(lambda v: int(v[10] >= 8.0), lambda v: float(v[10]))),
)


@pytest.fixture(scope="module")
def refs(models, digits_data) -> Refs:
    x = digits_data[0][:N]
    lr = load_skops(Path(models.path("digits_lr.skops")).read_bytes(), "lr")
    pca = load_skops(Path(models.path("digits_pca.skops")).read_bytes(), "pca")
    mlp = MLP([64, 64, 10])
    mlp.load_state_dict(torch.load(models.path("digits_mlp.pt")))
    with torch.no_grad():
        logits = mlp(torch.from_numpy(x / 16.0)).numpy()
    return Refs(x, lr, pca, logits)


def _runs_code(node: ci.ModelNode) -> bool:
    return node.resolved_format in CODE_FORMATS


@pytest.fixture(scope="module")
def outcome(models, refs) -> dict[str, tuple[dict, dict, Any]]:
    """Every case as an arm of a mirror A/B - the code-capable formats' arms under
    :data:`CODE_OK`, every other arm under the default :data:`POLICY`, at most
    ``max_arms`` arms to a mirror - by arm: (results, failures) by row id, and its
    pipeline result (for its metrics)."""
    rows = [beam.Row(id=i, features=refs.x[i]) for i in range(N)]
    by_arm: dict[str, tuple[dict, dict, Any]] = {}
    most = SpecLimits().max_arms
    groups = [(policy, chosen[lo:lo + most])
              for policy, chosen in ((CODE_OK, [c for c in CASES if _runs_code(c.node(models))]),
                                     (POLICY, [c for c in CASES
                                               if not _runs_code(c.node(models))]))
              for lo in range(0, len(chosen), most)]
    for policy, cases in groups:
        node = ci.ABTestNode(name="settings", split="mirror", arms=tuple(
            ci.Arm(case.arm, case.node(models)) for case in cases))
        results, failures, pipeline = run(rows, ci.ABTest(node, policy=policy))
        for case in cases:
            by_arm[case.arm] = ({}, {}, pipeline)
        for r in results:
            by_arm[r.path.split("/")[1]][0][r.id] = r
        for f in failures:
            by_arm[f.node.split("/")[1]][1][f.element.id] = f
    return by_arm


@pytest.mark.parametrize("case", CASES, ids=[c.arm for c in CASES])
def test_each_setting_in_a_pipeline(case: Case, outcome, refs) -> None:
    results, failures, pipeline = outcome[case.arm]
    case.check(results, failures, refs, pipeline)


def test_the_table_covers_every_setting_of_a_model_node() -> None:
    covered = {c for case in CASES for c in case.covers}
    covered_fields = {c.split("=")[0] for c in covered if not c.startswith("op:")}
    wanted = {f.name for f in fields(ci.ModelNode)}
    wanted |= {f"batching.{f.name}" for f in fields(ci.Batching)}
    wanted |= {f"memory.{f.name}" for f in fields(ci.Memory)}
    wanted -= {"batching", "memory"}  # their fields are listed one by one
    assert wanted <= covered_fields, sorted(wanted - covered_fields)
    assert {f"framework={f}" for f in FORMATS if f != "tensorrt"} <= covered
    assert {f"format={fmt}" for f, fmts in FORMATS.items() if f != "tensorrt"
            for fmt in fmts} <= covered
    # The code-capable formats run only under an explicit opt-in; the rest under none.
    assert set(CODE_OK.code_formats) == set(CODE_FORMATS) - {"engine"}
    assert POLICY.code_formats == ()
    assert {f"method={m}" for m in SKLEARN_METHODS} <= covered
    assert {f"device={d}" for d in DEVICES} <= covered
    assert {f"op:{name}" for name in REGISTRY} <= covered
    pre_ops = {c for case in CASES if case.arm.startswith("pre_") for c in case.covers}
    assert {f"op:{name}" for name in REGISTRY if name not in POST_ONLY} <= pre_ops
    # TensorRT needs an NVIDIA GPU with TensorRT: refused at construction here
    # (tests/test_handlers.py), run on no machine of this project.


class _AtTheEnd(beam.PTransform):
    """Elements at the end of the global window (as crossinfer's held records and
    the Java client's batches are), then ``inner``."""

    def __init__(self, inner: beam.PTransform) -> None:
        super().__init__()
        self._inner = inner

    def expand(self, pcoll: beam.PCollection) -> Any:
        return pcoll | "Late" >> beam.Map(_at_the_end) | self._inner


def _at_the_end(element: Any) -> Any:
    from apache_beam.transforms import window

    return window.TimestampedValue(element, window.GlobalWindow().max_timestamp())


def test_max_wait_secs_is_for_streaming_and_bounded_input_still_runs(models, refs) -> None:
    """Beam batches in a stateful DoFn when given max_wait_secs, and the
    FnApiRunner (also behind Beam's Python job server) failed such a bounded job
    whose elements sit at the end of the global window: "A total of 1
    time-pending bundles did not execute" (first seen from Java's
    withBatching(2, 8, 0.5)). On bounded input batches end with the bundle."""
    from crossinfer.handlers.registry import model_handler

    waiting = _onnx("waiting", models, batching=ci.Batching(min_batch_size=2, max_batch_size=8,
                                                             max_wait_secs=0.5))
    mirror = ci.ABTestNode(name="ab", split="mirror", arms=(
        ci.Arm("waiting", waiting), ci.Arm("plain", _onnx("plain", models))))
    rows = [beam.Row(id=i, features=refs.x[i]) for i in range(N)]
    for spec in (waiting, mirror):
        results, failures, _ = run(rows, _AtTheEnd(ci.Inference(spec, policy=POLICY)))
        assert failures == [] and len(results) == N * (1 if spec is waiting else 2)
    handler = model_handler(waiting, POLICY, "waiting")
    assert handler.batch_elements_kwargs()["max_batch_duration_secs"] == 0.5  # streaming
    handler.bounded = True
    assert "max_batch_duration_secs" not in handler.batch_elements_kwargs()
