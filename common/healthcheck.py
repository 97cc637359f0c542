"""Container health probe: a gRPC health `Check` against the local server.

    python -m common.healthcheck [--address HOST:PORT] [--service NAME] [--timeout SECONDS]
                                 [--tls-dir DIR | --plaintext]

The address defaults to 127.0.0.1:$CL_PORT (CL_PORT defaults to 50051).
The probe speaks mutual TLS with the certificate in --tls-dir (env
CL_TLS_DIR: the server's own, in a container) and checks that the server
presents the identity that certificate names; --plaintext (CL_PLAINTEXT=1)
only for a server run in plaintext. Exit status 0 when the server answers
SERVING; 1 otherwise, with a one-line reason on stderr. The Dockerfile's
HEALTHCHECK runs this.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs.identity import Identity
from common.net import CHANNEL_OPTIONS, describe_rpc_error
from common.tls import (
    TLS_DIR_ENV,
    TlsError,
    TlsFiles,
    load_tls_settings,
    open_channel,
    plaintext_from_env,
)

DEFAULT_PORT = 50051
DEFAULT_TIMEOUT = 3.0


def default_address(environ: Mapping[str, str] = os.environ) -> str:
    """127.0.0.1:$CL_PORT; a CL_PORT that is not a port raises ValueError."""
    raw = environ.get("CL_PORT", str(DEFAULT_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"CL_PORT={raw!r} is not a port number")
    return f"127.0.0.1:{int(raw)}"


def check(
    address: str,
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    *,
    tls: TlsFiles | None = None,
    target: Identity | None = None,
) -> str | None:
    """Return None when `service` at `address` is SERVING, else why not (one line).

    With `tls`, over mutual TLS to the server whose certificate names `target`.
    """
    if tls is not None and target is None:
        raise ValueError("a TLS health check needs the identity of the server it checks")
    role, name = (target.role, target.name) if target is not None else ("node", "unused")
    try:
        with open_channel(address, tls, role, name, CHANNEL_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            response = stub.Check(request, timeout=timeout)
    except grpc.RpcError as exc:
        return f"{address}: {describe_rpc_error(exc)}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return f"{address}: service {service!r} is {status}"
    return None


def own_identity(tls: TlsFiles) -> Identity:
    """The identity the certificate in `tls` names (the probe checks the server is that one)."""
    from cryptography import x509

    from certs.authority import identity_of

    identity = identity_of(x509.load_pem_x509_certificate(tls.cert.read_bytes()))
    if identity is None:
        raise TlsError(f"{tls.cert}: names no chandy-lamport identity")
    return identity


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.healthcheck", description="gRPC health check of a local server."
    )
    parser.add_argument("--address", help="host:port (default 127.0.0.1:$CL_PORT, port 50051)")
    parser.add_argument("--service", default="", help="service name (default '': the server)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    parser.add_argument("--tls-dir", default=environ.get(TLS_DIR_ENV) or None)
    parser.add_argument("--plaintext", action="store_true", default=None)
    args = parser.parse_args(argv)
    try:
        address = args.address or default_address(environ)
        plaintext = args.plaintext or plaintext_from_env(environ)
        tls = target = None
        if not plaintext:
            if args.tls_dir is None:
                raise TlsError("no certificate: set CL_TLS_DIR (or --tls-dir), or --plaintext")
            tls = load_tls_settings(args.tls_dir)
            assert tls is not None
            target = own_identity(tls)
    except (ValueError, TlsError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    reason = check(address, args.service, args.timeout, tls=tls, target=target)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
