"""crossinfer's worker pool files each SDK worker under its caller and its id:
TaskManagers sharing a pool ask for the same worker ids (Flink numbers them per
JVM), and one stopping its worker must not stop another's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import worker_pool_main

from crossinfer.expansion.worker_pool import PoolServicer

Servicer = worker_pool_main.BeamFnExternalWorkerPoolServicer


class FakeProcess:
    """Stands in for a worker process (what Beam's servicer Popens)."""

    def __init__(self, command: list[str], **_: Any) -> None:
        self.command = command
        self.terminated = False

    def terminate(self) -> None:
        self.terminated = True

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def kill(self) -> None:
        self.terminated = True


class Caller:
    """A gRPC context: the caller's connection."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[FakeProcess]:
    made: list[FakeProcess] = []

    def popen(command: list[str], **kwargs: Any) -> FakeProcess:
        made.append(FakeProcess(command, **kwargs))
        return made[-1]

    monkeypatch.setattr(worker_pool_main.subprocess, "Popen", popen)
    return made


def start(pool: Servicer, caller: Caller, worker_id: str) -> None:
    request = beam_fn_api_pb2.StartWorkerRequest(worker_id=worker_id)
    request.control_endpoint.url = "localhost:1"
    assert not pool.StartWorker(request, caller).error


def stop(pool: Servicer, caller: Caller, worker_id: str) -> None:
    pool.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=worker_id), caller)


def test_two_callers_with_one_worker_id_stop_only_their_own(started: list[FakeProcess]) -> None:
    pool = PoolServicer(use_process=True)
    tm1, tm2 = Caller("ipv4:127.0.0.1:40001"), Caller("ipv4:127.0.0.1:40002")
    start(pool, tm1, "1-2")
    start(pool, tm2, "1-2")
    assert len(started) == 2 and all('worker_id="1-2"' in p.command[2] for p in started)
    stop(pool, tm1, "1-2")
    assert [p.terminated for p in started] == [True, False]
    stop(pool, tm2, "1-2")
    assert [p.terminated for p in started] == [True, True]


def test_a_stop_for_a_worker_the_caller_did_not_start_stops_nothing(
        started: list[FakeProcess]) -> None:
    pool = PoolServicer(use_process=True)
    start(pool, Caller("ipv4:127.0.0.1:40001"), "1-2")
    stop(pool, Caller("ipv4:127.0.0.1:40002"), "1-2")
    stop(pool, Caller("ipv4:127.0.0.1:40001"), "9-9")
    assert not started[0].terminated


def test_beams_own_servicer_stops_the_wrong_worker(started: list[FakeProcess]) -> None:
    """Why PoolServicer exists: Beam's servicer keys workers by id alone."""
    pool = Servicer(use_process=True)
    tm1, tm2 = Caller("ipv4:127.0.0.1:40001"), Caller("ipv4:127.0.0.1:40002")
    start(pool, tm1, "1-2")
    start(pool, tm2, "1-2")
    stop(pool, tm1, "1-2")
    assert [p.terminated for p in started] == [False, True]  # tm2's, not tm1's


def test_the_worker_pool_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """``python -m crossinfer.expansion.worker_pool`` exits 0 on SIGTERM, as the
    service does (docker stop, systemd, kill)."""
    import signal

    from crossinfer.expansion.worker_pool import READY
    from xlang_fixtures import start_process

    proc = start_process("pool", ["-m", "crossinfer.expansion.worker_pool", "--port", "0"],
                         tmp_path, ready_prefix=READY)
    try:
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(timeout=30) == 0
    finally:
        proc.stop()
