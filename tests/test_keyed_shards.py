"""Keyed shards: one route's work spread over workers, loads still bounded.

A keyed node groups by (route, shard) (crossinfer.patterns.shards). These tests
show that the shards change where a route's work runs, never what comes out:
the same results element for element, full batches, and at most one load of a
route's model per worker process.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, TimestampedValue

import crossinfer as ci
from crossinfer.patterns.shards import DEFAULT_SHARDS, ShardRuns, shards_of
from crossinfer.spec import spec_to_dict
from support import DIGITS_TOL, STORE, Collect, LiveModels, assert_same_label, metric, run

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))


def counting(name: str, scale: float, max_batch: int | None = None) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": name, "scale": scale},
                        batching=ci.Batching(max_batch_size=max_batch, max_wait_secs=0.5))


def single(shards: int | None, max_batch: int = 8) -> ci.KeyedNode:
    return ci.KeyedNode(name="single", shards=shards,
                        routes=(ci.Route(("hot",), counting("hot", 3.0, max_batch)),))


@pytest.fixture(autouse=True)
def _reset_live_models():
    LiveModels.reset()
    yield


# ------------------------------------------------------------------ the setting


def test_the_default_shards_a_route_only_when_the_cache_holds_every_model() -> None:
    three = tuple(ci.Route((f"k{i}",), counting(f"m{i}", 1.0)) for i in range(3))
    node = ci.KeyedNode(name="k", routes=three)
    assert shards_of(node, 3) == DEFAULT_SHARDS == 16
    assert shards_of(ci.KeyedNode(name="k", routes=three, max_models_per_worker=3), 3) == 16
    # A smaller cache: one group per route, so no route's model is loaded twice by a worker.
    assert shards_of(ci.KeyedNode(name="k", routes=three, max_models_per_worker=2), 3) == 1
    assert shards_of(ci.KeyedNode(name="k", routes=three, max_models_per_worker=2,
                                  shards=4), 3) == 4


def test_shards_are_in_the_spec_only_when_set() -> None:
    spec = ci.InferenceSpec(single(None))
    assert "shards" not in spec_to_dict(spec)["node"]
    doc = spec_to_dict(ci.InferenceSpec(single(5)))
    assert doc["node"]["shards"] == 5
    assert ci.load_spec(doc, POLICY).node.shards == 5
    with pytest.raises(ci.SpecError, match=r"node\.shards: must be an integer from 1 to 1024"):
        ci.load_spec({**doc, "node": {**doc["node"], "shards": 1025}}, POLICY)


def _item(value: float) -> np.ndarray:
    """An element's features, as the route step hands them to ShardRuns."""
    return np.array([value], dtype=np.float32)


def test_shards_go_in_runs_of_the_route_batch_size_from_a_hash_of_the_first_element() -> None:
    runs = ShardRuns(4, {"hot": 3, "cold": 2})
    first = [runs.shard("hot", _item(float(i))) for i in range(8)]
    start = first[0]
    assert first == [start] * 3 + [(start + 1) % 4] * 3 + [(start + 2) % 4] * 2
    # Another bundle that starts with the same element starts on the same shard.
    runs.reset()
    assert runs.shard("hot", _item(0.0)) == start
    # Every route counts its own runs (of its own batch size).
    cold = [runs.shard("cold", _item(7.0)) for _ in range(4)]
    assert cold == [cold[0]] * 2 + [(cold[0] + 1) % 4] * 2
    assert runs.shard("hot", _item(5.0)) == start  # still the hot route's first run
    assert ShardRuns(1, {"hot": 3}).shard("hot", _item(1.0)) == 0
    # Bundles starting with other elements start on other shards (CRC-32 of the features).
    starts = set()
    for i in range(32):
        runs.reset()
        starts.add(runs.shard("hot", _item(float(i))))
    assert starts == {0, 1, 2, 3}


# ------------------------------------------------------------------ in a pipeline


def _values(results: list[Any]) -> dict[int, list[float]]:
    return {r.id: list(r.inference) for r in results}


