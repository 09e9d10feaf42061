"""The service as a command: ready line, loopback bind, --start-worker-pool's child,
shutdown, and the loopback worker environment running a real pipeline."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from crossinfer.expansion import ExternalInference, encode_payload
from crossinfer.expansion.service import build_parser, start
from crossinfer.expansion.urns import SEQUENCE_URN
from xlang_fixtures import (
    SERVICE_READY,
    STORE,
    Collect,
    Plain,
    assert_valid_expansion,
    build_request,
    expansion_stub,
    service_args,
    shared_stack,
    start_process,
    wait_for_port,
)

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...; comm may contain spaces, so split after ')'
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting to be reaped by its (dead) parent
            return True
        time.sleep(0.2)
    return False


def sequence_request(models: Any) -> Any:
    return build_request(SEQUENCE_URN, encode_payload((models.root / "sequence.json")
                                                      .read_text()))


@pytest.fixture
def pool_service(models: Any, tmp_path: Path) -> Any:
    proc = start_process("service_with_pool", service_args(
        "--start-worker-pool", "--model-root", str(models.root)), tmp_path,
        ready_prefix=SERVICE_READY)
    yield proc
    proc.stop()
    for child in children_of(proc.process.pid):
        os.kill(child, signal.SIGKILL)


def test_start_worker_pool_serves_and_stops_with_the_service(pool_service: Any,
                                                             models: Any) -> None:
    address = pool_service.ready_line[len(SERVICE_READY):].strip()
    assert address.startswith("127.0.0.1:")  # loopback by default
    (child,) = children_of(pool_service.process.pid)
    cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    assert b"crossinfer.expansion.worker_pool" in cmdline

    response = expansion_stub(address).Expand(sequence_request(models), timeout=60)
    assert_valid_expansion(response)
    (env,) = [e for e in response.components.environments.values()
              if e.urn == common_urns.environments.EXTERNAL.urn]
    pool_url = beam_runner_api_pb2.ExternalPayload.FromString(env.payload).endpoint.url
    assert pool_url.startswith("127.0.0.1:")
    wait_for_port(int(pool_url.rsplit(":", 1)[1]), timeout=5)

    pool_service.process.send_signal(signal.SIGTERM)
    assert pool_service.process.wait(timeout=30) == 0
    assert gone(child)
    assert pool_service.process.stdout.read() == ""  # the ready line was the only output
    assert "outcome=ok" in pool_service.log_text()


def test_worker_pool_exits_when_the_service_is_killed(pool_service: Any) -> None:
    (child,) = children_of(pool_service.process.pid)
    pool_service.process.kill()
    pool_service.process.wait()
    assert gone(child)


def test_loopback_environment_runs_a_pipeline(models: Any,
                                              digits_data: tuple[Any, Any]) -> None:
    """The default environment: the service process is its own worker pool.
    Started in this process, against the shared job server."""
    stack = shared_stack(models.root)
    running = start(build_parser().parse_args(
        ["--port", "0", "--model-root", str(models.root)]))
    try:
        x = digits_data[0]
        rows = [Plain(i, None, [float(v) for v in x[i]]) for i in range(12)]
        options = PipelineOptions(runner="PortableRunner", job_endpoint=stack.job_endpoint,
                                  environment_type="LOOPBACK")
        with beam.Pipeline(options=options) as p:
            out = (p | beam.Create(rows).with_output_types(Plain)
                   | ExternalInference(json.loads((models.root / "sequence.json").read_text()),
                                       running.address))
            _ = out.results | beam.Map(Collect("loopback/results"))
        results = STORE.pop("loopback/results", [])
        assert sorted(r.id for r in results) == list(range(12))
        assert {r.path for r in results} == {"digits_seq/digits_pca_mlp"}
    finally:
        running.stop()


def test_once_ready_the_service_imports_what_a_first_expansion_needs(
        models: Any, tmp_path: Path) -> None:
    """docs/service.md, "Start-up": after the ready line the service imports the
    patterns and the frameworks' libraries in the background (a first request
    took 5 to 12 s without it), logs what it imported, and answers meanwhile."""
    from crossinfer.expansion.service import WARM_MODULES

    proc = start_process("warm_up", service_args("--model-root", str(models.root)), tmp_path,
                         ready_prefix=SERVICE_READY)
    try:
        address = proc.ready_line[len(SERVICE_READY):].strip()
        response = expansion_stub(address).Expand(sequence_request(models), timeout=300)
        assert not response.error, response.error
        deadline = time.monotonic() + 300
        while "warm-up: imported" not in proc.log_text():
            assert proc.alive() and time.monotonic() < deadline, proc.log_text()
            time.sleep(0.5)
        line = next(x for x in proc.log_text().splitlines() if "warm-up: imported" in x)
        imported = line.split("warm-up: imported ", 1)[1].rsplit(" in ", 1)[0].split(", ")
        # every module of the list is installed in the test environment
        assert imported == list(WARM_MODULES), line
    finally:
        proc.stop()
