"""The expansion service under load: a one-model expansion's latency while heavy ones run.

``python -m bench.service_latency`` starts the service (as a process, default
flags plus ``--environment external``: expansion only, no pipeline runs), then
times ``--samples`` one-model expansions (the demo's LogisticRegression, one
after the other) three ways, in one run:

* **idle**: nothing else in flight;
* **loaded**: ``--heavy`` client threads keep sending large specs (an A/B test
  of 15 arms, each a sequence of three models: 61 nodes, about the most the
  default ``--max-nodes 64`` allows) as fast as the service answers them;
* **loaded, one lane**: the same, against a service whose small-spec lane is
  switched off (``SMALL_SPEC_NODES = 0`` in the service process, so every spec
  queues in one lane) with ``--max-concurrent-expansions 8`` - every
  expansion competes for the GIL, which is how the service behaved before it
  had admission control.

It prints p50 / p95 / max per case and the ratios to idle, and writes
``bench/results/service_latency.json``. Heavy requests the service refused
(``RESOURCE_EXHAUSTED``: their lane's queue was full) are counted, not timed.
Not a test: nothing asserts on timing.
"""

import argparse
import copy
import json
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import grpc
from apache_beam.portability import common_urns
from apache_beam.portability.api import (
    beam_expansion_api_pb2,
    beam_expansion_api_pb2_grpc,
    beam_runner_api_pb2,
)
from apache_beam.runners import pipeline_context

from crossinfer.demo import train_demo_models
from crossinfer.expansion import encode_payload
from crossinfer.expansion.local import start_child
from crossinfer.expansion.service import READY
from crossinfer.expansion.urns import AB_TEST_URN, MODEL_URN

RESULTS = Path(__file__).parent / "results"


class Plain(NamedTuple):
    id: int
    features: Sequence[float]


beam.coders.registry.register_coder(Plain, beam.coders.RowCoder)


def request(urn: str, spec: dict[str, Any]) -> beam_expansion_api_pb2.ExpansionRequest:
    """An ExpansionRequest like Beam's ExternalTransform sends, for Rows of ``Plain``."""
    pipeline = beam.Pipeline()
    pcoll = pipeline | beam.Create([]).with_output_types(Plain)
    context = pipeline_context.PipelineContext(component_id_map=pipeline.component_id_map)
    pcoll_id = context.pcollections.get_id(pcoll)
    context.transforms.put_proto("input", beam_runner_api_pb2.PTransform(
        unique_name="input", outputs={"out": pcoll_id},
        spec=beam_runner_api_pb2.FunctionSpec(urn=common_urns.primitives.IMPULSE.urn)))
    transform = beam_runner_api_pb2.PTransform(
        unique_name="bench", inputs={"input": pcoll_id},
        spec=beam_runner_api_pb2.FunctionSpec(urn=urn,
                                              payload=encode_payload(json.dumps(spec))))
    return beam_expansion_api_pb2.ExpansionRequest(
        components=context.to_runner_api(), transform=transform, namespace="bench")


def specs(models_root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(one model, 61 nodes) from the demo specs."""
    ab = json.loads((models_root / "ab.json").read_text())
    seq = json.loads((models_root / "sequence.json").read_text())["node"]
    lr, mlp = (arm["node"] for arm in ab["node"]["arms"])
    arms = []
    for i in range(15):
        stages = [copy.deepcopy(n) for n in (*seq["stages"], mlp)]
        for j, stage in enumerate(stages):
            stage["name"] = f"m{i}_{j}"
        arms.append({"name": f"arm{i}", "weight": 1,
                     "node": {"kind": "sequence", "name": f"seq{i}", "stages": stages}})
    heavy = {"version": 1, "node": {"kind": "ab_test", "name": "heavy", "arms": arms}}
    return {"version": 1, "node": lr}, heavy


def start_service(models_root: Path, *flags: str, one_lane: bool = False) -> Any:
    args = ["-m", "crossinfer.expansion", "--port", "0", "--environment", "external",
            "--environment-config", "127.0.0.1:1", "--model-root", str(models_root),
            "--log-level", "WARNING", *flags]
    if one_lane:  # every spec in the large lane: the service before admission control
        args = ["-c", "import sys; import crossinfer.expansion.admission as a; "
                "a.SMALL_SPEC_NODES = 0; from crossinfer.expansion.service import main; "
                "sys.argv[0] = 'service'; main(sys.argv[1:])", *args[2:]]
    process, line = start_child(args, READY, name="the expansion service")
    return process, line[len(READY):].strip()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(address: str, light: Any, heavy: Any, samples: int, threads: int) -> dict:
    stub = beam_expansion_api_pb2_grpc.ExpansionServiceStub(grpc.insecure_channel(address))
    assert not stub.Expand(light, timeout=120).error
    stop = threading.Event()
    counts = {"heavy_ok": 0, "heavy_refused": 0}
    lock = threading.Lock()

    def hammer() -> None:
        own = beam_expansion_api_pb2_grpc.ExpansionServiceStub(grpc.insecure_channel(address))
        while not stop.is_set():
            try:
                response = own.Expand(heavy, timeout=300)
                key = "heavy_ok" if not response.error else "heavy_error"
            except grpc.RpcError as exc:
                key = "heavy_refused"
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                time.sleep(0.2)
            with lock:
                counts[key] = counts.get(key, 0) + 1

    workers = [threading.Thread(target=hammer, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    if threads:
        time.sleep(3.0)  # let the heavy requests pile up first
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        response = stub.Expand(light, timeout=300)
        times.append(time.perf_counter() - start)
        assert not response.error, response.error
    stop.set()
    for w in workers:
        w.join()
    return {"p50_s": statistics.median(times), "p95_s": percentile(times, 0.95),
            "max_s": max(times), "samples": len(times), **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service_latency",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--heavy", type=int, default=8, help="heavy client threads")
    parser.add_argument("--models", default=".work/demo_models")
    parser.add_argument("--name", default="service_latency")
    args = parser.parse_args(argv)
    root = train_demo_models(args.models).root.resolve()
    light_spec, heavy_spec = specs(root)
    light, heavy = request(MODEL_URN, light_spec), request(AB_TEST_URN, heavy_spec)
    cases: dict[str, dict] = {}
    for case, flags, one_lane, threads in (
            ("idle", (), False, 0),
            ("loaded", (), False, args.heavy),
            ("loaded, one lane", ("--max-concurrent-expansions", str(args.heavy)), True,
             args.heavy)):
        process, address = start_service(root, *flags, one_lane=one_lane)
        try:
            cases[case] = measure(address, light, heavy, args.samples, threads)
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(f"{case:>17}: p50 {cases[case]['p50_s']:.3f} s  p95 {cases[case]['p95_s']:.3f} s"
              f"  max {cases[case]['max_s']:.3f} s  "
              + "  ".join(f"{k} {v}" for k, v in cases[case].items() if k.startswith("heavy")),
              flush=True)
    idle = cases["idle"]
    for case in ("loaded", "loaded, one lane"):
        print(f"{case} / idle: p50 x{cases[case]['p50_s'] / idle['p50_s']:.1f}, "
              f"p95 x{cases[case]['p95_s'] / idle['p95_s']:.1f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"cases": cases, "heavy_nodes": 61, "heavy_threads": args.heavy}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
