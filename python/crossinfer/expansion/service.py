"""``crossinfer-expansion-service``: the command that serves crossinfer to any Beam SDK.

Starts a gRPC server with crossinfer's expansion servicer (and, for the
``loopback`` environment, a worker pool on the same port), prints exactly one
line ``crossinfer expansion service listening on HOST:PORT`` to stdout when it
accepts requests, logs one line per expansion to stderr, and stops cleanly on
SIGTERM / SIGINT (stopping a ``--start-worker-pool`` child too).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc

from crossinfer.expansion.environments import (
    KINDS,
    EnvironmentConfigError,
    build_environment,
    describe,
)
from crossinfer.expansion.local import WorkerPool, start_worker_pool
from crossinfer.expansion.worker_pool import grpc_address, listen
from crossinfer.policy import BUILTIN_CLASSES, LoadPolicy

READY = "crossinfer expansion service listening on"
_LOG = logging.getLogger("crossinfer.expansion")

#: Requests carry a spec and a few protos; 16 MiB is far above any real one.
_MAX_MESSAGE_BYTES = 16 << 20

_DESCRIPTION = """\
Serve crossinfer's inference transforms (model, ab_test, sequence, keyed) to Beam
pipelines in any language through Beam's expansion service protocol.

URNs: beam:transform:crossinfer:{model,ab_test,sequence,keyed}:v1, payload and
outputs as in docs/wire-contract.md. Only these URNs are expanded; requests
carrying code (pickled objects, Python source, other transforms) are refused.
"""

_EPILOG = """\
worker environments (where the expanded transforms run; workers need crossinfer):
  loopback   this process also serves as the worker pool (default; development)
  external   a worker pool at --environment-config HOST:PORT
  process    the runner starts --environment-config COMMAND per worker
  docker     the runner starts --environment-config IMAGE
  --start-worker-pool starts a loopback-bound worker pool as a child process
  and uses it as the external environment.

