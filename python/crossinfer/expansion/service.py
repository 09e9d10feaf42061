"""``crossinfer-expansion-service``: the command that serves crossinfer to any Beam SDK.

Starts a gRPC server with crossinfer's expansion servicer - and nothing else on
that port - prints exactly one line ``crossinfer expansion service listening on
HOST:PORT`` to stdout when it accepts requests, logs one line per expansion to
stderr, and stops on SIGTERM / SIGINT within a few seconds, even with an
expansion in flight (stopping a ``--start-worker-pool`` child too).

Every flag is checked at startup (exit status 2 with a message): ports in
range, model roots that exist, positive limits, class patterns that name a
module.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import grpc

from crossinfer.expansion.admission import (
    SMALL_INPUT_FIELDS,
    SMALL_SLOTS,
    SMALL_SPEC_NODES,
    Admission,
)
from crossinfer.expansion.environments import (
    KINDS,
    EnvironmentConfigError,
    build_environment,
    describe,
)
from crossinfer.expansion.limits import RequestLimits
from crossinfer.expansion.local import WorkerPool, start_worker_pool
from crossinfer.expansion.server import ExpansionServer
from crossinfer.expansion.worker_pool import grpc_address, port_number, serve
from crossinfer.policy import (
    BUILTIN_CLASSES,
    CODE_FORMATS,
    LoadPolicy,
    LocationRefused,
    describe_policy,
    is_local,
    normalize_uri,
    parse_class_pattern,
    parse_type_name,
)
from crossinfer.spec.limits import SpecLimits

READY = "crossinfer expansion service listening on"
#: Upper bound of every --max-* spec limit flag.
MAX_LIMIT = 1 << 30
_LOG = logging.getLogger("crossinfer.expansion")

#: Largest response (an expanded pipeline; ~50 KB per model node).
MAX_SEND_BYTES = 64 << 20
#: Room in a request besides the spec: components, the input coder's schema and
#: the batch transport's input schema (each at most 256 KiB; base64 in the payload).
REQUEST_OVERHEAD_BYTES = 1 << 20


def max_request_bytes(limits: SpecLimits) -> int:
    """The largest request message the service receives (docs/wire-contract.md)."""
    return REQUEST_OVERHEAD_BYTES + 2 * limits.max_spec_bytes
#: How long a stopping service waits for in-flight RPCs before it exits anyway.
_STOP_GRACE_SECS = 2.0

_DESCRIPTION = """\
Serve crossinfer's inference transforms (model, ab_test, sequence, keyed) to Beam
pipelines in any language through Beam's expansion service protocol.

URNs: beam:transform:crossinfer:{model,ab_test,sequence,keyed}:v1, payload and
outputs as in docs/wire-contract.md. Only these URNs are expanded; requests
carrying code (pickled objects, Python source, other transforms) are refused,
and the port serves expansion only. Threat model and every refusal:
docs/security.md.
"""

_EPILOG = f"""\
worker environments (where the expanded transforms run; workers need crossinfer).
A worker pool runs whatever pipeline a runner sends it, so each one says who can
reach it:
  loopback   a worker pool inside this process, on its own port of 127.0.0.1
             (default; development): any process on this host that can connect
             to 127.0.0.1 can run code as this service's user. Refused with a
             non-loopback --bind unless --allow-loopback-with-bind.
  external   a worker pool at --environment-config HOST:PORT: whoever can reach
             that address can run code there.
  process    the runner starts --environment-config COMMAND per worker (no pool
             port).
  docker     the runner starts --environment-config IMAGE (no pool port).
  --start-worker-pool starts a worker pool child process on a free port of
  127.0.0.1 and uses it as the external environment.

