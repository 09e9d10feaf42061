"""An A/B experiment on an unbounded stream, reported per event-time window.

    .venv/bin/python examples/python/experiment_streaming.py

A TestStream plays the 1,797 digits arriving over 90 seconds of event time,
each with its true label (``label_true``). They are windowed into 30-second
fixed windows and split 50/50, sticky per user (hash split), between the
scikit-learn model (control) and the PyTorch MLP (treatment); ``ExperimentReport`` reports every
window when it closes: traffic and the sample-ratio-mismatch test, accuracy
per arm with intervals, the difference with its p-value, and the decision.
"""

from __future__ import annotations

import apache_beam as beam
from _common import demo_models
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, TimestampedValue

import crossinfer
from crossinfer.demo import digits
from crossinfer.experiments import ExperimentReport, summary_text


def _print_window(kv) -> None:
    (start_ms, pane), grouped = kv
    arms = sorted(grouped["arms"], key=lambda a: a.arm)
    # (with an allowed lateness - beam.WindowInto(FixedWindows(30), allowed_lateness=60) -
    # each late pane restates its window over every result so far: pane 1, 2, ...)
    late = f" (late pane {pane}: every result so far)" if pane else ""
    print(f"\n== window {start_ms // 1000}s - {(start_ms // 1000) + 30}s{late}")
    print(summary_text(arms, list(grouped["pairs"])), end="")


def main() -> None:
    models = demo_models()
    x, y = digits()
    stream = TestStream()
    for start in range(0, len(x), 100):  # 100 digits every 5 s of event time
        stream = stream.advance_watermark_to(start / 20).add_elements([
            TimestampedValue(beam.Row(id=j, key=f"user-{j % 300}", label_true=int(y[j]),
                                      features=x[j].tolist()), j / 20)
            for j in range(start, min(start + 100, len(x)))])
    stream = stream.advance_watermark_to_infinity()
    scale = crossinfer.Op("scale", {"factor": 1 / 16})
    node = crossinfer.ABTestNode(name="live_ab", split="hash", salt="2026", arms=(
        crossinfer.Arm("control", crossinfer.ModelNode(
            name="lr", framework="sklearn", format="skops", uri=models.path("digits_lr.skops"),
            method="predict_proba", preprocess=(scale,), postprocess=(crossinfer.Op("argmax"),),
            batching=crossinfer.Batching(max_batch_size=32)), 50),
        crossinfer.Arm("treatment", crossinfer.ModelNode(
            name="mlp", framework="pytorch", format="state_dict",
            uri=models.path("digits_mlp.pt"), model_class="crossinfer.models:MLP",
            model_params={"sizes": [64, 64, 10]},
            preprocess=(scale,), postprocess=(crossinfer.Op("softmax"), crossinfer.Op("argmax")),
            batching=crossinfer.Batching(max_batch_size=32)), 50)))

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = p | stream | beam.WindowInto(FixedWindows(30)) | crossinfer.ABTest(node)
        report = out | ExperimentReport(node, ground_truth="label_true")
        by_window = {
            "arms": report.arms | "ArmsByWindow" >> beam.Map(
                lambda a: ((a.window_start_ms, a.pane_index), a)),
            "pairs": report.pairs | "PairsByWindow" >> beam.Map(
                lambda r: ((r.window_start_ms, r.pane_index), r)),
        }
        _ = by_window | beam.CoGroupByKey() | beam.Map(_print_window)


if __name__ == "__main__":
    main()
