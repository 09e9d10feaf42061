"""``--start-worker-pool``: run a worker pool as a child process of the service.

The child is this interpreter (so it has crossinfer and the same frameworks),
listens on a free loopback port, and goes away with the service: it is stopped
on exit, and it exits by itself when the service dies (its stdin is a pipe
from the service, which closes when the service's process ends).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO

from crossinfer.expansion.worker_pool import READY

_START_TIMEOUT_SECS = 120.0


@dataclass
class WorkerPool:
    process: subprocess.Popen
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
    process = subprocess.Popen(
        [sys.executable, "-m", "crossinfer.expansion.worker_pool", "--port", "0",
         "--bind", bind, "--exit-with-parent"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line_box: list[str] = []
    reader = threading.Thread(target=lambda: line_box.append(process.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT_SECS)
    line = line_box[0].strip() if line_box else ""
    if not line.startswith(READY):
        process.kill()
        process.wait()
        raise RuntimeError(f"the worker pool did not start (exit code {process.poll()}, "
                           f"said {line!r})")
    # Keep draining its stdout (to our stderr) so a chatty worker never blocks
    # on a full pipe.
    threading.Thread(target=_forward, args=(process.stdout,), daemon=True).start()
    return WorkerPool(process, line[len(READY):].strip())


def _forward(stream: IO[str]) -> None:
    try:
        for line in stream:
            sys.stderr.write(line)
    except (OSError, ValueError):
        pass  # closed by stop()
