"""Timing harness: interleaved repeats, medians, ratios, a table and a JSON file.

Timings on a shared machine are noisy, so every variant of a benchmark is run
in the same process, interleaved (repeat 1 of every variant, then repeat 2, in
a rotating order) and summarised by its median. Figures that matter are the
ratios between variants measured in one run, never absolute times across runs.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import operator
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


@dataclass
class Variant:
    """One thing to time: ``run()`` processes ``elements`` elements and may
    return extra facts (model loads, failures) to record. A run whose work
    happens in other processes times itself: it returns ``wall_s``, which is
    used instead of the harness's clock (and no CPU time is recorded)."""

    name: str
    group: str
    elements: int
    run: Callable[[], dict[str, Any] | None]
    kind: str = ""  # raw | beam | crossinfer | ...
    #: a cheaper run for the warm-up (a pipeline on fewer elements); default: run
    warm: Callable[[], Any] | None = None


@dataclass
class Measured:
    """Timings of one variant: wall-clock seconds and this process's CPU
    seconds (everything runs in this process; CPU time is less disturbed by
    other work on a shared machine, so its ratios are reported too)."""

    name: str
    group: str
    kind: str
    elements: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def per_second(self) -> float:
        return self.elements / self.median_s

    @property
    def per_cpu_second(self) -> float | None:
        if not self.cpu_seconds:
            return None
        return self.elements / statistics.median(self.cpu_seconds)


def common_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds (every variant once per round, in a rotating "
                             "order); medians are reported (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of torch and ONNX Runtime, for every variant "
                             "(0: the frameworks' defaults); 1 keeps timings stable on a "
                             "small shared machine")
    parser.add_argument("--name", default=name, help="results file: bench/results/NAME.json")
    sampling_period_arg(parser)


def sampling_period_arg(parser: argparse.ArgumentParser) -> None:
    """``--sampling-period-ms`` (for benchmarks that take none of the other
    :func:`common_args`); :func:`apply_sampling_period` applies it."""
    parser.add_argument("--sampling-period-ms", type=int, default=SAMPLING_PERIOD_MS,
                        help="longest sleep of Beam's state sampler in pipelines run in this "
                             "process (every variant alike; 200: Beam's default, which rounds "
                             "each bundle's end up to the sampler's next tick - see "
                             "apply_sampling_period)")


def apply_common(args: argparse.Namespace) -> None:
    """What :func:`common_args` set, applied to this process: the threads and
    the state sampler's period."""
    apply_threads(args.threads)
    apply_sampling_period(args.sampling_period_ms)


#: Intra-op threads given to every framework in this run (0: frameworks' defaults).
THREADS = [0]


def apply_threads(threads: int) -> None:
    """The same intra-op thread count for every variant of a run: torch's, and
    ONNX Runtime's (Beam's handler and the raw loop get session options,
    crossinfer reads ``OMP_NUM_THREADS``)."""
    THREADS[0] = max(0, threads)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


#: The state sampler's longest sleep for benchmarks, in ms (Beam's default: 200).
SAMPLING_PERIOD_MS = 1


def apply_sampling_period(ms: int = SAMPLING_PERIOD_MS) -> None:
    """Beam's state sampler in this process sleeps at most ``ms`` between ticks.

    Why: Beam's SDK harness starts a sampler thread at every bundle's start
    and joins it at the bundle's end (``BundleProcessor.process_bundle`` calls
    ``StateSampler.stop``); the thread sleeps in ``usleep``, its period growing
    from ``max(1, period // 100)`` ms by x1.2 up to ``sampling_period_ms``
    (200 by default: ``DEFAULT_SAMPLING_PERIOD_MS`` in
    ``apache_beam/runners/worker/statesampler.py``; the loop in
    ``statesampler_fast.pyx``, whose ``stop`` says it "may have to wait up to
    sampling_period_ms"). So a bundle's wall time is rounded up to the next
    tick, by up to 200 ms, the same for the same duration: a change that saves
    40 ms of CPU in a one-bundle pipeline shows no change in wall time, or a
    200 ms one. At 1 ms wall time follows the work; the sampler's ticks cost
    no measurable CPU. Only pipelines run in this process are affected (not
    the workers of the Flink or cross-language benchmarks)."""
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    names = list(inspect.signature(init).parameters)
    if names[-1] != "sampling_period_ms" or init.__defaults__ is None \
            or len(init.__defaults__) != 1:  # a Beam that changed it: say so, do not guess
        raise RuntimeError(f"StateSampler.__init__{inspect.signature(init)}: "
                           "expected one default, sampling_period_ms")
    init.__defaults__ = (max(1, ms),)


def _sampling_period_ms() -> int:
    from apache_beam.runners.worker import statesampler

    return int((statesampler.StateSampler.__init__.__defaults__ or (0,))[-1])


def ort_session_options() -> Any:
    """ONNX Runtime session options with this run's thread count (or None)."""
    if THREADS[0] <= 0:
        return None
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS[0]
    return options


