"""``--start-worker-pool``: run a worker pool as a child process of the service.

The child is this interpreter (so it has crossinfer and the same frameworks),
listens on a free loopback port, and goes away with the service: it is stopped
on exit, and it exits by itself when the service dies (its stdin is a pipe
from the service, which closes when the service's process ends).

``start_child`` (start a Python child, wait for its ready line) is shared with
the tests, which start the service and its helpers the same way.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from crossinfer.expansion.worker_pool import READY

_START_TIMEOUT_SECS = 120.0


@dataclass
class WorkerPool:
    process: subprocess.Popen[str]
    address: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def start_worker_pool(bind: str = "127.0.0.1") -> WorkerPool:
    """Start the pool and wait for its ready line."""
    process, line = start_child(
        ["-m", "crossinfer.expansion.worker_pool", "--port", "0", "--bind", bind,
         "--exit-with-parent"],
        READY, name="the worker pool", stdin=subprocess.PIPE)
    return WorkerPool(process, line[len(READY):].strip())


def start_child(args: Sequence[str], ready: str, *, name: str,
                stdin: int | None = None, stderr: int | IO[Any] | None = None,
                env: Mapping[str, str] | None = None,
                timeout: float = _START_TIMEOUT_SECS,
                forward_output: bool = True) -> tuple[subprocess.Popen[str], str]:
    """Start ``python args...`` with this interpreter and wait for its ready line.

    The child's first line on stdout must start with ``ready`` and come within
    ``timeout`` seconds; returns the process and that line, stripped. Otherwise
    the child is killed and RuntimeError raised, naming it ``name``. With
    ``forward_output``, its later stdout is copied to our stderr so a chatty
    child never blocks on a full pipe; without, the caller reads the rest.
    """
    process = subprocess.Popen([sys.executable, *args], stdin=stdin, stdout=subprocess.PIPE,
                               stderr=stderr, env=env, text=True)
    stdout = process.stdout
    assert stdout is not None
    line_box: list[str] = []
    reader = threading.Thread(target=lambda: line_box.append(stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    line = line_box[0].strip() if line_box else ""
    if not line.startswith(ready):
        process.kill()
        process.wait()
        raise RuntimeError(f"{name} did not start (exit code {process.poll()}, "
                           f"said {line!r})")
    if forward_output:
        threading.Thread(target=_forward, args=(process.stdout,), daemon=True).start()
    return process, line


def _forward(stream: IO[str]) -> None:
    try:
        for line in stream:
            sys.stderr.write(line)
    except (OSError, ValueError):
        pass  # closed by stop()
