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
* ``interpreter work``: a busy loop of the interpreter for as long as
  ``result rows`` takes (timed before the rounds), touching almost no memory;
* ``1 MB read`` / ``8 MB read``: a sum over an array of that size; 8 MB is
  more than the L1 and L2 caches of the machine measured (2 MiB of L2 a core),
  less than its L3;
* ``1 MB allocated``: a 1 MB numpy array allocated, filled and freed;
* ``nothing; crossinfer's call``: the control, the same model through
  crossinfer's own call (``LoadedModel.predict``, which ``bench.split`` times
  in pipelines: its model file, skops for scikit-learn, and its adapter,
  without post-processing such as pytorch's and ONNX's argmax), nothing between.

Only the model calls are timed (``perf_counter`` around each, summed over
the slices); each round runs every variant once in a rotating order; the
figure is the median of the rounds, and ``x nothing`` the median of each
round's ratio. If the calls slow down after memory reads and not after as
long a stretch of interpreter work, the slowdown in a pipeline is consistent
with the memory its other steps touch between two calls evicting the model
call's data from the CPU's caches (how much memory a pipeline touches there
is not measured here).

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
from bench.models import BenchModels, dataset, prepare
from bench.pipelines import SHARDS
from bench.variants import FRAMEWORKS, crossinfer_node, model_step

Between = Callable[[np.ndarray, np.ndarray], object]


def _nothing(x: np.ndarray, out: np.ndarray) -> object:
    return None


def _result_rows(x: np.ndarray, out: np.ndarray) -> object:
    # (out is the previous call's: one slice longer at the end)
    return [Row(id=i, features=f, inference=[float(o)])
            for i, (f, o) in enumerate(zip(x.tolist(), out.tolist(), strict=False))]


def _busy(seconds: float) -> Between:
    def busy(x: np.ndarray, out: np.ndarray) -> object:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return None
    return busy


def _read(array: np.ndarray) -> Between:
    def read(x: np.ndarray, out: np.ndarray) -> object:
        return array.sum()
    return read


def _allocate_1mb(x: np.ndarray, out: np.ndarray) -> object:
    block = np.empty((1024, 256), np.float32)
    block.fill(0)
    return None


def variants(slices: list[np.ndarray], out: np.ndarray) -> dict[str, Between]:
    """The work between two calls, by name (``interpreter work`` lasts as long
    as ``result rows`` on these slices, the median of 51 timings)."""
    took = []
    for x in slices[:51]:
        start = time.perf_counter()
        _result_rows(x, out)
        took.append(time.perf_counter() - start)
    return {
        "nothing": _nothing,
        "result rows": _result_rows,
        "interpreter work": _busy(statistics.median(took)),
        "1 MB read": _read(np.ones(1 << 18, dtype=np.float32)),
        "8 MB read": _read(np.ones(1 << 21, dtype=np.float32)),
        "1 MB allocated": _allocate_1mb,
    }


#: The control row's name.
CROSSINFER_CALL = "nothing; crossinfer's call"


def crossinfer_call(framework: str, models: BenchModels) -> Callable[[np.ndarray], np.ndarray]:
    """``LoadedModel.predict`` of the benchmark's crossinfer node: the call
    ``bench.split`` times inside pipelines (the model file crossinfer reads -
    skops for scikit-learn - and its adapter; post-processing, e.g. pytorch's
    and ONNX's argmax, is not part of it)."""
    from crossinfer.handlers.loaded import LoadedModel
    from crossinfer.handlers.registry import adapter_for
    from crossinfer.policy import LoadPolicy

    return LoadedModel(adapter_for(crossinfer_node(framework, models), LoadPolicy())).predict


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
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows each variant runs on, per round")
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
    rows: list[dict[str, Any]] = []
    print(f"{'framework':<10}{'work between two calls':<30}{'model calls s':>14}{'x nothing':>11}")
    for framework in args.frameworks.split(","):
        step = model_step(framework, models)
        runs = {name: (step, between) for name, between in
                variants(slices, step(slices[0])).items()}
        # The control: the same model through crossinfer's own call, nothing between.
        runs[CROSSINFER_CALL] = (crossinfer_call(framework, models), _nothing)
        names = list(runs)
        for call, between in runs.values():  # warm-up: every path once
            time_calls(call, slices[:50], between)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                call, between = runs[name]
                seconds[name].append(time_calls(call, slices, between))
        for name in names:
            ratio = statistics.median(a / b for a, b in zip(
                seconds[name], seconds["nothing"], strict=True))
            median = statistics.median(seconds[name])
            print(f"{framework:<10}{name:<30}{median:>14.3f}{ratio:>11.2f}")
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
