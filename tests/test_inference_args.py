"""Inference args belong to a model node: each model's call gets its own.

Before, ``crossinfer.Inference(..., inference_args=...)`` passed one set to
every model: an A/B mirror of a PyTorch model taking ``temperature`` and a
scikit-learn model failed all of the scikit-learn arm's elements at run time
("unexpected keyword argument"), and a scikit-learn model given args it cannot
take was accepted at construction. Now args are a field of the model node
(``inference_args``), refused at construction where the framework can tell
(a scikit-learn method's signature, a state dict class's ``forward``, ONNX and
TensorRT taking none), and failing each element with a clear message where it
cannot (TorchScript at load, custom handlers at the call).

scikit-learn nodes use skops (the safe format) unless a test is about the
class read from a pickle or joblib file; TorchScript, code-capable, runs only
under :data:`CODE_OK`, which opts in to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import crossinfer as ci
from attack_payloads import evil_pickle
from crossinfer.expansion import environments, payload
from crossinfer.expansion.servicer import CrossinferExpansionServicer
from crossinfer.expansion.urns import urn_for_node
from crossinfer.handlers.sklearn import load_skops
from crossinfer.models import MLP
from crossinfer.spec import spec_to_json
from paths import paths_for, run_path
from support import DIGITS_TOL
from xlang_fixtures import Plain, build_request

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))
#: The same, opted in to TorchScript (code-capable) for the tests about its args.
CODE_OK = ci.LoadPolicy(allowed_classes=POLICY.allowed_classes, code_formats=("torchscript",))
SCALE = ci.Op("scale", {"factor": 1 / 16})
N = 32


def temperature_mlp(zoo, name: str = "hot", **args) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="pytorch", format="state_dict",
                        uri=zoo.path("temperature_mlp.pt"), model_class="support:TemperatureMLP",
                        model_params={"sizes": [64, 64, 10]}, preprocess=(SCALE,),
                        inference_args=args)


def lr(models, name: str = "lr", uri: str | None = None, fmt: str = "skops",
       **args) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="sklearn", format=fmt,
                        uri=uri or models.path("digits_lr.skops"), method="predict_proba",
                        preprocess=(SCALE,), inference_args=args)


@pytest.fixture(scope="module")
def rows(digits_data) -> list[tuple[int, str, np.ndarray]]:
    x = digits_data[0]
    return [(i, ("torch", "script", "sklearn")[i % 3], x[i]) for i in range(N)]


@pytest.fixture(scope="module")
def logits(models, digits_data) -> np.ndarray:
    mlp = MLP([64, 64, 10])
    mlp.load_state_dict(torch.load(models.path("digits_mlp.pt")))
    with torch.no_grad():
        return mlp(torch.from_numpy(digits_data[0][:N] / 16.0)).numpy()


@pytest.fixture(scope="module")
def probabilities(models, digits_data) -> np.ndarray:
    estimator = load_skops(Path(models.path("digits_lr.skops")).read_bytes(), "lr")
    return estimator.predict_proba(digits_data[0][:N] / 16.0)


def test_each_arm_of_a_mirror_gets_its_own_args(models, zoo, rows, logits,
                                                probabilities) -> None:
    spec = ci.InferenceSpec(ci.ABTestNode(name="ab", split="mirror", arms=(
        ci.Arm("torch", temperature_mlp(zoo, temperature=4.0)), ci.Arm("sklearn", lr(models)))))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        assert outcome.failures == {}, (path, next(iter(outcome.failures.values())))
        hot, cold = outcome.by_path("ab/torch/hot"), outcome.by_path("ab/sklearn/lr")
        assert sorted(hot) == sorted(cold) == list(range(N)), path
        for i in range(N):
            np.testing.assert_allclose(hot[i].inference, logits[i] / 4.0, **DIGITS_TOL)
            np.testing.assert_allclose(cold[i].inference, probabilities[i], **DIGITS_TOL)


def test_each_keyed_route_and_each_path_gets_its_own_args(models, zoo, rows, logits,
                                                          probabilities) -> None:
    script = ci.ModelNode(name="script", framework="pytorch", preprocess=(SCALE,),
                          uri=zoo.path("temperature_mlp.ts"), inference_args={"temperature": 2.0})
    spec = ci.InferenceSpec(ci.KeyedNode(name="keyed", routes=(
        ci.Route(("torch",), temperature_mlp(zoo, temperature=4.0)),
        ci.Route(("script",), script), ci.Route(("sklearn",), lr(models)))))
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, CODE_OK)
        assert outcome.failures == {}, path
        for i, key, _ in rows:
            [r] = outcome.results[i]
            want = {"torch": logits[i] / 4.0, "script": logits[i] / 2.0,
                    "sklearn": probabilities[i]}[key]
            np.testing.assert_allclose(r.inference, want, **DIGITS_TOL)
    single = ci.InferenceSpec(temperature_mlp(zoo, temperature=0.5))
    outcome = run_path("batch_native", rows, single, POLICY)
    for i in range(N):
        np.testing.assert_allclose(outcome.results[i][0].inference, logits[i] * 2.0,
                                   **DIGITS_TOL)


def test_args_a_model_cannot_take_are_refused_at_construction(models, zoo, tmp_path) -> None:
    joblib_copy = str(tmp_path / "lr.joblib")
    shutil.copy(models.path("digits_lr.joblib"), joblib_copy)
    # The class of a pickle or joblib file is read from its opcodes (nothing is
    # unpickled); only a policy that opts in to the format gets that far.
    code_ok = ci.LoadPolicy(allowed_classes=POLICY.allowed_classes,
                            code_formats=("pickle", "joblib"))
    for node in (lr(models, uri=models.path("digits_lr.pkl"), fmt="pickle", temperature=4.0),
                 lr(models, uri=joblib_copy, fmt="joblib", temperature=4.0)):
        with pytest.raises(ci.SpecError) as err:
            ci.Model(node, policy=code_ok)
        assert ("node.inference_args.temperature: LogisticRegression.predict_proba takes no "
                "argument 'temperature' (its arguments after the input: none)") in str(err.value)
        with pytest.raises(ci.SpecError, match=r"node\.format: format '(pickle|joblib)' can run "
                                               r"code when loaded"):
            ci.Model(node, policy=POLICY)
    marker = tmp_path / "ran"  # reading a file's class runs nothing it names
    evil = evil_pickle(tmp_path / "evil.pkl", marker)
    ci.Model(lr(models, uri=str(evil), fmt="pickle", temperature=4.0), policy=code_ok)
    assert not marker.exists()  # its class is os.system: not scikit-learn's, so cannot tell
    cases = [
        (lr(models, temperature=4.0), "node.inference_args.temperature: "
         "LogisticRegression.predict_proba takes no argument 'temperature' (its arguments "
         "after the input: none)"),
        (ci.ModelNode(name="mlp", framework="pytorch", format="state_dict",
                      uri=models.path("digits_mlp.pt"), model_class="crossinfer.models:MLP",
                      model_params={"sizes": [64, 64, 10]}, inference_args={"temperature": 4}),
         "node.inference_args.temperature: MLP.forward takes no argument 'temperature'"),
        (temperature_mlp(zoo, temperatur=4.0), "node.inference_args.temperatur: "
         "TemperatureMLP.forward takes no argument 'temperatur' (its arguments after the "
         "input: temperature)"),
        (ci.ModelNode(name="onnx", framework="onnx", uri=models.path("digits_mlp.onnx"),
                      inference_args={"run_options": 1}),
         "node.inference_args: framework 'onnx' takes no inference args"),
        (ci.ModelNode(name="lr", framework="sklearn", format="skops",
                      uri=models.path("digits_lr.skops"), inference_args={"class": 1}),
         "node.inference_args.class: is not a keyword argument name"),
    ]
    for node, message in cases:
        with pytest.raises(ci.SpecError) as err:
            ci.Model(node, policy=POLICY)
        assert message in str(err.value)
    ab = ci.ABTestNode(name="ab", arms=(ci.Arm("a", temperature_mlp(zoo, temperature=2.0)),
                                        ci.Arm("b", lr(models, temperature=2.0))))
    with pytest.raises(ci.SpecError, match=r"node\.arms\[1\]\.node\.inference_args\.temperature"):
        ci.ABTest(ab, policy=POLICY)


def test_the_expansion_service_refuses_them_with_the_field_path(models) -> None:
    spec = ci.InferenceSpec(lr(models, temperature=4.0))
    service = CrossinferExpansionServicer(
        ci.LoadPolicy(model_roots=(str(models.root),)),
        environments.build_environment("external", "localhost:1"))
    response = service.Expand(build_request(urn_for_node(spec.node),
                                            payload.encode_payload(spec_to_json(spec)), Plain))
    assert response.error.startswith("crossinfer: invalid inference spec")
    assert "node.inference_args.temperature: LogisticRegression.predict_proba" in response.error


def test_where_the_framework_cannot_tell_each_element_fails_saying_why(zoo, rows) -> None:
    script = ci.ModelNode(name="script", framework="pytorch", uri=zoo.path("temperature_mlp.ts"),
                          preprocess=(SCALE,), inference_args={"temp": 2.0})
    custom = ci.ModelNode(name="custom", framework="custom", handler_class="support:ArgsHandler",
                          inference_args={"scale": 3.0})
    tripled = ci.ModelNode(name="tripled", framework="custom",
                           handler_class="support:ArgsHandler", inference_args={"factor": 3.0})
    spec = ci.InferenceSpec(ci.ABTestNode(name="ab", split="mirror", arms=(
        ci.Arm("script", script), ci.Arm("custom", custom), ci.Arm("tripled", tripled))))
    ci.Inference(spec, policy=CODE_OK)  # nothing to tell before loading
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, CODE_OK)
        script_errors = outcome.failed_at("ab/script/script")
        assert sorted(script_errors) == list(range(N)), path
        assert all("model 'script' could not be loaded from " in e and "TypeError: the "
                   "TorchScript model's forward takes no argument 'temp' (its arguments after "
                   "the input: temperature)" in e for e in script_errors.values())
        custom_errors = outcome.failed_at("ab/custom/custom")
        assert sorted(custom_errors) == list(range(N)), path
        assert all("unexpected keyword argument 'scale'" in e for e in custom_errors.values())
        tripled_results = outcome.by_path("ab/tripled/tripled")
        for i, _, x in rows:
            np.testing.assert_array_equal(tripled_results[i].inference, x * 3.0)


def test_the_transform_wide_args_are_refused_with_where_they_went(models) -> None:
    with pytest.raises(TypeError, match=r"inference_args is a setting of each model node: "
                                        r"ModelNode\(\.\.\., inference_args=\{\.\.\.\}\)"):
        ci.Model(lr(models), inference_args={"temperature": 4.0})


def test_inference_args_round_trip_in_json(models) -> None:
    spec = ci.InferenceSpec(lr(models, name="x"))
    doc = json.loads(spec_to_json(spec))
    assert "inference_args" not in doc["node"]  # the default is left out
    node = ci.spec.node_from_dict({**doc["node"], "inference_args": {"return_std": True},
                                   "output": 1})
    assert node.inference_args == {"return_std": True} and node.output == 1
    with pytest.raises(ci.SpecError, match=r"node\.output: expected a string"):
        ci.spec.node_from_dict({**doc["node"], "output": [1]})
    with pytest.raises(ci.SpecError, match=r"node\.inference_args: expected an object"):
        ci.spec.node_from_dict({**doc["node"], "inference_args": [1]})
