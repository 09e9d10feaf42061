"""Benchmark 6: the A/B pipeline on a Flink cluster, 1 TaskManager vs 2, and Flink vs Prism.

One Java pipeline - rows of 32 float32 values made by 256 shards spread over the
workers (``Reshuffle`` of the shard numbers), an A/B test (a seeded random 50/50 split between two
torch MLPs 32-256-256-10, ``bench.patterns``'s ``ab-split``) through the
expansion service, results counted - run side by side in one run:

* ``prism``: on Prism;
* ``flink-1``: on a local Flink cluster (1 JobManager + 2 TaskManagers, one slot
  each; ``io.crossinfer.launch.FlinkCluster``) at parallelism 1: one
  TaskManager and its Python worker do the work;
* ``flink-2``: the same cluster at parallelism 2: both TaskManagers, each with
  its own Python worker.

Each is timed at ``--elements`` and at ``--startup-elements``: a Flink job
starts a Python worker (imports torch) and a Java harness per TaskManager, which
costs seconds whatever the input; the small runs show that start-up, and the
report gives per round how many seconds the extra elements added. It also
counts the CPU seconds of each part (Python workers, the benchmark's JVM, the
Flink JVMs, Prism) per run. The Python
workers come from one worker pool (the expansion service's ``external``
environment; ``--processes``: each TaskManager's worker is a process of its own,
``--pool threads`` gives the pool's default, threads of one process), the Java
steps run in the benchmark's JVM (LOOPBACK), all on this machine. At the end it
prints the resident memory of every JVM, and the Python workers' peak.

    python -m bench.flink --elements 200000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import crossinfer as ci
from bench import harness
from bench.harness import Measured, Variant
from bench.models import DIM, dataset, prepare
from bench.patterns import crossinfer_spec
from bench.pipelines import SHARDS
from bench.xlang import _descendants, _own_cpu_seconds, java_classpath
from crossinfer.expansion import worker_pool
from crossinfer.expansion.local import WorkerPool, start_child
from crossinfer.expansion.service import READY
from crossinfer.spec.codec import spec_to_json

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".work" / "bench_flink"
JAVA_MAIN = "io.crossinfer.bench.FlinkBench"
RUNNERS = {"prism": ("Prism", "prism", 1),
           "flink-1": ("Flink, parallelism 1 (1 TaskManager)", "flink", 1),
           "flink-2": ("Flink, parallelism 2 (2 TaskManagers)", "flink", 2)}


class FlinkSide:
    """The JVM running FlinkBench: Prism, the Flink cluster, its job server."""

    def __init__(self, classpath: str, service: str, data: Path, log: IO[str]) -> None:
        env = dict(os.environ, CROSSINFER_PYTHON=sys.executable)
        self.process = subprocess.Popen(
            ["java", "-cp", classpath, JAVA_MAIN, f"--expansion-service={service}",
             f"--data={data}", f"--dim={DIM}", f"--work={WORK}"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            text=True)
        line = self.ask(None)
        if not line.startswith("ready "):
            raise RuntimeError(f"the Java benchmark did not start: {line!r} (log: {log.name})")

    def ask(self, command: str | None) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Java benchmark exited ({self.process.poll()})")
        return line.strip()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


class CpuMeter:
    """CPU seconds of each part of a run: the Python workers (the pool's tree), the
    benchmark's JVM (the Java steps, LOOPBACK), Prism, and the Flink JVMs (JobManager,
    TaskManagers, job server: the JVM's other children)."""

    def __init__(self, pool: int, jvm: int) -> None:
        self._pool, self._jvm = pool, jvm

    def read(self) -> dict[str, float]:
        children = {}
        for pid in _descendants(self._jvm):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            part = "prism" if b"prism" in cmd.split(b"\0")[0] else "flink jvms"
            children[part] = children.get(part, 0.0) + _own_cpu_seconds(pid)
        return {"python workers": pool_cpu_seconds(self._pool),
                "bench jvm": _own_cpu_seconds(self._jvm),
                "flink jvms": children.get("flink jvms", 0.0),
                "prism": children.get("prism", 0.0)}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: round(v - before[k], 2) for k, v in self.read().items()}


def variant(java: FlinkSide, kind: str, n: int, spec_file: Path, meter: CpuMeter):
    _, runner, parallelism = RUNNERS[kind]

    def once() -> dict[str, Any]:
        before = meter.read()
        got = json.loads(java.ask(f"run {runner} {parallelism} {n} {spec_file}"))
        if got.get("state") != "DONE" or got["results"] + got["failures"] != n:
            raise RuntimeError(f"{kind}, {n} elements: {got}")
        if got["failures"]:
            raise RuntimeError(f"crossinfer reported {got['failures']} failures: {got}")
        return {"wall_s": got["wall_s"], "taskmanagers": got["taskmanagers"],
                "cpu_s_last_round": meter.since(before)}

    return once


def extra_seconds(big: Measured, small: Measured) -> list[float]:
    """Per round, how much longer the big run took than the small one (same machine load)."""
    return [round(b - s, 2) for b, s in zip(big.seconds, small.seconds, strict=True)]


