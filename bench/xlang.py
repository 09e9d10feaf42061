"""Benchmark 1c: Java -> expansion service -> Python vs crossinfer Python-direct.

The single-model workload (100,000 rows of 32 float32 values; scikit-learn
LogisticRegression, torch MLP 32-256-256-10, its ONNX export) on one local
portable runner, side by side in one run:

* ``raw``: the framework called directly on slices of the same rows (batch 64),
  in this process: the limit;
* ``beam``: plain Beam ``RunInference`` (Beam's own handler, as in
  ``bench.single_model``), a Python pipeline on the same job server and workers;
* ``python``: a Python pipeline with ``crossinfer.Model``, submitted to the
  job server, its steps in the worker pool (crossinfer Python-direct);
* ``java-array``: a Java pipeline calling the same spec through the expansion
  service, ``features`` an ``ARRAY<DOUBLE>`` (one boxed Double per value, what
  a Java pipeline holding ``List<Double>`` sends);
* ``java-packed``: the same with ``features`` packed float32 bytes
  (``io.crossinfer.PackedFeatures``);
* ``java-packed-rows``: ``java-packed`` with ``withTransport(Transport.ROWS)``:
  one Beam element per row across the boundary, where the two above use the
  default for bounded input, the batch transport (docs/wire-contract.md).

Same job server (``--runner portable``: Beam's Python job server, or
``prism``), same Python worker pool (the service's environment, and the Python
pipeline's), same rows (the Java source reads the rows the Python source
generates, from a file written here), same spec. Each pipeline is timed from
``run()`` to the end of ``wait_until_finish()`` by the process that runs it:
the Python side here, the Java side in a JVM that stays up for the whole run
(``bench/java/io/crossinfer/bench/XlangBench.java``), so its JIT is warm.

    python -m bench.xlang --elements 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import crossinfer as ci
from bench import harness
from bench.harness import Variant
from bench.models import DIM, BenchModels, dataset, prepare
from bench.pipelines import SHARDS, Synthetic, check, count
from bench.variants import FRAMEWORKS, apply_beam, crossinfer_node, raw_loop
from crossinfer.expansion.local import start_child, start_worker_pool
from crossinfer.expansion.service import READY
from crossinfer.spec.codec import spec_to_json

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".work" / "bench_xlang"
WARM = 2_000
JAVA_MAIN = "io.crossinfer.bench.XlangBench"


def java_classpath() -> str:
    """Compile the Java SDK, its tests and bench/java; the test classpath."""
    WORK.mkdir(parents=True, exist_ok=True)
    cp_file = WORK / "classpath.txt"
    subprocess.run(["mvn", "-B", "-q", "-ntp", "-f", str(ROOT / "java" / "pom.xml"),
                    "test-compile", "dependency:build-classpath", "-Dmdep.includeScope=test",
                    f"-Dmdep.outputFile={cp_file}"], check=True)
    target = ROOT / "java" / "target"
    return os.pathsep.join([str(target / "test-classes"), str(target / "classes"),
                            cp_file.read_text().strip()])


class JavaSide:
    """The JVM running XlangBench: starts the job server, runs pipelines on request."""

    def __init__(self, classpath: str, service: str, data: Path, runner: str,
                 log: IO[str]) -> None:
        env = dict(os.environ, CROSSINFER_PYTHON=sys.executable)
        self.process = subprocess.Popen(
            ["java", "-cp", classpath, JAVA_MAIN, f"--expansion-service={service}",
             f"--data={data}", f"--dim={DIM}", f"--runner={runner}"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            text=True)
        line = self._line()
        if not line.startswith("ready "):
            raise RuntimeError(f"the Java benchmark did not start: {line!r} (log: {log.name})")
        self.job_endpoint = line.split()[1]

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Java benchmark exited ({self.process.poll()})")
        return line.strip()

    def run(self, encoding: str, elements: int, spec_file: Path) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"run {encoding} {elements} {spec_file}\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


_TICKS = os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        try:
            for task in Path(f"/proc/{stack.pop()}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                stack += children
        except (OSError, ValueError):
            continue  # gone meanwhile
    return found


def _tree_cpu_seconds(pid: int) -> float:
    return sum(_own_cpu_seconds(p) for p in [pid, *_descendants(pid)])


class CpuMeter:
    """CPU seconds spent by each process taking part in a run: where the
    work of a pipeline goes (the Python workers, the JVM, the job server)."""

    def __init__(self, pool: int, jvm: int, service: int) -> None:
        self._read = {
            "python workers": lambda: _tree_cpu_seconds(pool),
            "jvm": lambda: _own_cpu_seconds(jvm),
            "job server": lambda: _tree_cpu_seconds(jvm) - _own_cpu_seconds(jvm),  # its child
            "expansion service": lambda: _own_cpu_seconds(service),
            "bench process": time.process_time,
        }

    def read(self) -> dict[str, float]:
        return {name: read() for name, read in self._read.items()}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: round(v - before[k], 3) for k, v in self.read().items()}


def java_variant(java: JavaSide, encoding: str, n: int, spec_file: Path, meter: CpuMeter):
    def once() -> dict[str, Any]:
        before = meter.read()
        got = java.run(encoding, n, spec_file)
        if got.get("state") != "DONE" or got["results"] + got["failures"] != n:
            raise RuntimeError(f"Java pipeline ({encoding}, {n} elements): {got}")
        if got["failures"]:
            raise RuntimeError(f"crossinfer reported {got['failures']} failures: {got}")
        return {"wall_s": got["wall_s"], "failures": got["failures"],
                "cpu_s_last_round": meter.since(before)}

    return once


def python_variant(n: int, options: list[str], meter: CpuMeter,
                   apply: Callable[[beam.PCollection], None]):
    """A Python pipeline on the same job server and workers: the source's
    rows through ``apply``, which counts its outputs (``out``, ``failed``)."""
    def once() -> dict[str, Any]:
        pipeline = beam.Pipeline(options=PipelineOptions(options))
        apply(pipeline | Synthetic(n))
        before = meter.read()
        start = time.perf_counter()
        result = pipeline.run()
        result.wait_until_finish()
        wall = time.perf_counter() - start
        cpu = meter.since(before)
        got = check(result, n, "out", "failed")
        if got["failed"]:
            raise RuntimeError(f"crossinfer reported {got['failed']} failures")
        return {"wall_s": wall, "failures": got["failed"], "cpu_s_last_round": cpu}

    return once


def crossinfer_model(node: ci.ModelNode) -> Callable[[beam.PCollection], None]:
    def apply(rows: beam.PCollection) -> None:
        out = rows | ci.Model(node)
        count(out.results, "out")
        count(out.failures, "failed")

    return apply


def plain_beam(framework: str, models: BenchModels) -> Callable[[beam.PCollection], None]:
    return lambda rows: count(apply_beam(rows, framework, models), "out")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--runner", choices=("portable", "prism"), default="prism",
                        help="the local job server: Beam's Python job server or Prism")
    harness.common_args(parser, "xlang")
    args = parser.parse_args(argv)
    # The work runs in the worker pool: its threads are set by the environment
    # it inherits (torch and ONNX Runtime both read OMP_NUM_THREADS).
    harness.apply_common(args)  # this process's raw loops, and OMP_NUM_THREADS
    # The Python pipeline's source (bench.pipelines) must import in the workers.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    if args.runner == "prism":
        subprocess.run(["bash", str(ROOT / "java" / "scripts" / "build-prism.sh")], check=True)

    frameworks = [f for f in args.frameworks.split(",") if f]
    n = args.elements
    models = prepare(Path(".work/bench_models").resolve())
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / f"rows-{n}x{DIM}.f32"
    rows = dataset(n, SHARDS)  # the rows Synthetic(n) makes, in id order
    rows.astype("<f4").tofile(data)
    classpath = java_classpath()

    log = open(WORK / "processes.log", "w")  # for the whole run: closed in the finally below
    pool = start_worker_pool()
    service, line = start_child(
        ["-m", "crossinfer.expansion", "--port", "0", "--environment", "external",
         "--environment-config", pool.address, "--model-root", str(models.root)],
        READY, name="the expansion service", stderr=log)
    address = line.rsplit(" ", 1)[-1]
    java = JavaSide(classpath, address, data, args.runner, log)
    meter = CpuMeter(pool.process.pid, java.process.pid, service.pid)
    python_options = ["--runner=PortableRunner", f"--job_endpoint={java.job_endpoint}",
                      "--environment_type=EXTERNAL", f"--environment_config={pool.address}"]
    print(f"xlang: {n:,} elements, runner {args.runner} ({java.job_endpoint}), expansion "
          f"service {address}, worker pool {pool.address}, {args.repeats} rounds")
    try:
        variants = []
        for fw in frameworks:
            node = crossinfer_node(fw, models)
            spec_file = WORK / f"spec-{fw}.json"
            spec_file.write_text(spec_to_json(ci.InferenceSpec(node)))
            crossinfer_run, beam_run = crossinfer_model(node), plain_beam(fw, models)
            variants += [
                Variant("raw loop (batch 64)", fw, n, raw_loop(fw, models, rows, 64), "raw"),
                Variant("plain Beam RunInference (Python)", fw, n,
                        python_variant(n, python_options, meter, beam_run), "beam",
                        warm=python_variant(WARM, python_options, meter, beam_run)),
                Variant("crossinfer Python-direct", fw, n,
                        python_variant(n, python_options, meter, crossinfer_run), "python",
                        warm=python_variant(WARM, python_options, meter, crossinfer_run)),
                Variant("Java, features ARRAY<DOUBLE>", fw, n,
                        java_variant(java, "array", n, spec_file, meter), "java-array",
                        warm=java_variant(java, "array", WARM, spec_file, meter)),
                Variant("Java, features packed float32", fw, n,
                        java_variant(java, "packed", n, spec_file, meter), "java-packed",
                        warm=java_variant(java, "packed", WARM, spec_file, meter)),
                Variant("Java, packed, one row per element", fw, n,
                        java_variant(java, "packed-rows", n, spec_file, meter),
                        "java-packed-rows",
                        warm=java_variant(java, "packed-rows", WARM, spec_file, meter)),
            ]
        measured = harness.measure(variants, args.repeats)
    finally:
        java.close()
        service.terminate()
        service.wait(timeout=30)
        pool.stop()
        log.close()

    targets = [harness.ratio_target(f"{m.group}: Java ({m.kind[5:]}) / Python-direct", m,
                                    measured, "python", 0.7)
               for m in measured if m.kind.startswith("java-")]
    cpu_lines = [f"  {m.group:<8} {m.name:<34} " + ", ".join(
        f"{k} {v:.2f}" for k, v in m.facts.get("cpu_s_last_round", {}).items()) for m in measured]
    harness.report(args.name, dict(vars(args), runner_endpoint=java.job_endpoint), measured,
                   targets, refs=("raw", "beam", "python"),
                   notes=[f"runner: {args.runner} job server, Python steps in one external "
                          "worker pool; wall clock only (the work runs in other processes)"],
                   details="\n".join(["CPU seconds per process, last round:", *cpu_lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
