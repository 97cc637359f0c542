"""Network details every process shares: client channel options, how an RPC
error is shown to a user, free loopback ports for local clusters."""

from __future__ import annotations

import socket

import grpc

# Peers, the collector and health probes are addressed directly; an HTTP
# proxy taken from the environment would swallow the traffic.
NO_PROXY = ("grpc.enable_http_proxy", 0)
CHANNEL_OPTIONS: list[tuple[str, int]] = [NO_PROXY]


def describe_rpc_error(error: grpc.RpcError) -> str:
    """`CODE: details` of a failed call, for one-line messages."""
    if isinstance(error, grpc.Call):
        details = error.details() or ""
        return f"{error.code().name}: {details}" if details else error.code().name
    return str(error)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago (all bound at once, then closed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
