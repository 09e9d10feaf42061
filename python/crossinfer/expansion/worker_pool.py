"""A Python SDK worker pool bound to one address (``python -m crossinfer.expansion.worker_pool``).

Beam's ``worker_pool_main`` binds every interface (``[::]``). A worker pool runs
whatever pipeline a caller's control plane sends, so the service's
``--start-worker-pool`` starts this one instead: Beam's own worker pool
servicer, bound to loopback by default. It prints
``crossinfer worker pool listening on HOST:PORT`` when ready and, with
``--exit-with-parent``, exits when its stdin closes (the parent died).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from concurrent import futures

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
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


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(server: grpc.Server, bind: str, port: int) -> int:
    """Bind ``server``; the port it got, or OSError with a readable message."""
    address = grpc_address(bind, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError when the bind fails
        raise OSError(f"cannot listen on {address}: the port is in use or the address is "
                      "not local") from exc
    if not bound:
        raise OSError(f"cannot listen on {address}")
    return bound


def serve(bind: str, port: int) -> tuple[grpc.Server, int]:
    # No SO_REUSEPORT: a busy port must fail, not be shared with another pool.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.so_reuseport", 0)])
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        BeamFnExternalWorkerPoolServicer(), server)
    bound = listen(server, bind, port)
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossinfer.expansion.worker_pool",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=port_number, default=0,
                        help="port, 0..65535 (0: pick a free one)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when stdin reaches end of file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        server, port = serve(args.bind, args.port)
    except OSError as exc:
        print(f"worker pool: error: {exc}", file=sys.stderr)
        return 2
    print(f"{READY} {grpc_address(args.bind, port)}", flush=True)
    done = threading.Event()
    if args.exit_with_parent:
        def watch() -> None:
            sys.stdin.read()
            done.set()
        threading.Thread(target=watch, daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop(grace=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
