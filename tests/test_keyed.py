"""Keyed routing: bounded memory without thrashing, per-model batching, shared batches."""

from __future__ import annotations

import json
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest

import crossinfer as ci
from support import LiveModels, metric, run

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))


def counting_model(name: str, scale: float, max_batch: int | None = None,
                   poison: float | None = None) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": name, "scale": scale, "poison": poison},
                        batching=ci.Batching(max_batch_size=max_batch))


def keyed(routes: dict[str, list[str]], bound: int, sizes: dict[str, int] | None = None,
          default: ci.ModelNode | None = None) -> ci.KeyedNode:
    sizes = sizes or {}
    return ci.KeyedNode(name="keyed", max_models_per_worker=bound, default=default, routes=tuple(
        ci.Route(tuple(keys), counting_model(model, float(i + 1), sizes.get(model)))
        for i, (model, keys) in enumerate(routes.items())))


@pytest.fixture(autouse=True)
def _reset_live_models():
    LiveModels.reset()
    yield


def test_six_models_bound_two_round_robin_keys_load_each_model_once() -> None:
    names = [f"model{i}" for i in range(6)]
    node = keyed({name: [f"key{i}"] for i, name in enumerate(names)}, bound=2)
    rows = [beam.Row(id=i, key=f"key{i % 6}", features=[float(i)]) for i in range(1200)]
    results, failures, result = run(rows, ci.Keyed(node, policy=POLICY))
    assert failures == [] and len(results) == 1200
    for row in results:  # each key went to its own model: y = x * (index + 1)
        assert row.inference == [row.id * (row.id % 6 + 1)]
        assert row.model == f"model{row.id % 6}"
    # Recorded figure: 6 loads for 1,200 round-robin elements (Beam's keyed
    # handler with a bound below the model count reloads on nearly every batch).
    assert metric(result, "crossinfer/keyed", "model_loads") == 6
    assert dict(LiveModels.loads) == {name: 1 for name in names}
    assert LiveModels.peak <= 2, "more models were resident than the bound allows"


def test_the_bound_holds_when_every_element_needs_a_different_model() -> None:
    node = keyed({f"m{i}": [f"k{i}"] for i in range(5)}, bound=1)
    rows = [beam.Row(id=i, key=f"k{i % 5}", features=[1.0]) for i in range(100)]
    results, _, _ = run(rows, ci.Keyed(node, policy=POLICY))
    assert len(results) == 100
    assert LiveModels.peak == 1
    assert sum(LiveModels.loads.values()) == 5


def test_each_model_keeps_its_own_batch_size() -> None:
    node = keyed({"small": ["s"], "large": ["l"]}, bound=2, sizes={"small": 4, "large": 16})
    rows = [beam.Row(id=i, key="s" if i % 2 else "l", features=[1.0]) for i in range(100)]
    run(rows, ci.Keyed(node, policy=POLICY))
    assert max(LiveModels.batch_sizes["small"]) == 4
    assert max(LiveModels.batch_sizes["large"]) == 16
    assert sum(LiveModels.batch_sizes["small"]) == sum(LiveModels.batch_sizes["large"]) == 50


def test_keys_sharing_a_model_share_its_batches() -> None:
    node = keyed({"shared": ["a", "b"]}, bound=1, sizes={"shared": 32})
    rows = [beam.Row(id=i, key="a" if i < 20 else "b", features=[1.0]) for i in range(40)]
    run(rows, ci.Keyed(node, policy=POLICY))
    # One model, 40 elements, batches of 32: [32, 8]. Per-key batching would give [20, 20].
    assert sorted(LiveModels.batch_sizes["shared"]) == [8, 32]


def test_unknown_keys_use_the_default_route_or_fail_clearly() -> None:
    with_default = keyed({"m": ["known"]}, bound=1, default=counting_model("fallback", 10.0))
    rows = [beam.Row(id=1, key="known", features=[1.0]),
            beam.Row(id=2, key="stranger", features=[1.0]),
            beam.Row(id=3, key=None, features=[1.0])]
    results, failures, _ = run(rows, ci.Keyed(with_default, policy=POLICY))
    assert {r.id: r.model for r in results} == {1: "m", 2: "fallback", 3: "fallback"}
    assert failures == []
    results, failures, _ = run(rows, ci.Keyed(keyed({"m": ["known"]}, bound=1), policy=POLICY))
    assert [r.id for r in results] == [1]
    assert sorted((f.element.id, f.node, f.error) for f in failures) == [
        (2, "keyed", "no route for key 'stranger' and the keyed node has no default route"),
        (3, "keyed", "the element has no key and the keyed node has no default route")]


def test_keyed_digits_models_across_frameworks(models, digits_data) -> None:
    x, y = digits_data
    spec = json.loads((models.root / "keyed.json").read_text())
    keys = ["sklearn", "torch", "pytorch", "onnx"]
    rows = [beam.Row(id=i, key=keys[i % 4], features=x[i].tolist()) for i in range(400)]
    results, failures, result = run(rows, ci.Keyed(spec))
    assert failures == []
    assert Counter(r.model for r in results) == {"digits_lr": 100, "digits_mlp": 200,
                                                  "digits_onnx": 100}
    assert np.mean([r.label == y[r.id] for r in results]) > 0.95
    assert metric(result, "crossinfer/digits_keyed", "model_loads") == 3
