"""Where a crossinfer run's time goes, measured inside the run.

One ``BatchedInference`` pipeline (the ``single_model`` benchmark's
``*/batched`` variant) with a wall-clock timer around each step it runs, and
the raw loop at the same batch size, alternated in one process; with
``--per-element``, ``crossinfer.Model`` on one row per element, alternated
with plain Beam RunInference and the empty pipeline (``single_model``'s
per-element variants; the empty pipeline - the same source and sink, nothing
between them - is printed as the runner's own limit, not used in a ratio).
Batch-native runs also time ``bench.variants.engine_loop`` (printed as
``engine loop without Beam``): the same crossinfer steps (reading elements
into blocks, the node's runner, the result rows) on the raw loop's slices of
``--source-batch`` rows, in a plain loop, without Beam - what the engine
reaches where Beam costs nothing - with its model calls and crossinfer's own
steps timed as in the pipeline. Each round runs every variant once, in an
order that rotates from round to round; wall clock only. A crossinfer
pipeline run (printed as ``crossinfer pipeline``) splits into (printed names
first):

* ``wall``: the whole run;
* ``fixed``: the run outside its bundles (building and translating the
  pipeline, starting the in-process SDK worker, loading the model);
* ``model calls``: the model calls (``LoadedModel.predict``), the same calls the
  raw loop makes but on the pipeline's own arrays;
* ``crossinfer's own steps``: reading elements into blocks
  (``ToBlocks.process``), the node runner beyond the model call
  (``BlockRunner.run``: post-processing, the non-finite check, block
  bookkeeping) and the output rows (``ToOutputs.process``);
* ``Beam's steps``: the rest of the bundles: the source, Beam's RunInference DoFn
  and metrics, the runner passing each element from step to step.

It prints the ratio to the reference (the raw loop; per element, plain
Beam): the reference's seconds / crossinfer's, higher is better; what that
ratio would be if crossinfer's own steps cost nothing (the *bound*):
``reference / (wall - crossinfer's own steps)``, the most any change to
crossinfer's steps can reach on this runner for this model and batch size;
and, batch-native, the engine loop's. Each is the median of the per-round
ratios (not a ratio of the medians printed), then its lowest and highest
round. The JSON file holds every round: ``reference_s`` (seconds, by
reference; round ``i`` of each list pairs with ``runs[i]``), ``runs`` (the
pipeline's parts), ``engine_runs`` (the engine loop's wall, model calls and
crossinfer's own steps), the per-round ``ratios``, ``bounds`` and
``engine_ratios``, and their medians ``ratio``, ``bound``, ``engine_ratio``.
With ``--detail`` it also times steps inside crossinfer's own (they overlap
the parts above; ``model + post-processing`` includes the model calls).
The timers add two ``perf_counter`` calls per step call: under 0.1% of a
256-row element's time; per element ~0.1 us an element, inside the time of
crossinfer's own steps (reading each element is timed), so the ratio is that
much lower than untimed and the bound is not raised by it.

    python -m bench.split --framework pytorch --source-batch 256
    python -m bench.split --framework onnx --source-batch 4096
    python -m bench.split --framework onnx --per-element --rows 100000
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import statistics
import sys
import time
from typing import Any

from bench import harness
from bench.models import dataset, prepare
from bench.pipelines import SHARDS, Synthetic
from bench.variants import (
    beam_pipeline,
    crossinfer_node,
    crossinfer_pipeline,
    empty_pipeline,
    engine_loop,
    raw_loop,
)

#: The steps timed: (module, class, method) -> the part they count towards.
STEPS = {
    ("apache_beam.runners.worker.bundle_processor", "BundleProcessor", "process_bundle"): "bundles",
    ("crossinfer.handlers.loaded", "LoadedModel", "predict"): "model",
    ("crossinfer.engine.runner", "BlockRunner", "run"): "runner",
    ("crossinfer.patterns.edges", "ToBlocks", "process"): "read",
    ("crossinfer.patterns.edges", "ToOutputs", "process"): "write",
}
#: With ``--detail``, steps inside those (printed, not in any part's sum).
DETAIL = {
    ("crossinfer.patterns.edges", "RowReader", "read"): "  inside: reading a row element",
    ("crossinfer.engine.runner", "BlockRunner", "_predict"): "  inside: model + post-processing",
    ("crossinfer.engine.emit", "RowFormat", "results"): "  inside: result rows",
}


def _timed(spent: collections.Counter[str], steps: dict[tuple[str, str, str], str]) -> list[str]:
    """Wrap every method of ``steps`` to add its wall time to ``spent``; the
    steps that are not in this crossinfer tree (an older one, run with
    ``PYTHONPATH``) are left out and named in the list returned."""
    import importlib

    missing = []
    for (module, cls_name, method), part in steps.items():
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{cls_name}.{method}")
            continue
        fn = getattr(cls, method)

        @functools.wraps(fn)
        def timed(*args: Any, _fn: Any = fn, _part: str = part, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_part] += time.perf_counter() - start

        setattr(cls, method, timed)
    return missing


CROSSINFER = "crossinfer"
#: Batch-native runs' second reference: crossinfer's steps in a plain loop.
ENGINE = "engine loop without Beam, wall"
#: Printed names of a run's parts (see the module doc).
LABELS = {"wall": "wall", "fixed": "fixed (outside the bundles)", "model": "model calls",
          "crossinfer": "crossinfer's own steps", "beam": "Beam's steps"}


def split(wall: float, spent: collections.Counter[str]) -> dict[str, float]:
    """One run's seconds by part (see the module doc), then any detail."""
    beyond_model = spent["runner"] - spent["model"] if "runner" in spent else 0.0
    crossinfer = spent["read"] + spent["write"] + beyond_model
    return {"wall": wall, "fixed": wall - spent["bundles"], "model": spent["model"],
            "crossinfer": crossinfer,
            "beam": spent["bundles"] - spent["model"] - crossinfer,
            **{part: spent[part] for part in DETAIL.values() if part in spent}}


