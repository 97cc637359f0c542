"""Where the node meets gRPC: the one place a server adds its port and the one
place a client makes a channel, both taking optional credentials (mTLS).

Until credentials are passed, both are plaintext. Limits live here too, so
that every server and channel of a node gets the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from common.net import NO_PROXY

KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000

# A frame is ~50 bytes and a StartSnapshot request less; 64 KiB leaves room
# for anything legitimate and refuses a hostile giant with RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_METADATA_BYTES = 8 * 1024
# Reports carry every recorded in-flight message of a snapshot.
MAX_REPORT_BYTES = 32 * 1024 * 1024

Options = list[tuple[str, int | str]]

CLIENT_OPTIONS: Options = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_REPORT_BYTES),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    NO_PROXY,
]

SERVER_OPTIONS: Options = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    # Without this a second node started on the same port silently shares it.
    ("grpc.so_reuseport", 0),
]


class PortUnavailable(OSError):
    """The gRPC server could not bind its listen address."""


def add_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Listen on `address` (mTLS when `credentials` are given); the bound port."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise PortUnavailable(f"cannot listen on {address}: {error}") from error
    if port == 0:
        raise PortUnavailable(f"cannot listen on {address}")
    return port


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """A channel to a peer or the collector (mTLS when `credentials` are given).

    `options` adds to (and overrides) CLIENT_OPTIONS, e.g. the TLS target name.
    """
    merged = dict(CLIENT_OPTIONS)
    merged.update(dict(options))
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(merged.items()))
    return grpc.aio.secure_channel(address, credentials, options=list(merged.items()))
