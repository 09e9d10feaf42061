"""The experiment report's own Python per result, replayed (issue 18).

Runs the A/B pipeline of ``bench.experiments`` once (``ab-mirror`` by
default: 2 results per element), keeps its result rows and the finished
blocks they were written from in their arrival order, then times the report's
accumulating step alone over each, in this process, from ``start_bundle`` to
``finish_bundle`` as the runner calls it for one bundle, with the ground truth
and (mirror) the id as ``bench.experiments`` sets them:

* rows: ``_Accumulate`` (reading each row into a chunk, the chunks' columns, a
  mirror's pairing) - how the report reads rows another step, another SDK or
  a file gave it; what it leaves out is Beam's dispatch of each result to one
  more consumer (``bench.experiments``' no-op ParDo);
* blocks: ``_AccumulateBlocks`` - how it reads the results of a crossinfer
  transform (each block's output columns; the ground truth and id from each
  row's input element), per result.

    python -m bench.report_replay --elements 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow

import crossinfer as ci
from bench.models import prepare
from bench.patterns import crossinfer_spec
from bench.pipelines import Synthetic, run

#: The result rows of the last run, in arrival order (the FnApiRunner runs in
#: this process; the DoFn below is pickled by reference to this module).
ROWS: list[Any] = []
BLOCKS: list[Any] = []


class _Keep(beam.DoFn):
    def process(self, row: Any) -> None:
        ROWS.append(row)


class _KeepBlock(beam.DoFn):
    def process(self, block: Any) -> None:
        BLOCKS.append(block)


def _replay(step: Any, values: list[Any], results: int, repeats: int,
            *args: Any) -> list[float]:
    """us per result of ``step`` over ``values`` (one bundle; ``args``: what
    the runner passes ``process`` after the value), each repeat."""
    per_result = []
    for _ in range(repeats):
        step.setup()
        gc.collect()
        start = time.perf_counter()
        step.start_bundle()
        for value in values:
            step.process(value, *args)
        for _ in step.finish_bundle():
            pass
        per_result.append((time.perf_counter() - start) / results * 1e6)
    return per_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--pattern", default="ab-mirror", choices=("ab-mirror", "ab-split"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # by this module's name, not __main__'s: the runner must append to this ROWS
    from bench import report_replay
    from crossinfer.experiments.settings import ReportSettings
    from crossinfer.experiments.transform import _Accumulate, _AccumulateBlocks, _Reading
    from crossinfer.patterns.edges import finished_blocks

    spec = crossinfer_spec(args.pattern, prepare())

    def build(p: beam.Pipeline) -> None:
        out = p | Synthetic(args.elements) | ci.ABTest(spec)
        _ = out.results | beam.ParDo(report_replay._Keep())
        _ = finished_blocks(out.results) | beam.ParDo(report_replay._KeepBlock())

    report_replay.ROWS.clear()
    report_replay.BLOCKS.clear()
    run(build)
    rows, blocks = list(report_replay.ROWS), list(report_replay.BLOCKS)
    settings = ReportSettings.from_spec(spec, ground_truth="id", id_field="id")
    id_field = "id" if settings.mirror else None
    ways = {
        "rows": (_Accumulate(settings, _Reading.of_results("id", id_field, None,
                                                           settings.metric), settings.mirror),
                 rows, ()),
        "blocks": (_AccumulateBlocks(settings, _Reading.of_blocks(  # type: ignore[arg-type]
            "id", id_field, None, settings.metric), settings.mirror), blocks,
                   (GlobalWindow(),))}
    print(f"report_replay: {args.pattern}, {len(rows):,} results in {len(blocks):,} blocks, "
          f"{args.repeats} repeats")
    for way, (step, values, window) in ways.items():
        per_result = _replay(step, values, len(rows), args.repeats, *window)
        print(f"  from {way}: {min(per_result):.2f} us per result at best, "
              f"{statistics.median(per_result):.2f} median "
              f"({', '.join(f'{x:.2f}' for x in per_result)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
