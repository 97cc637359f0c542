"""Where the node meets gRPC: the one place a server adds its port and the one
place a client makes a channel, both taking the node's TLS files (mutual TLS,
common/tls.py; None means plaintext, chosen explicitly with --plaintext).

Limits live here too, so that every server and channel of a node gets the
same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from common import tls as tls_module
from common.net import NO_PROXY
from common.tls import TlsFiles

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


def add_port(server: grpc.aio.Server, address: str, tls: TlsFiles | None = None) -> int:
    """Listen on `address` (mutual TLS when `tls` is given); the bound port."""
    try:
        port = tls_module.add_port(server, address, tls)
    except RuntimeError as error:
        raise PortUnavailable(f"cannot listen on {address}: {error}") from error
    if port == 0:
        raise PortUnavailable(f"cannot listen on {address}")
    return port


def open_channel(
    address: str,
    tls: TlsFiles | None = None,
    role: str = "node",
    name: str = "",
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """A channel to `role` `name` (a peer node or the collector) at `address`;
    with TLS it accepts only the server whose certificate names it.

    `options` adds to (and overrides) CLIENT_OPTIONS.
    """
    merged = dict(CLIENT_OPTIONS)
    merged.update(dict(options))
    return tls_module.open_aio_channel(address, tls, role, name, list(merged.items()))
