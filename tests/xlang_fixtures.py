"""Shared helpers for the expansion-service tests: real processes, requests, rows.

The process stack (worker pool, Beam's job server, the crossinfer expansion
service) is started once per test session, by whichever test module asks
first, and stopped at session end (and at interpreter exit as a fallback):
pytest would give each module that imports a session fixture its own copy,
so the stack lives in a module-level singleton instead.
"""

# No ``from __future__ import annotations`` here: Beam infers the row schemas
# of Digit/Plain from real annotations (string ones become opaque "any" fields).

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

import apache_beam as beam
import grpc
from apache_beam.portability import common_urns
from apache_beam.portability.api import (
    beam_expansion_api_pb2,
    beam_expansion_api_pb2_grpc,
    beam_runner_api_pb2,
)
from apache_beam.runners import pipeline_context

from crossinfer.expansion.local import start_child

READY_TIMEOUT_SECS = 120.0


class Digit(NamedTuple):
    """An input row: an id, a routing key, a user id and 64 pixels."""

    id: int
    key: Optional[str]  # noqa: UP045 - Beam's schema inference needs typing.Optional
    user: Optional[str]  # noqa: UP045
    pixels: Sequence[float]


class Plain(NamedTuple):
    """The default-named input row: ``features`` and ``key``."""

    id: int
    key: Optional[str]  # noqa: UP045
    features: Sequence[float]


# Schema'd element types must use RowCoder to cross the language boundary.
beam.coders.registry.register_coder(Digit, beam.coders.RowCoder)
beam.coders.registry.register_coder(Plain, beam.coders.RowCoder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = READY_TIMEOUT_SECS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


# ------------------------------------------------------------------ processes


@dataclass
class Proc:
    """A child process whose stderr goes to a log file."""

    name: str
    process: subprocess.Popen
    log: Path
    ready_line: str = ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def start_process(name: str, args: list[str], log_dir: Path, ready_prefix: str | None = None,
                  port: int | None = None, env: dict[str, str] | None = None) -> Proc:
    """Start ``python args...``; wait for a stdout line starting with
    ``ready_prefix`` or for ``port`` to accept connections."""
    log = log_dir / f"{name}.log"
    stderr, full_env = log.open("w"), {**os.environ, **(env or {})}
    if ready_prefix is None:
        proc = Proc(name, subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=stderr, text=True,
            env=full_env), log)
    else:
        # The caller reads the rest of stdout (a test checks the ready line was all).
        try:
            process, line = start_child(args, ready_prefix, name=name, stderr=stderr,
                                        env=full_env, timeout=READY_TIMEOUT_SECS,
                                        forward_output=False)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log:\n{log.read_text(errors='replace')}") from None
        proc = Proc(name, process, log, line)
    if port is not None:
        wait_for_port(port)
    return proc


def service_args(*extra: str) -> list[str]:
    return ["-m", "crossinfer.expansion", "--port", "0", *extra]


SERVICE_READY = "crossinfer expansion service listening on"


@dataclass
class Stack:
    """Worker pool + job server + expansion service, all on free loopback ports."""

    models_root: Path
    log_dir: Path
    pool_port: int
    job_port: int
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def service(self) -> Proc:
        return self.procs["service"]

    @property
    def service_address(self) -> str:
        return self.service.ready_line[len(SERVICE_READY):].strip()

    @property
    def job_endpoint(self) -> str:
        return f"localhost:{self.job_port}"

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()


_STACK: list[Stack] = []
_LOCK = threading.Lock()


