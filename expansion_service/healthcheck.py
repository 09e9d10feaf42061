"""Container health check: exits 0 when the expansion service accepts a gRPC channel.

    python healthcheck.py [HOST:PORT]

Without an address it reads the service's own ``--port`` and ``--bind`` from
the command line of the container's main process (``/proc/1/cmdline``: the
entry point execs the service), so any flags passed to the image keep the
container healthy; a wildcard bind is checked on loopback.
"""

from __future__ import annotations

import argparse
import sys

import grpc

#: Where to connect for each wildcard bind address.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def address_from_flags(argv: list[str]) -> str:
    """``HOST:PORT`` to check for a service started with ``argv``; ValueError for
    ``--port 0`` (a free port nobody can know from the flags)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--port", type=int, default=8097)
    parser.add_argument("--bind", default="127.0.0.1")
    args, _ = parser.parse_known_args(argv)
    if args.port == 0:
        raise ValueError("the service was started with --port 0; give the address")
    host = _WILDCARDS.get(args.bind, args.bind).strip("[]")
    return f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"


def main_process_flags(path: str = "/proc/1/cmdline") -> list[str]:
    with open(path, "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def main(argv: list[str]) -> int:
    try:
        address = argv[0] if argv else address_from_flags(main_process_flags())
    except (OSError, ValueError) as exc:
        print(f"unhealthy: cannot tell the service's address: {exc}", file=sys.stderr)
        return 1
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
    except grpc.FutureTimeoutError:
        print(f"unhealthy: no gRPC server at {address}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
