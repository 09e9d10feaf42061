"""A Go pipeline calls crossinfer through the expansion service, on Prism and on
Beam's Python job server (any SDK may: docs/wire-contract.md).

The pipeline is tests/go/main.go (Beam Go SDK v2.77.0, ``beam.CrossLanguage``),
built by tests/go/build.sh (``make test`` builds it; the first build compiles
the Beam Go SDK). It reads the 1,797 digits plus two bad rows, applies the demo
keyed spec through the service, and writes its results and failures. Every
input must come out exactly once, the bad rows as failures with their message,
the others with the results crossinfer's Python transform gives them.

Two faults kept Go off Prism, each reproduced when its fix is reverted: the
service answered with a stand-in producer of the input (the Go SDK sends its
input without one; Prism refused the merged job: "two producers for one
PCollection"), and Prism read a Python worker's metric short ids as the Go
worker's ("error decoding metrics beam:metric:sampled_byte_size:v1 ... EOF";
java/scripts/prism-patches/0002-metric-short-ids-per-worker.patch).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest

import crossinfer as ci
from crossinfer.expansion import environments, payload
from crossinfer.expansion.servicer import CrossinferExpansionServicer
from crossinfer.expansion.urns import urn_for_node
from crossinfer.spec import load_spec
from support import DIGITS_TOL, assert_same_label, run
from xlang_fixtures import Plain, build_request, free_port, shared_stack, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".tools" / "bin" / "crossinfer-go-e2e"
PRISM = ROOT / ".tools" / "bin" / "prism"
KEYS = ("sklearn", "torch", "onnx", "pytorch")
NAN_ID, EMPTY_ID = 5000, 5001


def _built(tool: Path, script: Path, what: str) -> Path:
    """``tool``, built by ``script`` when missing; the test is skipped, saying
    why, only when it cannot be built."""
    if not tool.exists():
        if shutil.which("go") is None:
            pytest.skip(f"SKIPPED: no {tool} and no Go to build {what} with {script}")
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                              timeout=1200)
        if done.returncode != 0:
            pytest.skip(f"SKIPPED: {script} could not build {what}: {done.stderr[-2000:]}")
    return tool


@pytest.fixture(scope="module")
def job(models: Any, digits_data: tuple[np.ndarray, np.ndarray],
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The input file, the spec file and what crossinfer's Python transform
    makes of the same rows."""
    x, _ = digits_data
    root = tmp_path_factory.mktemp("go")
    lines = [{"id": i, "key": KEYS[i % len(KEYS)], "features": x[i].tolist(), "nan_at": -1}
             for i in range(len(x))]
    lines += [{"id": NAN_ID, "key": "sklearn", "features": x[0].tolist(), "nan_at": 3},
              {"id": EMPTY_ID, "key": "torch", "features": [], "nan_at": -1}]
    (root / "rows.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec_text = (models.root / "keyed.json").read_text()
    (root / "spec.json").write_text(spec_text)
    rows = [beam.Row(id=r["id"], key=r["key"], features=np.asarray(
        [math.nan if j == r["nan_at"] else v for j, v in enumerate(r["features"])],
        np.float64)) for r in lines]
    results, failures, _ = run(rows, ci.Inference(spec_text))
    return {"root": root, "ids": sorted(r["id"] for r in lines),
            "urn": urn_for_node(load_spec(spec_text).node),
            "results": {r.id: r for r in results},
            "failures": {f.element.id: f for f in failures}}


def run_go(job: dict[str, Any], service: str, endpoint: str, name: str) -> tuple[dict, dict]:
    binary = _built(BINARY, ROOT / "tests" / "go" / "build.sh", "the Go pipeline")
    out = job["root"] / name
    out.mkdir()
    done = subprocess.run([
        str(binary), f"--input={job['root'] / 'rows.jsonl'}", f"--spec={job['root'] / 'spec.json'}",
        f"--urn={job['urn']}", f"--expansion_addr={service}", f"--results={out / 'results'}",
        f"--failures={out / 'failures'}", "--runner=universal", f"--endpoint={endpoint}",
        "--environment_type=LOOPBACK"], capture_output=True, text=True, timeout=600)
    (out / "go.log").write_text(done.stderr)
    assert done.returncode == 0, f"the Go pipeline failed; log: {out / 'go.log'}\n" \
                                 f"{done.stderr[-3000:]}"

    def read(path: Path) -> dict[int, dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        by_id = {r["id"]: r for r in rows}
        assert len(by_id) == len(rows), f"an element came out twice in {path}"
        return by_id

    return read(out / "results"), read(out / "failures")


def check(job: dict[str, Any], results: dict[int, dict], failures: dict[int, dict]) -> None:
    assert sorted([*results, *failures]) == job["ids"], "results + failures == inputs"
    assert sorted(failures) == sorted(job["failures"]) == [NAN_ID, EMPTY_ID]
    for i, failure in failures.items():
        want = job["failures"][i]
        assert (failure["node"], failure["error"]) == (want.node, want.error)
    assert "contains NaN or infinity (first at index 3)" in failures[NAN_ID]["error"]
    for i, result in results.items():
        want = job["results"][i]
        assert (result["model"], result["path"]) == (want.model, want.path), i
        np.testing.assert_allclose(result["inference"], want.inference, **DIGITS_TOL)
        assert_same_label(result["label"], want.label, want.inference, DIGITS_TOL["atol"])


def test_the_response_hands_back_no_producer_the_client_did_not_send(models) -> None:
    """What the Go SDK sends: the input PCollection and no producer of it."""
    spec_text = (models.root / "sequence.json").read_text()
    service = CrossinferExpansionServicer(
        ci.LoadPolicy(model_roots=(str(models.root),)),
        environments.build_environment("external", "localhost:1"))
    with_producer = build_request(urn_for_node(load_spec(spec_text).node),
                                  payload.encode_payload(spec_text), Plain)
    without = type(with_producer)()
    without.CopyFrom(with_producer)
    del without.components.transforms["IMPULSE_input"]
    (input_id,) = with_producer.transform.inputs.values()
    for request in (with_producer, without):
        response = service.Expand(request)
        assert not response.error, response.error
        producers = {tid for tid, t in response.components.transforms.items()
                     if input_id in t.outputs.values()}
        # Beam clients' own producer keeps its id (Java and Python merge it); none is made up.
        assert producers == set(request.components.transforms) & {"IMPULSE_input"}


@pytest.mark.slow
def test_a_go_pipeline_on_beams_python_job_server(models, job) -> None:
    stack = shared_stack(models.root)
    check(job, *run_go(job, stack.service_address, stack.job_endpoint, "python_job_server"))


@pytest.mark.slow
def test_a_go_pipeline_on_prism(models, job) -> None:
    stack = shared_stack(models.root)
    prism = _built(PRISM, ROOT / "java" / "scripts" / "build-prism.sh", "Prism")
    port = free_port()
    log = job["root"] / "prism.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(prism), f"--job_port={port}", "--serve_http=false",
                                    "--log_level=warn"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        check(job, *run_go(job, stack.service_address, f"localhost:{port}", "prism"))
    finally:
        process.terminate()
        process.wait(timeout=30)