def shared_stack(models_root: Path) -> Stack:
    """The session's process stack, started on first use."""
    with _LOCK:
        if _STACK:
            return _STACK[0]
        log_dir = Path(tempfile.mkdtemp(prefix="crossinfer-xlang-"))
        stack = Stack(models_root, log_dir, free_port(), free_port())
        try:
            # Started together: each needs a few seconds to import Beam.
            pool = subprocess_async(stack, "worker_pool", [
                "-m", "crossinfer.expansion.worker_pool", "--port", str(stack.pool_port)],
                ready_prefix="crossinfer worker pool listening on")
            job = subprocess_async(stack, "job_server", [
                "-m", "apache_beam.runners.portability.local_job_service_main",
                "--port", str(stack.job_port)], port=stack.job_port)
            svc = subprocess_async(stack, "service", service_args(
                "--environment", "external",
                "--environment-config", f"localhost:{stack.pool_port}",
                "--model-root", str(models_root)), ready_prefix=SERVICE_READY)
            for starter in (pool, job, svc):
                starter.join()
            missing = [n for n in ("worker_pool", "job_server", "service")
                       if n not in stack.procs]
            if missing:
                raise RuntimeError(f"could not start {missing}; logs in {log_dir}")
        except BaseException:
            stack.stop()
            raise
        _STACK.append(stack)
        atexit.register(stop_shared_stack)
        return stack


class _Starter(threading.Thread):
    def __init__(self, stack: Stack, name: str, args: list[str], **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self._stack, self._name, self._args, self._kwargs = stack, name, args, kwargs

    def run(self) -> None:
        try:
            self._stack.procs[self._name] = start_process(
                self._name, self._args, self._stack.log_dir, **self._kwargs)
        except Exception as exc:  # reported by shared_stack as missing
            print(f"{self._name}: {exc}", file=sys.stderr)


def subprocess_async(stack: Stack, name: str, args: list[str], **kwargs: Any) -> _Starter:
    starter = _Starter(stack, name, args, **kwargs)
    starter.start()
    return starter


def stop_shared_stack() -> None:
    with _LOCK:
        while _STACK:
            _STACK.pop().stop()


# ------------------------------------------------------------------ requests


def expansion_stub(address: str) -> beam_expansion_api_pb2_grpc.ExpansionServiceStub:
    channel = grpc.insecure_channel(address)
    return beam_expansion_api_pb2_grpc.ExpansionServiceStub(channel)


def build_request(urn: str, payload: bytes, element_type: type = Plain,
                  unique_name: str = "crossinfer_test") -> beam_expansion_api_pb2.ExpansionRequest:
    """An ExpansionRequest shaped like the one Beam's ExternalTransform sends: the
    input PCollection's components plus a fake Impulse producing it."""
    pipeline = beam.Pipeline()
    pcoll = pipeline | beam.Create([]).with_output_types(element_type)
    context = pipeline_context.PipelineContext(component_id_map=pipeline.component_id_map)
    pcoll_id = context.pcollections.get_id(pcoll)
    context.transforms.put_proto("IMPULSE_input", beam_runner_api_pb2.PTransform(
        unique_name="IMPULSE_input",
        spec=beam_runner_api_pb2.FunctionSpec(urn=common_urns.primitives.IMPULSE.urn),
        outputs={"out": pcoll_id}))
    transform = beam_runner_api_pb2.PTransform(
        unique_name=unique_name,
        spec=beam_runner_api_pb2.FunctionSpec(urn=urn, payload=payload),
        inputs={"input": pcoll_id})
    return beam_expansion_api_pb2.ExpansionRequest(
        components=context.to_runner_api(), transform=transform, namespace="test",
        pipeline_options=pipeline.options.to_runner_api())


def assert_valid_expansion(response: beam_expansion_api_pb2.ExpansionResponse) -> None:
    """An expansion without error, with Row-coded ``results`` and ``failures``."""
    assert not response.error, response.error
    outputs = dict(response.transform.outputs)
    assert set(outputs) == {"results", "failures"}, outputs
    for pcoll_id in outputs.values():
        coder_id = response.components.pcollections[pcoll_id].coder_id
        assert response.components.coders[coder_id].spec.urn == common_urns.coders.ROW.urn


# ------------------------------------------------------------------ collecting outputs

#: Outputs collected by pipelines whose client-side steps run in this process
#: (the FnApiRunner, or PortableRunner with a LOOPBACK client environment).
STORE: dict[str, list[Any]] = defaultdict(list)


class Collect:
    """A picklable sink into STORE (Beam pickles DoFns; this pickles by reference)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> None:
        STORE[self.name].append(value)
