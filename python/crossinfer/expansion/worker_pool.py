"""A Python SDK worker pool bound to one address (``python -m crossinfer.expansion.worker_pool``).

Beam's ``worker_pool_main`` binds every interface (``[::]``). A worker pool runs
whatever pipeline a caller's control plane sends, so the service's
``--start-worker-pool`` starts this one instead: Beam's own worker pool
servicer, bound to loopback by default. It prints
``crossinfer worker pool listening on HOST:PORT`` when ready and, with
``--exit-with-parent``, exits when its stdin closes (the parent died).

Each SDK worker the runner asks for is a thread of this process (Beam's
default), so workers share one GIL; with ``--processes`` each is a process of
its own (``python`` from the PATH, as Beam's ``worker_pool_main`` does), so the
workers of several TaskManagers on one host run in parallel. Workers are told
apart by who asked for them (:class:`PoolServicer`), so several TaskManagers
can share one pool.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

READY = "crossinfer worker pool listening on"


def port_number(text: str) -> int:
    """An argparse type: a port, 0..65535 (0: pick a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected 0..65535, got {value}")
    return value


class PoolServicer(BeamFnExternalWorkerPoolServicer):
    """Beam's worker pool servicer, with each worker filed under its caller's
    connection as well as its id.

    Beam's servicer files a worker under the id the runner gives it. A Flink
    TaskManager numbers its workers per JVM (``1-1``, ``1-2``, ... per job), so
    TaskManagers sharing a pool ask for the same ids, and when one stops its
    worker (when its cached environment expires), Beam's servicer stops
    whichever worker was filed last under that id: another TaskManager's, in
    the middle of that one's job (seen on a 2-TaskManager cluster: the job
    waits for the killed worker, then fails). A caller starts and stops a
    worker over one connection, so its address tells the workers apart.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()

    def _tables(self) -> tuple[dict[Any, Any], ...]:
        # Beam 2.77's bookkeeping: worker id -> process, worker id -> harness.
        return self._worker_processes, self._worker_threads

    def StartWorker(self, request: beam_fn_api_pb2.StartWorkerRequest,
                    context: Any) -> beam_fn_api_pb2.StartWorkerResponse:
        with self._lock:
            response = super().StartWorker(request, context)
            for table in self._tables():
                if request.worker_id in table:
                    table[(context.peer(), request.worker_id)] = table.pop(request.worker_id)
        return response

    def StopWorker(self, request: beam_fn_api_pb2.StopWorkerRequest,
                   context: Any) -> beam_fn_api_pb2.StopWorkerResponse:
        key = (context.peer(), request.worker_id)
        with self._lock:
            found = False
            for table in self._tables():
                if key in table:
                    table[request.worker_id] = table.pop(key)
                    found = True
            if not found:  # not this caller's: stop nothing
                return beam_fn_api_pb2.StopWorkerResponse()
            return super().StopWorker(request, context)


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_error(address: str) -> OSError:
    """The error for an address gRPC could not bind."""
    return OSError(f"cannot listen on {address}: the port is in use or the address is not "
                   "local")


def listen(server: grpc.Server, bind: str, port: int) -> int:
    """Bind ``server``; the port it got, or OSError with a readable message."""
    address = grpc_address(bind, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError when the bind fails
        raise bind_error(address) from exc
    if not bound:
        raise bind_error(address)
    return int(bound)


def serve(bind: str, port: int, processes: bool = False) -> tuple[grpc.Server, int]:
    # No SO_REUSEPORT: a busy port must fail, not be shared with another pool.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.so_reuseport", 0)])
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        PoolServicer(use_process=processes), server)
    bound = listen(server, bind, port)
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossinfer.expansion.worker_pool",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=port_number, default=0,
                        help="port, 0..65535 (0: pick a free one; default: %(default)s)")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; the pool runs any "
                             "pipeline sent to it, so keep it private)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when stdin reaches end of file (default: off)")
    parser.add_argument("--processes", action="store_true",
                        help="start each SDK worker as a process (python on the PATH) instead "
                             "of a thread of this one (default: threads)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    done = threading.Event()
    # SIGTERM (docker stop, kill, systemd) stops it like Ctrl-C: exit status 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        server, port = serve(args.bind, args.port, args.processes)
    except OSError as exc:
        print(f"worker pool: error: {exc}", file=sys.stderr)
        return 2
    print(f"{READY} {grpc_address(args.bind, port)}", flush=True)
    if args.exit_with_parent:
        def watch() -> None:
            sys.stdin.read()
            done.set()
        threading.Thread(target=watch, daemon=True).start()
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    server.stop(grace=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
