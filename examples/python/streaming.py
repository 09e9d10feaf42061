"""A/B inference on an unbounded stream with event-time windows.

    .venv/bin/python examples/python/streaming.py

A TestStream plays digits arriving over 60 seconds of event time; rows are
windowed into 20-second fixed windows and split 50/50, sticky per user, between
the scikit-learn and the PyTorch model. Counts are printed per window and arm.

Batching here is bundle-based (no ``max_wait_secs``): on Beam's local streaming
DirectRunner, output from event-time timers (which ``max_wait_secs`` batching
uses) is not held back by the watermark, so a downstream CombinePerKey sees the
last batch of a window as late data. crossinfer still emits every row; see
docs/streaming.md.
"""

from __future__ import annotations

import apache_beam as beam
from _common import demo_models
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, TimestampedValue

import crossinfer
from crossinfer.demo import digits


class _PerWindow(beam.DoFn):
    def process(self, row, window=beam.DoFn.WindowParam):
        yield (f"window {int(window.start):>3}s  arm {row.path.split('/')[1]}", 1)


def main() -> None:
    models = demo_models()
    x, _ = digits()
    stream = TestStream()
    for i in range(0, 600, 50):  # 600 digits, 50 every 5 s of event time
        stream = stream.advance_watermark_to(i // 10).add_elements([
            TimestampedValue(beam.Row(id=j, key=f"user-{j % 40}", features=x[j].tolist()),
                             j // 10) for j in range(i, i + 50)])
    stream = stream.advance_watermark_to_infinity()
    scale = crossinfer.Op("scale", {"factor": 1 / 16})
    node = crossinfer.ABTestNode(name="live_ab", split="hash", arms=(
        crossinfer.Arm("sklearn", crossinfer.ModelNode(
            name="lr", framework="sklearn", format="skops", uri=models.path("digits_lr.skops"),
            method="predict_proba", preprocess=(scale,), postprocess=(crossinfer.Op("argmax"),),
            batching=crossinfer.Batching(max_batch_size=32))),
        crossinfer.Arm("torch", crossinfer.ModelNode(
            name="mlp", framework="pytorch", format="state_dict",
            uri=models.path("digits_mlp.pt"), model_class="crossinfer.models:MLP",
            model_params={"sizes": [64, 64, 10]}, preprocess=(scale,),
            postprocess=(crossinfer.Op("argmax"),),
            batching=crossinfer.Batching(max_batch_size=32)))))

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = p | stream | beam.WindowInto(FixedWindows(20)) | crossinfer.ABTest(node)
        _ = (out.results | beam.ParDo(_PerWindow()) | beam.CombinePerKey(sum)
             | beam.Map(lambda kv: print(f"   {kv[0]}: {kv[1]} rows")))


if __name__ == "__main__":
    main()