model locations: models load only from under --model-root (repeatable; local
directories that exist, or URI prefixes like gs://bucket/models). Without
--model-root, only the current working directory is allowed.

model formats: skops, state_dict and onnx files are data. {', '.join(CODE_FORMATS)}
files can run code when loaded and are refused unless --allow-code-format names
them: then every writer of the model roots can run code in the workers.

load: small requests (specs of at most {SMALL_SPEC_NODES} nodes, input schemas of at
most {SMALL_INPUT_FIELDS} fields) expand in a lane of their own ({SMALL_SLOTS} at once), so
they never wait behind large ones; a request that finds its lane full is refused
with RESOURCE_EXHAUSTED, one past its deadline with DEADLINE_EXCEEDED. A call waits
for its request without holding a thread, at most --receive-timeout-secs.

examples:
  crossinfer-expansion-service --port 8097 --model-root /srv/models
  python -m crossinfer.expansion --port 0 --start-worker-pool --model-root ./models
  crossinfer-expansion-service --port 8097 --bind 0.0.0.0 --environment external \\
      --environment-config localhost:50000 --model-root /srv/models --require-sha256
"""


# ---------------------------------------------------------------- flag types


def _positive(kind: Callable[[str], float], maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        if not 0 < value <= maximum:
            raise argparse.ArgumentTypeError(f"expected above 0 and at most {_plain(maximum)}, "
                                             f"got {text}")
        return value
    return parse


def _plain(value: float) -> str:
    """A bound as people write it: 1,073,741,824, 3,600, 0.5."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"expected 0..1024, got {value}")
    return value


def _model_root(text: str) -> str:
    """An existing local directory (made absolute) or a ``scheme://bucket/...`` prefix."""
    try:
        root = normalize_uri(text)
    except LocationRefused as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if is_local(root):
        if not os.path.isdir(root):
            raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
        return os.path.abspath(root)
    if root.partition("://")[2].strip("/") == "":
        raise argparse.ArgumentTypeError(f"{text!r}: name a bucket, as in gs://bucket/models")
    return root


def _type_name(text: str) -> str:
    try:
        return parse_type_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("skops_trusted: ")) from None


def _class_pattern(text: str) -> str:
    try:
        parse_class_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; wildcards over modules would let a spec "
                                         "import anything") from None
    return text


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a --bind value) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossinfer-expansion-service", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    net = parser.add_argument_group("network")
    net.add_argument("--port", type=port_number, default=8097,
                     help="port to listen on, 0..65535; 0 picks a free one "
                          "(default: %(default)s)")
    net.add_argument("--bind", default="127.0.0.1",
                     help="address to listen on (default: %(default)s, loopback only; use "
                          "0.0.0.0 to accept other hosts - there is no TLS or "
                          "authentication, see docs/security.md)")
    env = parser.add_argument_group("worker environment")
    env.add_argument("--environment", choices=KINDS, default=None,
                     help="where expanded transforms run (default: loopback, or external "
                          "with --start-worker-pool)")
    env.add_argument("--environment-config", metavar="VALUE", default=None,
                     help="external: HOST:PORT of a worker pool; process: COMMAND; "
                          "docker: IMAGE")
    env.add_argument("--start-worker-pool", action="store_true",
                     help="start a Python worker pool (this interpreter, 127.0.0.1, free "
                          "port) as a child process and use it as the external environment; "
                          "it is stopped when the service exits")
    env.add_argument("--allow-loopback-with-bind", action="store_true",
                     help="accept a non-loopback --bind with a worker pool on this host "
                          "(--environment loopback, or --start-worker-pool): the pool still "
                          "listens on 127.0.0.1 only, so only runners on this host can use it")
    pol = parser.add_argument_group("what specs may load")
    pol.add_argument("--model-root", action="append", default=[], metavar="DIR",
                     type=_model_root,
                     help="existing directory or URI prefix models must live under "
                          "(repeatable; default: the current working directory only)")
    pol.add_argument("--allow-class", action="append", default=[], metavar="PATTERN",
                     type=_class_pattern,
                     help="'package.module:ClassName' or 'package.module:*' (any class "
                          "defined in that module) that specs may name as "
                          "model_class/handler_class (repeatable; always allowed: "
                          f"{', '.join(BUILTIN_CLASSES)})")
    pol.add_argument("--allow-code-format", action="append", default=[], metavar="FORMAT",
                     choices=tuple(CODE_FORMATS),
                     help="also load this code-capable format (repeatable: "
                          f"{', '.join(CODE_FORMATS)}); every writer of the model roots can "
                          "then run code in the workers")
    pol.add_argument("--require-sha256", action="store_true",
                     help="refuse specs whose models have no sha256 pin")
    pol.add_argument("--skops-trust", action="append", default=[], metavar="TYPE",
                     type=_type_name,
                     help="also let skops files name this type, as skops spells it (e.g. "
                          "sklearn.tree._tree.Tree, which decision trees and forests need; "
                          "repeatable): skops constructs it when it loads, so it is trusted "
                          "like an allow-listed class")
    lim = parser.add_argument_group("request limits (docs/security.md)")
    defaults = SpecLimits()
    for f in fields(SpecLimits):
        lim.add_argument(f.metadata["flag"], dest=f.name, metavar="N",
                         type=_positive(int, MAX_LIMIT), default=getattr(defaults, f.name),
                         help=f"most {f.metadata['why']}, 1..{_plain(MAX_LIMIT)} (default: "
                              "%(default)s)")
    request_defaults = RequestLimits()
    for f in fields(RequestLimits):
        kind = int if f.type == "int" else float
        lim.add_argument(f.metadata["flag"], dest=f.name, metavar="N" if kind is int else "SECS",
                         type=_positive(kind, f.metadata["maximum"]),
                         default=getattr(request_defaults, f.name),
                         help=f"most {f.metadata['why']}, above 0 and at most "
                              f"{_plain(f.metadata['maximum'])} (default: %(default)s)")
    lim.add_argument("--max-concurrent-expansions", type=_positive(int, 64), default=1,
                     metavar="N", help="large specs expanded at once, 1..64 (default: "
                                       "%(default)s; expanding is CPU-bound, more rarely help)")
    lim.add_argument("--max-queued-expansions", type=_count, default=16, metavar="N",
                     help="requests waiting per lane before more are refused with "
                          "RESOURCE_EXHAUSTED, 0..1024; 0 refuses whenever the lane's slots "
                          "are taken (default: %(default)s)")
    lim.add_argument("--expansion-timeout-secs", type=_positive(float, 3600), default=60.0,
                     metavar="SECS", help="the longest a request may take from opening its "
                                          "call to its answer, above 0 and at most 3600 "
                                          "(default: %(default)s)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log level for stderr (default: %(default)s)")
    return parser


