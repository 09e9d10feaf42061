"""Batch-native crossinfer's cost split into a fixed part and a per-row part.

The same ``BatchedInference`` pipeline on ``--small`` and on ``--large`` rows
(best of ``--repeats`` each, CPU seconds of this process, where the
in-process runner does all the work): fixed = the small run, per row = the
difference over the rows between. Run it once per source tree, with that
tree first on ``PYTHONPATH``, to compare two versions without a pipeline's
start-up hiding the per-row cost:

    PYTHONPATH=/path/to/before/python:. python -m bench.fixed_cost --framework pytorch
    python -m bench.fixed_cost --framework pytorch
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import harness
from bench.models import dataset, prepare
from bench.pipelines import SHARDS, Synthetic
from bench.variants import crossinfer_node, crossinfer_pipeline, raw_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", default="pytorch")
    parser.add_argument("--source-batch", type=int, default=256)
    parser.add_argument("--small", type=int, default=2_560)
    parser.add_argument("--large", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    harness.sampling_period_arg(parser)
    args = parser.parse_args(argv)
    harness.apply_common(args)

    import crossinfer
    from crossinfer.patterns.batched import BatchedInference

    models = prepare()
    node = crossinfer_node(args.framework, models)
    best: dict[int, float] = {}
    for n in (args.small, args.large):
        dataset(n, SHARDS)
        run = crossinfer_pipeline(
            lambda: BatchedInference(node), n,
            source=lambda n=n: Synthetic(n, batch=args.source_batch),
            weight=lambda row: len(row.inference))
        run()  # warm
        times = []
        for _ in range(args.repeats):
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
        best[n] = min(times)
    data = dataset(args.large, SHARDS)
    raw = raw_loop(args.framework, models, data, args.source_batch)
    raw()
    raw_times = []
    for _ in range(args.repeats):
        start = time.process_time()
        raw()
        raw_times.append(time.process_time() - start)
    per_row = (best[args.large] - best[args.small]) / (args.large - args.small)
    print(f"crossinfer from {crossinfer.__file__}")
    print(f"{args.framework}, {args.source_batch}-row elements: fixed "
          f"{best[args.small] * 1e3:.0f} ms CPU, per row {per_row * 1e6:.2f} us CPU; raw loop at "
          f"{args.source_batch}: {min(raw_times) / args.large * 1e6:.2f} us CPU per row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