def pool_cpu_seconds(pool: int) -> float:
    """The pool's CPU time, its exited workers' (reaped: cutime, cstime) and live ones'."""
    try:
        fields = Path(f"/proc/{pool}/stat").read_text().rsplit(")", 1)[1].split()
        own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        own = 0.0
    return own + sum(_own_cpu_seconds(p) for p in _descendants(pool))


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(v for v in status.splitlines() if v.startswith("VmRSS:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 0  # gone meanwhile


class PeakRss:
    """The largest resident memory of a process tree, sampled twice a second."""

    def __init__(self, pid: int) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.5):
                now = sum(rss_kb(p) for p in [pid, *_descendants(pid)])
                self.peak_kb = max(self.peak_kb, now)

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def start_pool(threads: bool) -> WorkerPool:
    """crossinfer's worker pool; its worker processes run `python`: this interpreter's."""
    env = dict(os.environ, PATH=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    process, line = start_child(
        ["-m", "crossinfer.expansion.worker_pool", "--port", "0", "--exit-with-parent",
         *([] if threads else ["--processes"])],
        worker_pool.READY, name="the worker pool", stdin=subprocess.PIPE, env=env)
    return WorkerPool(process, line[len(worker_pool.READY):].strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=200_000)
    parser.add_argument("--startup-elements", type=int, default=2_000)
    parser.add_argument("--pool", choices=("processes", "threads"), default="processes",
                        help="the worker pool's SDK workers: a process each, or threads of "
                             "the pool's process (one GIL for all)")
    harness.common_args(parser, "flink")
    parser.set_defaults(repeats=3)
    args = parser.parse_args(argv)
    harness.apply_common(args)  # OMP_NUM_THREADS for the workers
    for script in ("build-prism.sh", "build-flink.sh"):
        subprocess.run(["bash", str(ROOT / "java" / "scripts" / script)], check=True)

    n, n0 = args.elements, args.startup_elements
    models = prepare(Path(".work/bench_models").resolve())
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / f"rows-{n}x{DIM}.f32"
    dataset(n, SHARDS).astype("<f4").tofile(data)
    spec_file = WORK / "spec-ab-split.json"
    spec_file.write_text(spec_to_json(ci.InferenceSpec(crossinfer_spec("ab-split", models))))
    classpath = java_classpath()

    log = open(WORK / "processes.log", "w")  # for the whole run: closed in the finally below
    pool = start_pool(args.pool == "threads")
    peak = PeakRss(pool.process.pid)
    service, line = start_child(
        ["-m", "crossinfer.expansion", "--port", "0", "--environment", "external",
         "--environment-config", pool.address, "--model-root", str(models.root)],
        READY, name="the expansion service", stderr=log)
    address = line.rsplit(" ", 1)[-1]
    java = FlinkSide(classpath, address, data, log)
    meter = CpuMeter(pool.process.pid, java.process.pid)
    print(f"flink: {n:,} (and {n0:,}) elements, A/B 50/50 of two torch MLPs, expansion service "
          f"{address}, worker pool {pool.address}, {args.repeats} rounds")
    try:
        variants = []
        for kind, (name, _, _) in RUNNERS.items():
            variants.append(Variant(name, "ab-split", n, variant(java, kind, n, spec_file, meter),
                                    kind, warm=variant(java, kind, n0, spec_file, meter)))
            variants.append(Variant(name, f"start-up ({n0:,})", n0,
                                    variant(java, kind, n0, spec_file, meter), kind,
                                    warm=lambda: None))  # the big one's warm-up is this run
        measured = harness.measure(variants, args.repeats, warmup=True)
        rss = json.loads(java.ask("rss"))
        rss[f"python worker pool and workers ({args.pool}), peak"] = peak.peak_kb
    finally:
        peak.stop()
        try:
            java.close()
        finally:  # the service and the pool stop even if the JVM died
            service.terminate()
            service.wait(timeout=30)
            pool.stop()
            log.close()

    by = {(m.group, m.kind): m for m in measured}
    extra = {kind: extra_seconds(by[("ab-split", kind)], by[(f"start-up ({n0:,})", kind)])
             for kind in RUNNERS}
    spread = by[("ab-split", "flink-2")].facts.get("taskmanagers")
    details = [
        f"seconds the {n - n0:,} more elements added to a job, per round (the rest of a job is "
        "its start-up; a few seconds on runs this noisy, so indicative only):",
        *[f"  {RUNNERS[k][0]:<40} {v}" for k, v in extra.items()],
        f"records the inference steps read per TaskManager, last flink-2 run: {spread}",
        "CPU seconds per part, last round:",
        *[f"  {m.group:<17} {m.name:<38} " + ", ".join(
            f"{k} {v:.1f}" for k, v in m.facts.get("cpu_s_last_round", {}).items())
          for m in measured],
        "resident memory (VmRSS) after the runs:",
        *[f"  {name:<46} {kb / 1024:8.0f} MiB" for name, kb in rss.items()]]
    targets = [
        harness.ratio_target("Flink: 2 TaskManagers / 1", by[("ab-split", "flink-2")],
                             measured, "flink-1", 1.0),
    ]
    harness.report(args.name, dict(vars(args), extra_seconds=extra, rss_kb=rss,
                                   taskmanagers_last_flink_2=spread),
                   measured, targets, refs=("prism", "flink-1"),
                   notes=["Java pipeline, Java steps in the benchmark JVM (LOOPBACK), Python "
                          f"steps in one external worker pool ({args.pool}); Flink 1.19 / "
                          "Beam 2.62 job "
                          "server, Prism v2.77.0; wall clock only (the work runs in other "
                          "processes); 2 shared cores"],
                   details="\n".join(details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
