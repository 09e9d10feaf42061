"""Unbounded input: TestStream with event-time windows through A/B and keyed nodes."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, TimestampedValue

import crossinfer as ci
from support import STORE, Collect, LiveModels

POLICY = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))


def counting(name: str, scale: float) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="custom", handler_class="support:CountingHandler",
                        handler_params={"name": name, "scale": scale},
                        batching=ci.Batching(max_batch_size=8, max_wait_secs=0.5))


def _stream() -> TestStream:
    stream = TestStream()
    for second in range(0, 30, 3):  # three 10 s windows, 4 elements every 3 s
        stream = stream.advance_watermark_to(second)
        stream = stream.add_elements([
            TimestampedValue(beam.Row(id=second * 10 + j, key=f"user{j}", features=[float(j)]),
                             second) for j in range(4)])
    return stream.advance_watermark_to_infinity()


class _WithWindow(beam.DoFn):
    def process(self, row, window=beam.DoFn.WindowParam):
        yield (int(window.start), row.path.split("/")[1], row.inference[0], row.key)


def _run(transform: beam.PTransform, tag: str) -> list:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        out = (p | _stream() | beam.WindowInto(FixedWindows(10)) | transform)
        _ = out.results | beam.ParDo(_WithWindow()) | beam.Map(Collect(tag))
        _ = out.failures | "F" >> beam.Map(Collect(tag + "/failures"))
    assert STORE.pop(tag + "/failures", []) == []
    return STORE.pop(tag, [])


def test_ab_test_on_an_unbounded_windowed_stream() -> None:
    node = ci.ABTestNode(name="ab", split="hash", arms=(
        ci.Arm("a", counting("ma", 1.0)), ci.Arm("b", counting("mb", 10.0))))
    rows = _run(ci.ABTest(node, policy=POLICY), "stream-ab")
    assert len(rows) == 40
    assert sorted({start for start, *_ in rows}) == [0, 10, 20]
    arm_of_key: dict[str, str] = {}
    for _, arm, value, key in rows:
        assert arm_of_key.setdefault(key, arm) == arm, "hash split is sticky in streaming"
        j = float(key[-1])
        assert value == (j if arm == "a" else 10 * j)


def test_keyed_on_an_unbounded_windowed_stream() -> None:
    LiveModels.reset()
    node = ci.KeyedNode(name="keyed", max_models_per_worker=1, routes=(
        ci.Route(("user0", "user1"), counting("low", 1.0)),
        ci.Route(("user2", "user3"), counting("high", 100.0))))
    rows = _run(ci.Keyed(node, policy=POLICY), "stream-keyed")
    assert len(rows) == 40
    for _, _, value, key in rows:
        j = float(key[-1])
        assert value == (j if j < 2 else 100 * j)
    assert LiveModels.peak <= 1
