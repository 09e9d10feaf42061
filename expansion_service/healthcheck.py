"""Container health check: exits 0 when the expansion service accepts a gRPC channel.

    python healthcheck.py HOST:PORT
"""

from __future__ import annotations

import sys

import grpc


def main(argv: list[str]) -> int:
    address = argv[0] if argv else "127.0.0.1:8097"
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