def test_shards_change_no_result_and_keep_batches_full() -> None:
    rows = [beam.Row(id=i, key="hot", features=[float(i)]) for i in range(100)]
    outcomes = {}
    for shards in (1, None, 5):
        LiveModels.reset()
        results, failures, result = run(rows, ci.Keyed(single(shards), policy=POLICY))
        assert failures == []
        outcomes[shards] = _values(results)
        # 100 elements in runs of 8 per shard: full batches, one partial.
        assert sorted(LiveModels.batch_sizes["hot"]) == [4] + [8] * 12, shards
        # One worker process here: one load, however many shards.
        assert metric(result, "crossinfer/single", "model_loads") == 1
    assert outcomes[1] == {i: [3.0 * i] for i in range(100)}
    assert outcomes[None] == outcomes[1] and outcomes[5] == outcomes[1]


def test_sharded_routes_in_streaming_windows() -> None:
    stream = TestStream()
    for second in range(0, 30, 3):
        stream = stream.advance_watermark_to(second).add_elements([
            TimestampedValue(beam.Row(id=second * 10 + j, key="hot", features=[float(j)]),
                             second) for j in range(4)])
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = (p | stream.advance_watermark_to_infinity() | beam.WindowInto(FixedWindows(10))
               | ci.Keyed(single(4, max_batch=2), policy=POLICY))
        _ = out.results | beam.Map(lambda r: (r.id, r.inference[0])) | beam.Map(
            Collect("shards-stream"))
        _ = out.failures | beam.Map(Collect("shards-stream/failures"))
    assert STORE.pop("shards-stream/failures", []) == []
    got = dict(STORE.pop("shards-stream"))
    assert got == {s * 10 + j: 3.0 * j for s in range(0, 30, 3) for j in range(4)}


def _digits_lr_single_route(models: Any, shards: int | None) -> dict:
    ab = json.loads((models.root / "ab.json").read_text())
    lr = ab["node"]["arms"][0]["node"]
    assert lr["name"] == "digits_lr"
    lr["batching"] = {"max_batch_size": 10}
    node: dict[str, Any] = {"kind": "keyed", "name": "single",
                            "routes": [{"keys": ["sklearn"], "node": lr}]}
    if shards is not None:
        node["shards"] = shards
    return {"version": 1, "node": node}


def _on_two_worker_processes(spec: dict, rows: list[beam.Row], out: str) -> tuple[dict, int]:
    """Runs the keyed node on Beam's FnApiRunner with two SDK worker processes."""
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=2",
                               "--direct_running_mode=multi_processing"])
    p = beam.Pipeline(options=options)
    outs = p | beam.Create(rows) | ci.Keyed(spec)
    _ = (outs.results
         | beam.Map(lambda r: json.dumps({"id": r.id, "label": r.label,
                                          "inference": list(r.inference)}))
         | beam.io.WriteToText(os.path.join(out, "results")))
    _ = (outs.failures | "Failures" >> beam.Map(lambda f: json.dumps({"id": f.element.id}))
         | "WriteFailures" >> beam.io.WriteToText(os.path.join(out, "failures")))
    result = p.run()
    result.wait_until_finish()
    lines = [json.loads(line) for path in sorted(glob.glob(os.path.join(out, "results*")))
             for line in open(path)]
    failures = [line for path in glob.glob(os.path.join(out, "failures*")) for line in open(path)]
    assert failures == []
    return {r["id"]: r for r in lines}, metric(result, "crossinfer/single", "model_loads")


@pytest.mark.slow
def test_a_single_route_runs_on_both_worker_processes_loading_once_in_each(
        models, digits_data, tmp_path) -> None:
    x, _ = digits_data
    rows = [beam.Row(id=i, key="sklearn", features=x[i].tolist()) for i in range(300)]
    unsharded, loads_unsharded = _on_two_worker_processes(
        _digits_lr_single_route(models, 1), rows, str(tmp_path / "one"))
    sharded, loads_sharded = _on_two_worker_processes(
        _digits_lr_single_route(models, None), rows, str(tmp_path / "default"))
    # One shard: one group, so one of the two worker processes ran (and loaded) the route.
    assert loads_unsharded == 1
    # The default 16 shards: both processes ran it; each loaded the model once.
    workers, routes = 2, 1
    assert loads_sharded == workers * routes
    assert sorted(sharded) == sorted(unsharded) == list(range(300))
    for i, row in sharded.items():
        np.testing.assert_allclose(row["inference"], unsharded[i]["inference"], **DIGITS_TOL)
        assert_same_label(row["label"], unsharded[i]["label"], row["inference"],
                          DIGITS_TOL["atol"])
