"""Container health probe: a gRPC health `Check` against the local server.

    python -m common.healthcheck [--address HOST:PORT] [--service NAME] [--timeout SECONDS]

The address defaults to 127.0.0.1:$CL_PORT (CL_PORT defaults to 50051).
Exit status 0 when the server answers SERVING; 1 otherwise, with a one-line
reason on stderr. The Dockerfile's HEALTHCHECK runs this.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.net import CHANNEL_OPTIONS, describe_rpc_error

DEFAULT_PORT = 50051
DEFAULT_TIMEOUT = 3.0


def default_address(environ: Mapping[str, str] = os.environ) -> str:
    """127.0.0.1:$CL_PORT; a CL_PORT that is not a port raises ValueError."""
    raw = environ.get("CL_PORT", str(DEFAULT_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"CL_PORT={raw!r} is not a port number")
    return f"127.0.0.1:{int(raw)}"


def check(address: str, service: str = "", timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """Return None when `service` at `address` is SERVING, else why not (one line)."""
    try:
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            response = stub.Check(request, timeout=timeout)
    except grpc.RpcError as exc:
        return f"{address}: {describe_rpc_error(exc)}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return f"{address}: service {service!r} is {status}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.healthcheck", description="gRPC health check of a local server."
    )
    parser.add_argument("--address", help="host:port (default 127.0.0.1:$CL_PORT, port 50051)")
    parser.add_argument("--service", default="", help="service name (default '': the server)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    args = parser.parse_args(argv)
    try:
        address = args.address or default_address()
    except ValueError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    reason = check(address, args.service, args.timeout)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