def _spread(ratios: list[float]) -> str:
    """A ratio's median over rounds, then its lowest and highest round."""
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + (
        " Batch-native runs also time crossinfer's steps in a plain loop without Beam "
        "(bench.variants.engine_loop). Ratios are the reference's seconds / the variant's "
        "(higher is better), medians of the per-round ratios; see bench/README.md."))
    parser.add_argument("--framework", default="pytorch", choices=("sklearn", "pytorch", "onnx"),
                        help="default pytorch")
    parser.add_argument("--source-batch", type=int, default=256,
                        help="rows per element, default 256 (ignored with --per-element)")
    parser.add_argument("--rows", type=int, default=None,
                        help="rows (default 1,000,000; per element 100,000)")
    parser.add_argument("--per-element", action="store_true",
                        help="one row per element: crossinfer.Model against plain Beam")
    parser.add_argument("--detail", action="store_true",
                        help="also time steps inside crossinfer's own steps (overlapping "
                             "the parts, not added to them; adds timer calls per element)")
    harness.common_args(parser, "split")
    args = parser.parse_args(argv)
    harness.apply_common(args)

    import crossinfer as ci
    from crossinfer.patterns.batched import BatchedInference

    rows = args.rows or (100_000 if args.per_element else 1_000_000)
    spent: collections.Counter[str] = collections.Counter()
    missing = _timed(spent, {**STEPS, **(DETAIL if args.detail else {})})
    print(f"crossinfer from {ci.__file__}")
    for step in missing:
        print(f"  not timed (not in this tree): {step}")
    models = prepare()
    node = crossinfer_node(args.framework, models)

    def pipeline(n: int) -> Any:
        if args.per_element:
            return crossinfer_pipeline(lambda: ci.Model(node), n)
        return crossinfer_pipeline(lambda: BatchedInference(node), n,
                                   source=lambda: Synthetic(n, batch=args.source_batch),
                                   weight=lambda row: len(row.inference))

    run = pipeline(rows)
    if args.per_element:
        what = f"{rows:,} rows, one per element"
        refs = {"plain Beam": beam_pipeline(args.framework, models, rows),
                "empty pipeline": empty_pipeline(rows)}
    else:
        what = f"{rows:,} rows in {args.source_batch}-row elements"
        data = dataset(rows, SHARDS)
        refs = {f"raw loop at {args.source_batch}": raw_loop(
            args.framework, models, data, args.source_batch),
            ENGINE: engine_loop(args.framework, models, data, args.source_batch)}
    pipeline(2_000)()
    run()  # warm: the source's rows are made (and cached) on the first run
    for ref in refs.values():
        ref()
    runs: list[dict[str, float]] = []
    ref_s: dict[str, list[float]] = {name: [] for name in refs}
    engine_runs: list[dict[str, float]] = []
    variants = [CROSSINFER, *refs]
    for round_ in range(args.repeats):
        k = round_ % len(variants)  # the order rotates, as in harness.measure
        for name in variants[k:] + variants[:k]:
            if name == CROSSINFER:
                spent.clear()
                start = time.perf_counter()
                run()
                runs.append(split(time.perf_counter() - start, spent))
            else:
                spent.clear()  # the engine loop runs the timed steps too
                start = time.perf_counter()
                refs[name]()
                ref_s[name].append(time.perf_counter() - start)
                if name == ENGINE:
                    engine_runs.append(split(ref_s[name][-1], spent))

    med = {part: statistics.median(r[part] for r in runs) for part in runs[0]}
    first = next(iter(refs))  # the reference of the ratios
    ratios = [rf / r["wall"] for r, rf in zip(runs, ref_s[first], strict=True)]
    bounds = [rf / (r["wall"] - r["crossinfer"]) for r, rf in zip(runs, ref_s[first], strict=True)]
    print(f"{args.framework}, {what}, median of {args.repeats} rounds (seconds):")
    for name, seconds in ref_s.items():
        print(f"  {name + ':':<42} {statistics.median(seconds):7.3f}")
        if name == ENGINE and engine_runs:  # no bundles: only these two parts apply
            for part in ("model", "crossinfer"):
                value = statistics.median(r[part] for r in engine_runs)
                print(f"    {LABELS[part] + ':':<40} {value:7.3f}")
    print("  crossinfer pipeline:")
    for part, value in med.items():
        print(f"    {LABELS.get(part, part) + ':':<40} {value:7.3f}")
    engine_ratios = ([rf / e for rf, e in zip(ref_s[first], ref_s[ENGINE], strict=True)]
                     if ENGINE in ref_s else [])
    print(f"ratios ({first} s / the variant's s, higher is better;\n"
          f"        median of the per-round ratios [lowest-highest round]):")
    print(f"  {'crossinfer / ' + first + ':':<46} {_spread(ratios)}")
    if not missing:  # (an older tree: its own steps are counted under "beam", no bound)
        bound = "with crossinfer's own steps free (bound):"
        print(f"  {bound:<46} {_spread(bounds)}")
    if engine_ratios:  # the engine without Beam, against the same raw loop, paired by round
        print(f"  {'engine loop without Beam / ' + first + ':':<46} {_spread(engine_ratios)}")
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    path = harness.RESULTS / f"{args.name}.json"
    path.write_text(json.dumps({
        "benchmark": "split", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": harness.environment(), "params": {**vars(args), "rows": rows},
        "reference_s": ref_s,
        "not_timed": missing, "runs": runs, "ratio": statistics.median(ratios),
        "bound": statistics.median(bounds),
        "engine_ratio": statistics.median(engine_ratios) if engine_ratios else None,
        "ratios": ratios, "bounds": bounds, "engine_ratios": engine_ratios,
        "engine_runs": [{part: r[part] for part in ("wall", "model", "crossinfer")}
                        for r in engine_runs],
    }, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
