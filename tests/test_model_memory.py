"""memory.large_model and memory.model_copies, for every framework, on every path.

With either setting Beam keeps the model in one process of the machine and
hands the others a proxy, through which only method calls with picklable
arguments and results work. These pipelines failed every PyTorch and ONNX
element before crossinfer called its models only through such methods
("cannot pickle 'generator' object", "'AutoProxy[acquire_singleton]' object
has no attribute 'session'"), and keyed routes ignored the setting.

The scikit-learn model is skops; TorchScript, code-capable, runs because
:data:`POLICY` opts in to it (each PyTorch format is a case here).
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import torch

import crossinfer as ci
from crossinfer.handlers.sklearn import load_skops
from crossinfer.models import MLP
from paths import PATHS, paths_for, run_path
from support import DIGITS_TOL, LiveModels, run

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"),
                       code_formats=("torchscript",))
SCALE = ci.Op("scale", {"factor": 1 / 16})
SOFTMAX_ARGMAX = (ci.Op("softmax"), ci.Op("argmax"))
MEMORY = {"large_model": ci.Memory(large_model=True), "model_copies": ci.Memory(model_copies=2)}
KEYS = ("sklearn", "state_dict", "torchscript", "onnx")


@pytest.fixture(autouse=True, scope="module")
def _remove_shared_model_files():
    """Beam's cross-process store leaves an address and a lock file per shared
    model in the temp directory; remove those of the keyed routes made here."""
    start = time.time() - 1
    yield
    pattern = os.path.join(tempfile.gettempdir(), "crossinfer_keyed_*")
    for path in glob.glob(pattern):
        if os.path.getmtime(path) >= start:
            os.remove(path)


def framework_nodes(models, memory: ci.Memory, suffix: str = "") -> dict[str, ci.ModelNode]:
    """One model node per framework (and PyTorch format), all with ``memory``."""
    common = dict(preprocess=(SCALE,), memory=memory)
    return {
        "sklearn": ci.ModelNode(name=f"lr{suffix}", framework="sklearn", format="skops",
                                uri=models.path("digits_lr.skops"), method="predict_proba",
                                postprocess=(ci.Op("argmax"),), **common),
        "state_dict": ci.ModelNode(name=f"mlp{suffix}", framework="pytorch",
                                   format="state_dict", uri=models.path("digits_mlp.pt"),
                                   model_class="crossinfer.models:MLP",
                                   model_params={"sizes": [64, 64, 10]},
                                   postprocess=SOFTMAX_ARGMAX, **common),
        "torchscript": ci.ModelNode(name=f"ts{suffix}", framework="pytorch",
                                    uri=models.path("digits_mlp.ts"), postprocess=SOFTMAX_ARGMAX,
                                    **common),
        "onnx": ci.ModelNode(name=f"onnx{suffix}", framework="onnx",
                             uri=models.path("digits_mlp.onnx"), postprocess=SOFTMAX_ARGMAX,
                             **common),
    }


@pytest.fixture(scope="module")
def expected(models, digits_data) -> dict[str, np.ndarray]:
    """Each framework's probabilities for the first 40 digits, computed directly."""
    x = digits_data[0][:40] / 16.0
    lr = load_skops(Path(models.path("digits_lr.skops")).read_bytes(), "lr")
    mlp = MLP([64, 64, 10])
    mlp.load_state_dict(torch.load(models.path("digits_mlp.pt")))
    with torch.no_grad():
        probs = torch.softmax(mlp(torch.from_numpy(x)), dim=1).numpy()
    return {"sklearn": lr.predict_proba(x), "state_dict": probs, "torchscript": probs,
            "onnx": probs}


def digit_rows(digits_data, n: int = 40) -> list[tuple[int, str, np.ndarray]]:
    x = digits_data[0]
    return [(i, KEYS[i % len(KEYS)], x[i]) for i in range(n)]


def assert_results(outcome, paths: dict[str, str], expected: dict[str, np.ndarray],
                   ids: list[int]) -> None:
    """Every row has each framework's result at its path, equal to calling the model."""
    assert outcome.failures == {}, next(iter(outcome.failures.values()))
    for framework, path in paths.items():
        got = outcome.by_path(path)
        assert sorted(got) == ids, (framework, sorted(got))
        for i, result in got.items():
            np.testing.assert_allclose(result.inference, expected[framework][i], **DIGITS_TOL)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("setting", list(MEMORY))
def test_every_framework_runs_with_a_shared_model_on_every_path(models, digits_data, expected,
                                                                setting, path) -> None:
    nodes = framework_nodes(models, MEMORY[setting])
    rows = digit_rows(digits_data)
    ids = [i for i, _, _ in rows]
    if path == "batch_native":  # model specs only: one pipeline per framework
        for framework, node in nodes.items():
            outcome = run_path(path, rows, ci.InferenceSpec(node), POLICY)
            assert_results(outcome, {framework: node.name}, expected, ids)
        return
    mirror = ci.ABTestNode(name="ab", split="mirror", arms=tuple(
        ci.Arm(framework, node) for framework, node in nodes.items()))
    outcome = run_path(path, rows, ci.InferenceSpec(mirror), POLICY)
    assert_results(outcome, {f: f"ab/{f}/{n.name}" for f, n in nodes.items()}, expected, ids)


@pytest.mark.parametrize("setting", list(MEMORY))
def test_keyed_routes_share_their_models_on_every_path(models, digits_data, expected,
                                                       setting) -> None:
    nodes = framework_nodes(models, MEMORY[setting])
    keyed = ci.KeyedNode(name="keyed", max_models_per_worker=2, routes=tuple(
        ci.Route((key,), nodes[key]) for key in KEYS))
    spec = ci.InferenceSpec(keyed)
    rows = digit_rows(digits_data)
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, POLICY)
        assert outcome.failures == {}, (path, next(iter(outcome.failures.values())))
        for framework in KEYS:
            got = outcome.by_path(f"keyed/{nodes[framework].name}")
            assert sorted(got) == [i for i, key, _ in rows if key == framework], path
            for i, result in got.items():
                np.testing.assert_allclose(result.inference, expected[framework][i],
                                           **DIGITS_TOL)


def counting_node(name: str, memory: ci.Memory) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": name, "scale": 2.0}, memory=memory)


def _address_files(route: str, since: float) -> list[str]:
    pattern = os.path.join(tempfile.gettempdir(), f"crossinfer_keyed_*_{route}_*.address")
    return [p for p in glob.glob(pattern) if os.path.getmtime(p) >= since]


def test_a_keyed_route_honours_its_memory_setting() -> None:
    """model_copies: 3 loads 3 copies; large_model keeps one copy in Beam's
    cross-process store (its address file); a route without either loads its own."""
    LiveModels.reset()
    start = time.time() - 1
    keyed = ci.KeyedNode(name="keyed", routes=(
        ci.Route(("a",), counting_node("copies3", ci.Memory(model_copies=3))),
        ci.Route(("b",), counting_node("large", ci.Memory(large_model=True))),
        ci.Route(("c",), counting_node("plain", ci.Memory()))))
    rows = [beam.Row(id=i, key="abc"[i % 3], features=[float(i)]) for i in range(60)]
    results, failures, _ = run(rows, ci.Keyed(keyed, policy=POLICY))
    assert failures == [] and len(results) == 60
    assert all(r.inference == [2.0 * r.id] for r in results)
    assert LiveModels.loads == {"copies3": 3, "large": 1, "plain": 1}
    assert len(_address_files("copies3", start)) == 3
    assert len(_address_files("large", start)) == 1
    assert _address_files("plain", start) == []
