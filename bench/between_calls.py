"""Why the same model calls take longer inside a pipeline than in the raw loop.

``bench.split`` found the model calls of a batch-native run slower than the
raw loop's at the same batch size (256 rows: scikit-learn +18%, pytorch +7%,
ONNX +3%), with the calling code ruled out. This times the framework's own
call (``bench.variants.model_step``, what the raw loop runs) on the raw
loop's own 256-row slices, with other work done between two calls and not
timed, one variant at a time:

* ``nothing``: the raw loop;
* ``result rows``: a ``beam.Row`` per row of the slice (an id, its features
  and outputs as lists), roughly what a pipeline builds between two calls;
* ``interpreter loop``: pure interpreter work for about as long, touching
  almost no memory;
* ``8 MB read``: a sum over an 8 MB array, which empties the CPU's data caches;
* ``1 MB allocated``: a 1 MB numpy array allocated, filled and freed.

Only the model calls are timed (``perf_counter`` around each, summed over
the slices); each round runs every variant once in a rotating order; the
figure is the median of the rounds, and ``x nothing`` the median of each
round's ratio. If the calls slow down with the data caches emptied (``8 MB
read``) and not with interpreter work alone, what slows them in a pipeline is
the memory the pipeline's other steps touch between two calls: a cost of any
pipeline around a model, not of the code that calls it.

    python -m bench.between_calls
    python -m bench.between_calls --frameworks sklearn --rows 400000 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from apache_beam.pvalue import Row

from bench import harness
from bench.models import dataset, prepare
from bench.pipelines import SHARDS
from bench.variants import FRAMEWORKS, model_step

Between = Callable[[np.ndarray, np.ndarray], object]
_BIG = np.ones(2_000_000, dtype=np.float32)  # 8 MB: more than this machine's caches


def _nothing(x: np.ndarray, out: np.ndarray) -> object:
    return None


def _result_rows(x: np.ndarray, out: np.ndarray) -> object:
    # (out is the previous call's: one slice longer at the end)
    return [Row(id=i, features=f, inference=[float(o)])
            for i, (f, o) in enumerate(zip(x.tolist(), out.tolist(), strict=False))]


def _interpreter_loop(x: np.ndarray, out: np.ndarray) -> object:
    total = 0
    for i in range(6_000):  # about as long as _result_rows on 256 rows, here
        total += i
    return total


def _read_8mb(x: np.ndarray, out: np.ndarray) -> object:
    return _BIG.sum()


def _allocate_1mb(x: np.ndarray, out: np.ndarray) -> object:
    block = np.empty((1024, 256), np.float32)
    block.fill(0)
    return None


VARIANTS: dict[str, Between] = {
    "nothing": _nothing,
    "result rows": _result_rows,
    "interpreter loop": _interpreter_loop,
    "8 MB read": _read_8mb,
    "1 MB allocated": _allocate_1mb,
}


def time_calls(step: Callable[[np.ndarray], np.ndarray], slices: list[np.ndarray],
               between: Between) -> float:
    """Seconds spent in ``step`` over ``slices``, ``between`` run (untimed)
    before each call with the slice and the previous call's output."""
    spent = 0.0
    out = step(slices[0])
    for x in slices:
        between(x, out)
        start = time.perf_counter()
        out = step(x)
        spent += time.perf_counter() - start
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated: " + ", ".join(FRAMEWORKS))
    parser.add_argument("--rows", type=int, default=200_000, help="rows per run")
    parser.add_argument("--batch", type=int, default=256, help="rows per model call")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of torch and ONNX Runtime (0: their defaults)")
    parser.add_argument("--name", default="between_calls",
                        help="results file: bench/results/NAME.json")
    args = parser.parse_args(argv)
    harness.apply_threads(args.threads)

    models = prepare()
    data = dataset(args.rows, SHARDS)
    slices = [data[i:i + args.batch] for i in range(0, len(data), args.batch)]
    names = list(VARIANTS)
    rows: list[dict[str, Any]] = []
    print(f"{'framework':<10}{'work between two calls':<24}{'model calls s':>14}{'x nothing':>11}")
    for framework in args.frameworks.split(","):
        step = model_step(framework, models)
        for between in VARIANTS.values():  # warm-up: every path once
            time_calls(step, slices[:50], between)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds[name].append(time_calls(step, slices, VARIANTS[name]))
        for name in names:
            ratio = statistics.median(a / b for a, b in zip(
                seconds[name], seconds["nothing"], strict=True))
            median = statistics.median(seconds[name])
            print(f"{framework:<10}{name:<24}{median:>14.3f}{ratio:>11.2f}")
            rows.append({"framework": framework, "between": name, "seconds": seconds[name],
                         "median_s": median, "ratio_to_nothing": ratio})
    doc = {"benchmark": "between_calls", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "environment": harness.environment(), "params": vars(args), "rows": rows}
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    path = harness.RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
