"""Keyed inference: keys -> models, at most 2 models resident, without thrashing.

    .venv/bin/python examples/python/keyed.py

Six users' segments route to three models (scikit-learn, PyTorch, ONNX) with
``max_models_per_worker: 2``. Keys arrive round-robin - the pattern that makes
Beam's KeyedModelHandler reload a model for nearly every element - and each
model is still loaded once: crossinfer groups elements by model before
inference. The load counts come from Beam metrics.
"""

from __future__ import annotations

import json

import apache_beam as beam
from _common import Summary, demo_models
from apache_beam.metrics.metric import MetricsFilter

import crossinfer
from crossinfer.demo import digits


def main() -> None:
    models = demo_models()
    spec = json.loads((models.root / "keyed.json").read_text())
    x, y = digits()
    keys = ["sklearn", "torch", "onnx", "pytorch", "unknown-segment"]
    rows = [beam.Row(id=i, key=keys[i % len(keys)], label_true=int(y[i]), features=x[i].tolist())
            for i in range(len(x))]

    pipeline = beam.Pipeline(runner="FnApiRunner")
    keyed = pipeline | beam.Create(rows, reshuffle=False) | crossinfer.Keyed(spec)
    _ = keyed.results | Summary("Keyed (3 models, bound 2, keys round-robin)")
    _ = (keyed.failures | beam.Map(lambda f: f.error) | beam.combiners.Count.PerElement()
         | beam.Map(lambda kv: print(f"   failures: {kv[1]} x {kv[0]}")))
    result = pipeline.run()
    result.wait_until_finish()
    loads = result.metrics().query(MetricsFilter().with_name("model_loads"))["counters"]
    for m in sorted(loads, key=lambda m: m.key.metric.namespace):
        print(f"   {m.key.metric.namespace:<40} model_loads = {m.committed}")


if __name__ == "__main__":
    main()