def build_policy(model_roots: Sequence[str], allow_classes: Sequence[str],
                 require_sha256: bool, code_formats: Sequence[str] = (),
                 skops_trusted: Sequence[str] = ()) -> LoadPolicy:
    """The service's strict policy; ValueError naming a bad pattern."""
    for pattern in allow_classes:
        parse_class_pattern(pattern)
    roots = tuple(model_roots) or (os.getcwd(),)
    roots = tuple(os.path.abspath(r) if is_local(r) else r for r in roots)
    return LoadPolicy(allowed_classes=BUILTIN_CLASSES + tuple(allow_classes),
                      model_roots=roots, require_sha256=require_sha256, check_files=True,
                      code_formats=tuple(dict.fromkeys(code_formats)),
                      skops_trusted=tuple(dict.fromkeys(skops_trusted)))


def build_limits(args: argparse.Namespace) -> SpecLimits:
    return SpecLimits(**{f.name: getattr(args, f.name) for f in fields(SpecLimits)})


def build_request_limits(args: argparse.Namespace) -> RequestLimits:
    return RequestLimits(**{f.name: getattr(args, f.name) for f in fields(RequestLimits)})


@dataclass
class RunningService:
    """A started service: its server, address, and worker pool (child or in-process)."""

    server: ExpansionServer
    address: str
    admission: Admission
    worker_pool: WorkerPool | None = None
    loopback_pool: grpc.Server | None = None
    loopback_address: str | None = None

    def stop(self, grace: float | None = _STOP_GRACE_SECS) -> None:
        self.server.stop(grace)
        if self.loopback_pool is not None:
            self.loopback_pool.stop(0)
        if self.worker_pool is not None:
            self.worker_pool.stop()


