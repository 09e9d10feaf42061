"""The experiment report's own Python per result, replayed (issue 18).

Runs the A/B pipeline of ``bench.experiments`` once (``ab-mirror`` by
default: 2 results per element), keeps its result rows in their arrival
order, then times the report's per-result step alone over them, in this
process: ``_Accumulate`` (reading each row into a chunk, the chunks' columns,
a mirror's pairing) from ``start_bundle`` to ``finish_bundle``, as the runner
calls it for one bundle, with the ground truth and (mirror) the id as
``bench.experiments`` sets them. What it leaves out is Beam's dispatch of
each result to one more consumer (``bench.experiments``' no-op ParDo).

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

import crossinfer as ci
from bench.models import prepare
from bench.patterns import crossinfer_spec
from bench.pipelines import Synthetic, run

#: The result rows of the last run, in arrival order (the FnApiRunner runs in
#: this process; the DoFn below is pickled by reference to this module).
ROWS: list[Any] = []


class _Keep(beam.DoFn):
    def process(self, row: Any) -> None:
        ROWS.append(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--pattern", default="ab-mirror", choices=("ab-mirror", "ab-split"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # by this module's name, not __main__'s: the runner must append to this ROWS
    from bench import report_replay
    from crossinfer.experiments.settings import ReportSettings
    from crossinfer.experiments.transform import _Accumulate, _Reading

    spec = crossinfer_spec(args.pattern, prepare())

    def build(p: beam.Pipeline) -> None:
        out = p | Synthetic(args.elements) | ci.ABTest(spec)
        _ = out.results | beam.ParDo(report_replay._Keep())

    report_replay.ROWS.clear()
    run(build)
    rows = list(report_replay.ROWS)
    settings = ReportSettings.from_spec(spec, ground_truth="id", id_field="id")
    id_field = "id" if settings.mirror else None
    reading = _Reading.of_results("id", id_field, None, settings.metric)
    per_row = []
    for _ in range(args.repeats):
        step = _Accumulate(settings, reading, settings.mirror)
        step.setup()
        gc.collect()
        start = time.perf_counter()
        step.start_bundle()
        for row in rows:
            step.process(row)
        for _ in step.finish_bundle():
            pass
        per_row.append((time.perf_counter() - start) / len(rows) * 1e6)
    print(f"report_replay: {args.pattern}, {len(rows):,} results, {args.repeats} repeats: "
          f"{min(per_row):.2f} us per result at best, {statistics.median(per_row):.2f} median "
          f"({', '.join(f'{x:.2f}' for x in per_row)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