def measure(variants: list[Variant], repeats: int, warmup: bool = True,
            log: Callable[[str], None] = print) -> list[Measured]:
    """Run every variant ``repeats`` times, interleaved in a rotating order."""
    measured = [Measured(v.name, v.group, v.kind, v.elements) for v in variants]
    if warmup:  # imports, first model loads, caches, allocator warm-up
        for v in variants:
            (v.warm or v.run)()
    for r in range(repeats):
        order = list(range(len(variants)))
        shift = r % len(order)
        order = order[shift:] + order[:shift]
        for i in order:
            # The run before left garbage (a pipeline's graph, runner state, in
            # reference cycles): collected here, untimed, not by the garbage
            # collector's next full pass in whichever variant runs next.
            gc.collect()
            start, cpu = time.perf_counter(), time.process_time()
            facts = variants[i].run() or {}
            elapsed = time.perf_counter() - start
            if "wall_s" in facts:
                elapsed = facts.pop("wall_s")
            else:
                measured[i].cpu_seconds.append(time.process_time() - cpu)
            measured[i].seconds.append(elapsed)
            measured[i].facts.update(facts)
            log(f"  [{r + 1}/{repeats}] {variants[i].group:>10} {variants[i].name:<34} "
                f"{elapsed:8.3f} s  {variants[i].elements / elapsed:12,.0f} el/s")
    return measured


def ratio(m: Measured, others: list[Measured], kind: str, cpu: bool = False) -> float | None:
    """``m``'s throughput over the one of its group's variant of ``kind``: the
    median of the per-round ratios (a round runs every variant once, back to
    back, so a round's two timings saw the same machine load)."""
    ref = next((o for o in others if o.group == m.group and o.kind == kind), None)
    if ref is None:
        return None
    mine, theirs = (m.cpu_seconds, ref.cpu_seconds) if cpu else (m.seconds, ref.seconds)
    if not mine or not theirs:
        return None  # timed by the variant itself, in another process
    if len(mine) != len(theirs):
        return (m.per_cpu_second / ref.per_cpu_second if cpu
                else m.per_second / ref.per_second)
    return statistics.median((m.elements / a) / (ref.elements / b)
                             for a, b in zip(mine, theirs, strict=True))


def table(measured: list[Measured], refs: tuple[str, ...] = ("raw", "beam")) -> str:
    """Elements/s (wall clock) and ratios to each reference, by wall clock and
    by CPU time."""
    head = f"{'group':<16}{'variant':<38}{'elements':>10}{'median s':>10}{'el/s':>11}"
    head += "".join(f"{'x ' + r:>9}{'(cpu)':>7}" for r in refs)
    lines = [head, "-" * len(head)]
    for m in measured:
        line = (f"{m.group:<16}{m.name:<38}{m.elements:>10,}{m.median_s:>10.3f}"
                f"{m.per_second:>11,.0f}")
        for r in refs:
            value = ratio(m, measured, r)
            cpu = ratio(m, measured, r, cpu=True)
            line += f"{value:>9.2f}" if value is not None else f"{'':>9}"
            line += f"{cpu:>7.2f}" if cpu is not None else f"{'':>7}"
        lines.append(line)
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import apache_beam
    import numpy

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "apache_beam": apache_beam.__version__,
        "numpy": numpy.__version__,
        "runner": "FnApiRunner (in process)",
        "state_sampler_period_ms": _sampling_period_ms(),
    }
    for name in ("torch", "sklearn", "onnxruntime"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            pass
    return env


def write_results(name: str, params: dict[str, Any], measured: list[Measured],
                  targets: list[dict[str, Any]], refs: tuple[str, ...] = ("raw", "beam"),
                  notes: list[str] | None = None) -> Path:
    rows = []
    for m in measured:
        row = asdict(m)
        row["median_s"] = m.median_s
        row["elements_per_s"] = m.per_second
        row["elements_per_cpu_s"] = m.per_cpu_second
        for r in refs:
            row[f"ratio_to_{r}"] = ratio(m, measured, r)
            row[f"cpu_ratio_to_{r}"] = ratio(m, measured, r, cpu=True)
        rows.append(row)
    doc = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "environment": environment(), "params": params, "rows": rows,
           "targets": targets, "notes": notes or []}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def report(name: str, params: dict[str, Any], measured: list[Measured],
           targets: list[dict[str, Any]], refs: tuple[str, ...] = ("raw", "beam"),
           notes: list[str] | None = None, details: str = "",
           targets_heading: str = "targets:") -> Path:
    """The end of every benchmark: the table, ``details`` (what the table does
    not show), the targets, and the results file; returns its path."""
    print()
    print(table(measured, refs))
    if details:
        print("\n" + details)
    print(f"\n{targets_heading}\n" + targets_text(targets))
    path = write_results(name, params, measured, targets, refs, notes)
    print(f"\nwrote {path}")
    return path


def target(name: str, value: float | None, goal: float, op: str = ">=",
           cpu_value: float | None = None) -> dict[str, Any]:
    """A target and where it stands (judged on ``value``, the wall-clock
    ratio; ``cpu_value`` is the same ratio by CPU time, for reference)."""
    compare = {">=": operator.ge, "<=": operator.le}.get(op, operator.eq)
    met = None if value is None else compare(value, goal)
    return {"target": name, "value": value, "cpu_value": cpu_value, "goal": f"{op} {goal}",
            "met": met}


def ratio_target(name: str, m: Measured, measured: list[Measured], kind: str,
                 goal: float) -> dict[str, Any]:
    return target(name, ratio(m, measured, kind), goal,
                  cpu_value=ratio(m, measured, kind, cpu=True))


def targets_text(targets: list[dict[str, Any]]) -> str:
    lines = []
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        cpu = "" if t.get("cpu_value") is None else f"(cpu {t['cpu_value']:.2f})"
        state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        lines.append(f"  {t['target']:<52} {value:>8} {cpu:<11} goal {t['goal']:<7} {state}")
    return "\n".join(lines)