def start(args: argparse.Namespace) -> RunningService:
    """Start serving per the parsed flags (tests call this in-process)."""
    from crossinfer.expansion.servicer import CrossinferExpansionServicer

    policy = build_policy(args.model_root, args.allow_class, args.require_sha256,
                          args.allow_code_format, args.skops_trust)
    limits = build_limits(args)
    request_limits = build_request_limits(args)
    admission = Admission(args.max_concurrent_expansions, args.max_queued_expansions,
                          args.expansion_timeout_secs)
    kind = args.environment or ("external" if args.start_worker_pool else "loopback")
    if args.start_worker_pool and kind != "external":
        raise EnvironmentConfigError("--start-worker-pool uses the external environment; "
                                     f"drop --environment {kind}")
    if args.environment_config and (kind == "loopback" or args.start_worker_pool):
        # Silently ignoring it would leave the user believing workers run there.
        raise EnvironmentConfigError("--environment-config is not used with "
                                     + ("--start-worker-pool" if args.start_worker_pool
                                        else "--environment loopback"))
    local_pool = "--environment loopback" if kind == "loopback" else (
        "--start-worker-pool" if args.start_worker_pool else None)
    if local_pool and not is_loopback(args.bind) and not args.allow_loopback_with_bind:
        raise EnvironmentConfigError(
            f"--bind {args.bind} with {local_pool}: its worker pool listens on 127.0.0.1 of "
            "this host only, so runners on other hosts could not reach it; for other hosts "
            "choose --environment external (a pool they can reach), process or docker (or "
            "pass --allow-loopback-with-bind when the runners run on this host)")
    # One thread per request the admission can hold, plus a few for refusals; a
    # call waiting for its request holds none (crossinfer.expansion.server).
    server = ExpansionServer(
        address=grpc_address(args.bind, args.port), threads=admission.capacity + 4,
        timeout_secs=args.expansion_timeout_secs,
        receive_timeout_secs=request_limits.receive_timeout_secs,
        max_receive_bytes=max_request_bytes(limits), max_send_bytes=MAX_SEND_BYTES,
        error_prefix="crossinfer: ")
    running = RunningService(server, "", admission)
    try:
        running.address = grpc_address(args.bind, server.bind())
    except BaseException:
        running.stop(0)
        raise
    try:
        config = args.environment_config
        if args.start_worker_pool:
            running.worker_pool = start_worker_pool()
            config = running.worker_pool.address
        if kind == "loopback":
            # Its own port, loopback only: the expansion port never runs pipelines.
            running.loopback_pool, pool_port = serve("127.0.0.1", 0)
            running.loopback_address = grpc_address("127.0.0.1", pool_port)
        environment = build_environment(kind, config, loopback_address=running.loopback_address)
        servicer = CrossinferExpansionServicer(policy, environment, limits, admission,
                                               request_limits)
        server.start(servicer.answer)
    except BaseException:
        running.stop(0)
        raise
    workers = (f"loopback worker pool in this process at {running.loopback_address}"
               if running.loopback_address else describe(environment))
    _LOG.info("workers: %s; %s; %s; %s", workers,
              "; ".join(f"{k}: {v}" for k, v in describe_policy(policy).items()), limits,
              request_limits)
    return running


#: What a first expansion imports on use: the patterns and the frameworks'
#: libraries (checking a torch model's signature imports torch; a skops file's
#: types, skops and scikit-learn; an ONNX file's external data, onnx). Imported
#: once the service is ready, in the background, so the first request does not
#: wait for them (it took 5 to 12 s on 2 cores); a framework not installed is
#: skipped (its specs are refused when they come).
WARM_MODULES = ("crossinfer.patterns", "crossinfer.handlers.registry",
                "apache_beam.ml.inference.base", "torch", "skops.io", "sklearn", "onnx",
                "onnxruntime")


def warm_up(modules: Sequence[str] = WARM_MODULES) -> list[str]:
    """Import ``modules`` (those that import); log and return their names."""
    started = time.monotonic()
    imported = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # an optional framework, missing or broken: skipped
            _LOG.debug("warm-up: %s not imported", name, exc_info=True)
        else:
            imported.append(name)
    _LOG.info("warm-up: imported %s in %.1f s", ", ".join(imported),
              time.monotonic() - started)
    return imported


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
    """Parse flags, serve until SIGTERM / SIGINT; 2 for bad flags (with a message).

    Once serving, the process ends with ``os._exit``: an expansion still running
    in a thread (Python threads cannot be stopped) must not hold the exit.
    """
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
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    code = 0
    try:
        stop.wait()
        _LOG.info("shutting down")
        running.stop()
    except BaseException:
        _LOG.exception("error while shutting down")
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
