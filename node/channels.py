"""The directed channels over gRPC: sender threads and the receiving handler.

Frame format: a `Frame` protobuf (sender, receiver, seq, transfer | marker);
`seq` counts every frame on the directed channel, markers included, from 1.

Sending (one `PeerSender` thread per outgoing channel): open one long-lived
`Node.Channel` stream, send every unacknowledged frame in seq order, then
every new one as the runtime queues it. The receiver's acks ("everything up to
seq is durably applied") let the runtime forget frames. When the stream breaks
the thread reconnects with backoff and starts again from the oldest
unacknowledged frame: the receiver drops what it had already applied.

Receiving (`serve_channel`): the stream's first message is an ack carrying the
last applied seq, so a reconnecting sender learns at once what survived. Each
frame is then applied (or dropped as a duplicate) and acked only after its
transaction committed. A frame that must not be applied aborts the stream with
a status that says whose fault it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import structlog
from structlog.contextvars import bind_contextvars

from common.net import NO_PROXY
from common.tls import RefusalLog, TlsFiles, open_channel, peer_identity, refusal
from node.runtime import (
    BadFrame,
    FrameRejected,
    NodeClosed,
    NodeRuntime,
    SequenceGap,
    UnknownSender,
    WrongReceiver,
)
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

log = structlog.get_logger("node.channels")

# The sending node names itself in the stream metadata, so the receiver can
# check the channel and send its initial ack before any frame arrives. With
# mutual TLS the name must be the one in the sender's certificate.
SENDER_METADATA = "cl-sender"

# What a rejected sender is told: enough to know what went wrong, nothing an
# attacker could use (no expected sequence number); the node's log has the detail.
PUBLIC_REASONS = {
    UnknownSender: "no channel from this sender to this node",
    WrongReceiver: "frame addressed to another node",
    SequenceGap: "gap in sequence numbers",
    BadFrame: "malformed frame or protocol violation",
}

KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000

CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    NO_PROXY,
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
    # Without this a second node started on the same port silently shares it.
    ("grpc.so_reuseport", 0),
]

REJECTION_CODES = {
    UnknownSender: grpc.StatusCode.PERMISSION_DENIED,
    WrongReceiver: grpc.StatusCode.INVALID_ARGUMENT,
    SequenceGap: grpc.StatusCode.FAILED_PRECONDITION,
    BadFrame: grpc.StatusCode.FAILED_PRECONDITION,
}


def rejection_code(error: FrameRejected) -> grpc.StatusCode:
    return REJECTION_CODES.get(type(error), grpc.StatusCode.FAILED_PRECONDITION)


def public_reason(error: FrameRejected) -> str:
    return PUBLIC_REASONS.get(type(error), "frame rejected")


class Backoff:
    """Reconnect delays: `initial`, doubling up to `maximum`; reset on success."""

    def __init__(self, initial: float = 0.2, maximum: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = initial

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


# ----------------------------------------------------------------- sending


class PeerSender(threading.Thread):
    """Keeps the channel to one peer streaming until `stop`."""

    def __init__(
        self,
        runtime: NodeRuntime,
        peer: str,
        address: str,
        link_delay: float = 0.0,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(name=f"sender-{runtime.node_id}->{peer}", daemon=True)
        self.runtime = runtime
        self.peer = peer
        self.address = address
        self.tls = tls
        self.link_delay = link_delay
        self._newest_seen = 0
        self.backoff = Backoff()
        self._stopping = threading.Event()
        self._call_lock = threading.Lock()
        self._call: grpc.Call | None = None

    def stop(self) -> None:
        self._stopping.set()
        with self._call_lock:
            if self._call is not None:
                self._call.cancel()

    def run(self) -> None:
        bind_contextvars(node_id=self.runtime.node_id, peer=self.peer)
        # With TLS the channel only accepts the peer whose certificate names it.
        with open_channel(self.address, self.tls, "node", self.peer, CLIENT_OPTIONS) as channel:
            stub = pb_grpc.NodeStub(channel)
            while not self._stopping.is_set():
                if self._stream_once(stub):
                    self.backoff.reset()
                self._stopping.wait(self.backoff.next())

    def _frames(self, done: threading.Event) -> Iterator[pb.Frame]:
        after = 0  # a new stream starts from the oldest unacknowledged frame
        while not done.is_set() and not self._stopping.is_set():
            frames = self.runtime.wait_frames(self.peer, after, timeout=0.5)
            first_seen = time.monotonic()
            for frame in frames:
                self._hold(frame.seq, first_seen)
                yield frame
                after = frame.seq

    def _hold(self, seq: int, first_seen: float) -> None:
        """Simulated link latency (`link_delay_ms`): a new frame leaves about
        `link_delay` after this thread first saw it, so that on a fast LAN
        money is visibly in flight. Every frame waits the same time, in seq
        order, so FIFO holds; resent frames are not delayed again.
        """
        if self.link_delay <= 0 or seq <= self._newest_seen:
            return
        self._newest_seen = seq
        self._stopping.wait(max(0.0, first_seen + self.link_delay - time.monotonic()))

    def _stream_once(self, stub: pb_grpc.NodeStub) -> bool:
        """Run one stream until it breaks; True if the peer answered at all."""
        done = threading.Event()
        call = stub.Channel(self._frames(done), metadata=((SENDER_METADATA, self.runtime.node_id),))
        with self._call_lock:
            self._call = call
            if self._stopping.is_set():
                call.cancel()
        connected = False
        try:
            for ack in call:
                if not connected:
                    connected = True
                    self.runtime.set_connected(self.peer, "out", True)
                    log.info("peer connected", address=self.address, acked=ack.seq)
                self.runtime.acknowledge(self.peer, ack.seq)
            if connected:
                log.info("peer disconnected", reason="stream closed by peer")
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            if self._stopping.is_set():
                pass
            elif code in REJECTION_CODES.values():
                log.error("peer rejected channel", code=code.name, details=details)
            elif connected:
                log.warning("peer disconnected", code=code.name, details=details)
            else:
                log.debug("peer unreachable", address=self.address, code=code.name)
        finally:
            done.set()
            if connected:
                self.runtime.set_connected(self.peer, "out", False)
            with self._call_lock:
                self._call = None
        return connected


# --------------------------------------------------------------- receiving


def serve_channel(
    runtime: NodeRuntime,
    requests: Iterator[pb.Frame],
    context: grpc.ServicerContext,
    *,
    authenticate: bool = False,
    refusals: RefusalLog | None = None,
) -> Iterator[pb.Ack]:
    """The Node.Channel handler: apply frames in order, ack each one.

    `authenticate` (mutual TLS): the stream is accepted only from a node's
    certificate, and carries frames of that node only: a certificate for n2
    can neither open the channel of n3 nor slip in a frame "from" n3.
    """
    bind_contextvars(node_id=runtime.node_id)
    metadata = dict(context.invocation_metadata())
    claimed = metadata.get(SENDER_METADATA)
    peer = claimed if isinstance(claimed, str) else None
    if authenticate:
        who = peer_identity(context)
        peer = peer if peer is not None else (who.name if who is not None else None)
        refused = refusal(who, {"node"}, peer)
        if refused is not None:
            code, message = refused
            (refusals or RefusalLog(log)).refused(who, "Channel", code, message, claimed=peer)
            context.abort(code, message)
    if peer is not None:
        if peer not in runtime.incoming:
            _reject(context, UnknownSender(f"{peer!r} has no channel to {runtime.node_id}"), peer)
        log.info("peer connected", peer=peer, direction="incoming")
        runtime.set_connected(peer, "in", True)
    try:
        if peer is not None:
            yield pb.Ack(seq=runtime.last_applied(peer))
        for frame in requests:
            if peer is not None and frame.sender != peer:
                _reject(
                    context,
                    UnknownSender(f"frame from {frame.sender!r} on the stream of {peer!r}"),
                    peer,
                )
            try:
                seq = runtime.receive(frame)
            except FrameRejected as error:
                _reject(context, error, frame.sender)
            except NodeClosed:
                # Not applied, not acked: the sender resends it to the next incarnation.
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{runtime.node_id} is shutting down")
            yield pb.Ack(seq=seq)
    finally:
        if peer is not None:
            runtime.set_connected(peer, "in", False)
            log.info("peer disconnected", peer=peer, direction="incoming")


def _reject(context: grpc.ServicerContext, error: FrameRejected, peer: str | None) -> None:
    code = rejection_code(error)
    log.warning("frame rejected", peer=peer, code=code.name, reason=str(error))
    context.abort(code, public_reason(error))