model locations: models load only from under --model-root (repeatable; local
directories or URI prefixes like gs://bucket/models). Without --model-root,
only the current working directory is allowed.

examples:
  crossinfer-expansion-service --port 8097 --model-root /srv/models
  python -m crossinfer.expansion --port 0 --start-worker-pool --model-root ./models
  crossinfer-expansion-service --port 8097 --environment external \\
      --environment-config localhost:50000 --model-root /srv/models --require-sha256
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossinfer-expansion-service", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    net = parser.add_argument_group("network")
    net.add_argument("--port", type=int, default=8097,
                     help="port to listen on; 0 picks a free one (default: %(default)s)")
    net.add_argument("--bind", default="127.0.0.1",
                     help="address to listen on (default: %(default)s, loopback only; use "
                          "0.0.0.0 to accept other hosts)")
    env = parser.add_argument_group("worker environment")
    env.add_argument("--environment", choices=KINDS, default=None,
                     help="where expanded transforms run (default: loopback, or external "
                          "with --start-worker-pool)")
    env.add_argument("--environment-config", metavar="VALUE", default=None,
                     help="external: HOST:PORT of a worker pool; process: COMMAND; "
                          "docker: IMAGE")
    env.add_argument("--start-worker-pool", action="store_true",
                     help="start a Python worker pool (this interpreter, loopback, free "
                          "port) as a child process and use it as the external environment; "
                          "it is stopped when the service exits")
    pol = parser.add_argument_group("what specs may load")
    pol.add_argument("--model-root", action="append", default=[], metavar="DIR",
                     help="directory or URI prefix models must live under (repeatable; "
                          "default: the current working directory only)")
    pol.add_argument("--allow-class", action="append", default=[], metavar="PATTERN",
                     help="glob over 'package.module:Name' that specs may name as "
                          "model_class/handler_class (repeatable; always allowed: "
                          f"{', '.join(BUILTIN_CLASSES)})")
    pol.add_argument("--require-sha256", action="store_true",
                     help="refuse specs whose models have no sha256 pin")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log level for stderr (default: %(default)s)")
    return parser


def build_policy(model_roots: Sequence[str], allow_classes: Sequence[str],
                 require_sha256: bool) -> LoadPolicy:
    for pattern in allow_classes:
        module = pattern.partition(":")[0]
        if not module or module.startswith("*") or ":" not in pattern:
            raise ValueError(f"--allow-class {pattern!r}: name the module, as in "
                             "'mypackage.models:*'; wildcards over modules would let a spec "
                             "import anything")
    roots = tuple(model_roots) or (os.getcwd(),)
    roots = tuple(os.path.abspath(r) if "://" not in r else r for r in roots)
    return LoadPolicy(allowed_classes=BUILTIN_CLASSES + tuple(allow_classes),
                      model_roots=roots, require_sha256=require_sha256, check_files=True)


@dataclass
class RunningService:
    """A started service: its server, address and (optional) worker pool child."""

    server: grpc.Server
    address: str
    worker_pool: WorkerPool | None = None

    def stop(self, grace: float | None = 2.0) -> None:
        self.server.stop(grace).wait()
        if self.worker_pool is not None:
            self.worker_pool.stop()


def start(args: argparse.Namespace) -> RunningService:
    """Start serving per the parsed flags (tests call this in-process)."""
    from apache_beam.portability.api import beam_expansion_api_pb2_grpc, beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    from crossinfer.expansion.servicer import CrossinferExpansionServicer

    policy = build_policy(args.model_root, args.allow_class, args.require_sha256)
    kind = args.environment or ("external" if args.start_worker_pool else "loopback")
    if args.start_worker_pool and kind != "external":
        raise EnvironmentConfigError("--start-worker-pool uses the external environment; "
                                     f"drop --environment {kind}")
    if args.environment_config and (kind == "loopback" or args.start_worker_pool):
        # Silently ignoring it would leave the user believing workers run there.
        raise EnvironmentConfigError("--environment-config is not used with "
                                     + ("--start-worker-pool" if args.start_worker_pool
                                        else "--environment loopback"))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="expand"),
        options=[("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                 # gRPC sets SO_REUSEPORT by default: a second service on a busy
                 # port would start and silently share it with the first.
                 ("grpc.so_reuseport", 0)])
    port = listen(server, args.bind, args.port)
    address = grpc_address(args.bind, port)
    pool = None
    try:
        config = args.environment_config
        if args.start_worker_pool:
            pool = start_worker_pool()
            config = pool.address
        own = grpc_address("localhost" if args.bind in ("0.0.0.0", "::") else args.bind, port)
        environment = build_environment(kind, config, loopback_address=own)
        beam_expansion_api_pb2_grpc.add_ExpansionServiceServicer_to_server(
            CrossinferExpansionServicer(policy, environment), server)
        if kind == "loopback":
            beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
                BeamFnExternalWorkerPoolServicer(), server)
        server.start()
    except BaseException:
        if pool is not None:
            pool.stop()
        raise
    _LOG.info("workers: %s; model roots: %s; allowed classes: %s; require sha256: %s",
              "loopback (this process)" if kind == "loopback" else describe(environment),
              ", ".join(policy.model_roots or ()),
              ", ".join(policy.allowed_classes), policy.require_sha256)
    return RunningService(server, address, pool)


def configure_logging(level: str) -> None:
    """Log to stderr: crossinfer at ``level``, everything else at WARNING."""
    # force: importing Beam already configured the root logger (it logs a
    # warning). Root stays at WARNING (Beam logs at INFO per pipeline it builds);
    # crossinfer's own per-expansion lines use the chosen level.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("crossinfer").setLevel(level)
    if level == "DEBUG":
        logging.getLogger().setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        running = start(args)
    except (EnvironmentConfigError, ValueError, OSError) as exc:
        print(f"crossinfer-expansion-service: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"{READY} {running.address}", flush=True)
    try:
        stop.wait()
    finally:
        _LOG.info("shutting down")
        running.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
