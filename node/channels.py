"""The directed channels over gRPC (asyncio): sender tasks and the receiving handler.

Frame format: a `Frame` protobuf (sender, receiver, seq, transfer | marker,
lamport); `seq` counts every frame on the directed channel, markers
included, from 1.

Sending (one `PeerSender` task per outgoing channel): open one long-lived
`Node.Channel` stream, write every unacknowledged frame in seq order, then
every new one as the runtime publishes it; the frames ready at one wake-up
travel as one message (a `bundle`), since gRPC's cost is per message. The receiver's acks are
cumulative ("everything up to seq is durably applied") and let the runtime
forget frames. When the stream breaks the task reconnects after a jittered
exponential backoff (peers that lost the same node do not retry in
lockstep) and starts again from the oldest unacknowledged frame: the
receiver drops what it had already applied.

Receiving (`ChannelService.serve`): the stream's first message is an ack
carrying the last applied seq, so a reconnecting sender learns at once what
survived. A reader task hands every frame to the group committer without
waiting for the previous one; the handler writes one cumulative ack whenever
commits moved the channel forward, so frames that arrived together are
applied in one transaction and acknowledged with one ack -- always after
the commit. A frame that must not be applied aborts the stream with a status
that says whose fault it was.

Streams are bounded (`StreamLimits`): a configured peer has at most
`per_peer` streams, and a newer one supersedes the oldest (a peer that
reconnects after a crash must not wait for its dead stream's keepalive);
streams that name no sender (their frames name it) share `anonymous` slots,
beyond which they are refused with RESOURCE_EXHAUSTED. Health, status and
snapshot RPCs are not streams and are always answered: nothing here blocks
the event loop. The peer's identity is `identity_of(context)`: today the
`cl-sender` metadata; with mTLS, the certificate (one function to change).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
import structlog

from common.tls import RefusalLog, peer_identity, refusal
from node.committer import GroupCommitter
from node.restore import ReceiverEnd, SenderEnd, Stale, judge_channel
from node.runtime import (
    BadFrame,
    EpochMismatch,
    FrameRejected,
    NodeClosed,
    NodeRuntime,
    NotServing,
    ReceiveFrame,
    SequenceGap,
    UnknownSender,
    WrongReceiver,
)
from node.transport import CLIENT_OPTIONS, SERVER_OPTIONS
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

__all__ = ["CLIENT_OPTIONS", "SERVER_OPTIONS", "SENDER_METADATA", "Backoff", "PeerSender"]

log = structlog.get_logger("node.channels")

# The sending node names itself in the stream metadata, so the receiver can
# check the channel and send its initial ack before any frame arrives.
SENDER_METADATA = "cl-sender"
# The sender's half of the channel handshake (node/restore.py `judge_channel`):
# "<epoch>,<prepared epoch or 0>,<last sent seq>,<first unacked seq>". The
# receiver's half is the stream's first ack.
CHANNEL_METADATA = "cl-channel"

# Frames read from one stream and not yet committed: beyond this the reader
# stops reading (HTTP/2 flow control then slows the sender down).
MAX_PENDING_PER_STREAM = 4096

# Acks wait a little (the commits they confirm do not): nothing waits for an
# ack but the sender's outbox trimming, and gRPC's cost is per message. A
# snapshot's markers reach a node on every incoming channel at once; acking
# each at once doubled the messages of that burst. So an ack goes out
# ACK_DELAY after the first commit it confirms, covering every commit since
# (cumulative), or at once when ACK_EVERY frames are waiting for it, or when
# the stream ends or fails. 0.2 s: snapshots taken several times a second
# and a light workload share acks; a sender keeps at most that much more in
# its outbox, and resends at most that much after a reconnect (dropped by
# the receiver as duplicates).
ACK_DELAY = 0.2
ACK_EVERY = 256

# What a rejected sender is told: enough to know what went wrong, nothing an
# attacker could use (no expected sequence number); the node's log has the detail.
PUBLIC_REASONS = {
    UnknownSender: "no channel from this sender to this node",
    WrongReceiver: "frame addressed to another node",
    SequenceGap: "gap in sequence numbers",
    BadFrame: "malformed frame or protocol violation",
    EpochMismatch: "frame of another epoch (a restore is under way); resend later",
    NotServing: "this node is not serving (stale data dir); it rejoins by a restore",
}

REJECTION_CODES = {
    UnknownSender: grpc.StatusCode.PERMISSION_DENIED,
    WrongReceiver: grpc.StatusCode.INVALID_ARGUMENT,
    SequenceGap: grpc.StatusCode.FAILED_PRECONDITION,
    BadFrame: grpc.StatusCode.FAILED_PRECONDITION,
    EpochMismatch: grpc.StatusCode.ABORTED,
    NotServing: grpc.StatusCode.FAILED_PRECONDITION,
}


class StaleChannel(FrameRejected):
    """The channel handshake shows that one end lost state (`judge_channel`)."""


PUBLIC_REASONS[StaleChannel] = "channel counters do not match: one end's data dir is stale"
REJECTION_CODES[StaleChannel] = grpc.StatusCode.FAILED_PRECONDITION


def encode_sender_end(end: SenderEnd) -> str:
    return f"{end.epoch},{end.prepared_epoch or 0},{end.last_sent},{end.first_unacked}"


def decode_sender_end(text: str) -> SenderEnd | None:
    """The sender's handshake from metadata; None if absent or malformed."""
    try:
        epoch, prepared, last_sent, first_unacked = (int(part) for part in text.split(","))
    except ValueError:
        return None
    if min(epoch, prepared, last_sent, first_unacked) < 0:
        return None
    return SenderEnd(epoch, prepared or None, last_sent, first_unacked)


def receiver_end_of(ack: pb.Ack) -> ReceiverEnd:
    return ReceiverEnd(int(ack.epoch), int(ack.prepared_epoch) or None, int(ack.seq))


def ack_of(end: ReceiverEnd) -> pb.Ack:
    return pb.Ack(seq=end.last_applied, epoch=end.epoch, prepared_epoch=end.prepared_epoch or 0)


def rejection_code(error: FrameRejected) -> grpc.StatusCode:
    return REJECTION_CODES.get(type(error), grpc.StatusCode.FAILED_PRECONDITION)


def public_reason(error: FrameRejected) -> str:
    return PUBLIC_REASONS.get(type(error), "frame rejected")


class Backoff:
    """Reconnect delays: exponential from `initial` up to `maximum`, each one
    drawn uniformly from [delay/2, delay] so that retries spread out; reset
    on success."""

    def __init__(
        self, initial: float = 0.2, maximum: float = 2.0, rng: random.Random | None = None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = initial
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.delay = self.initial


# ----------------------------------------------------------------- sending


class PeerSender:
    """Keeps the channel to one peer streaming until cancelled."""

    def __init__(
        self,
        runtime: NodeRuntime,
        peer: str,
        channel: grpc.aio.Channel,
        link_delay: float = 0.0,
        backoff: Backoff | None = None,
        on_stale: Callable[[str], object] | None = None,
    ) -> None:
        """`on_stale(reason)`: the handshake found this node's data dir stale."""
        self.on_stale = on_stale
        self._call: grpc.aio.StreamStreamCall | None = None
        self.runtime = runtime
        self.peer = peer
        self.channel = channel
        self.link_delay = link_delay
        self.backoff = backoff or Backoff()
        self.ready = asyncio.Event()  # set when the runtime published frames for `peer`
        self._newest_seen = 0
        self._log = log.bind(node_id=runtime.node_id, peer=peer)

    async def run(self) -> None:
        stub = pb_grpc.NodeStub(self.channel)
        while True:
            if await self._stream_once(stub):
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next())

    def restart(self) -> None:
        """End the current stream (a restore committed): the next one handshakes again."""
        if self._call is not None:
            self._call.cancel()

    async def _stream_once(self, stub: pb_grpc.NodeStub) -> bool:
        """Run one stream until it breaks; True if the peer answered at all."""
        self._sender_end = sender_end = self.runtime.sender_end(self.peer)
        call = stub.Channel(
            metadata=(
                (SENDER_METADATA, self.runtime.node_id),
                (CHANNEL_METADATA, encode_sender_end(sender_end)),
            )
        )
        self._call = call
        connected = asyncio.Event()
        reader = asyncio.create_task(self._read_acks(call, connected))
        try:
            await self._write_frames(call, reader)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass
        finally:
            call.cancel()
            if not reader.done():
                reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            if connected.is_set():
                self.runtime.set_connected(self.peer, "out", False)
        return connected.is_set()

    async def _write_frames(self, call: grpc.aio.StreamStreamCall, reader: asyncio.Task) -> None:
        after = 0  # a new stream starts from the oldest unacknowledged frame
        # One event wakes this loop for both new frames and the end of the
        # stream: cheaper per wake-up than a task and asyncio.wait per frame.
        reader.add_done_callback(lambda _: self.ready.set())
        while not reader.done():
            frames = self.runtime.frames_after(self.peer, after)
            if not frames:
                self.ready.clear()
                await self.ready.wait()
                continue
            await self._hold(frames[-1].seq, time.monotonic())
            if reader.done():
                return
            # One gRPC message per wake-up: a bundle when several frames are ready.
            await call.write(frames[0] if len(frames) == 1 else pb.Frame(bundle=frames))
            after = frames[-1].seq

    async def _hold(self, seq: int, first_seen: float) -> None:
        """Simulated link latency (`link_delay_ms`): frames leave about
        `link_delay` after this task first saw them (the newest is `seq`), so
        that on a fast LAN money is visibly in flight. Every frame waits the
        same time, in seq order, so FIFO holds; resent frames are not delayed
        again.
        """
        if self.link_delay <= 0 or seq <= self._newest_seen:
            return
        self._newest_seen = seq
        delay = first_seen + self.link_delay - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _read_acks(self, call: grpc.aio.StreamStreamCall, connected: asyncio.Event) -> None:
        try:
            while True:
                ack = await call.read()
                if ack is grpc.aio.EOF:
                    if connected.is_set():
                        self._log.info("peer disconnected", reason="stream closed by peer")
                    return
                if not connected.is_set():
                    if not self._handshake(receiver_end_of(ack)):
                        return
                    connected.set()
                    self.runtime.set_connected(self.peer, "out", True)
                    self._log.info("peer connected", acked=ack.seq, epoch=ack.epoch)
                self.runtime.acknowledge(self.peer, ack.seq, ack.epoch)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details()
            if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED):
                return
            if code in REJECTION_CODES.values() or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self._log.error("peer rejected channel", code=code.name, details=details)
            elif connected.is_set():
                self._log.warning("peer disconnected", code=code.name, details=details)
            else:
                self._log.debug("peer unreachable", code=code.name)

    def _handshake(self, receiver: ReceiverEnd) -> bool:
        """Judge the channel from the receiver's first ack; False: do not send on it."""
        verdict = judge_channel(self.runtime.node_id, self.peer, self._sender_end, receiver)
        if verdict.stale is Stale.SENDER:
            self._log.error("this node's data dir is stale", reason=verdict.reason)
            if self.on_stale is not None:
                self.on_stale(verdict.reason)
            return False
        if verdict.stale is Stale.RECEIVER:
            self._log.warning("peer's data dir is stale", reason=verdict.reason)
            return False
        self.runtime.channel_verified(self.peer)
        return True


# --------------------------------------------------------------- receiving


@dataclass
class StreamLimits:
    per_peer: int = 2  # streams of one configured peer; a newer one supersedes the oldest
    anonymous: int = 16  # streams that name no sender, together


@dataclass(eq=False)
class _Stream:
    peer: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    pending: int = 0
    ack_seq: int = 0
    error: BaseException | None = None
    superseded: bool = False
    reader_done: bool = False

    def on_result(self, future: asyncio.Future[object]) -> None:
        result = future.result()
        self.pending -= 1
        if self.pending < MAX_PENDING_PER_STREAM:
            self.room.set()
        if isinstance(result, BaseException):
            if self.error is None:
                self.error = result
        elif isinstance(result, int) and result > self.ack_seq:
            self.ack_seq = result
        self.wake.set()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.wake.set()


class StreamRegistry:
    """Open Channel streams, by peer; enforces `StreamLimits`."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self._by_peer: dict[str, list[_Stream]] = {}
        self._anonymous: list[_Stream] = []

    def admit(self, stream: _Stream) -> bool:
        """Register `stream`; False if it must be refused (RESOURCE_EXHAUSTED)."""
        if stream.peer is None:
            if len(self._anonymous) >= self.limits.anonymous:
                return False
            self._anonymous.append(stream)
            return True
        streams = self._by_peer.setdefault(stream.peer, [])
        while len(streams) >= self.limits.per_peer:
            oldest = streams.pop(0)
            oldest.superseded = True
            oldest.wake.set()
        streams.append(stream)
        return True

    def release(self, stream: _Stream) -> None:
        if stream.peer is None:
            if stream in self._anonymous:
                self._anonymous.remove(stream)
        else:
            streams = self._by_peer.get(stream.peer, [])
            if stream in streams:
                streams.remove(stream)

    def streams(self) -> list[_Stream]:
        return [*self._anonymous, *(s for streams in self._by_peer.values() for s in streams)]

    @property
    def open_streams(self) -> int:
        return len(self._anonymous) + sum(len(s) for s in self._by_peer.values())


def metadata_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The sender a stream claims (`cl-sender` metadata), or None."""
    for key, value in context.invocation_metadata() or ():
        if key == SENDER_METADATA and isinstance(value, str):
            return value
    return None


class ChannelService:
    """The receiving end of every incoming channel of one node."""

    def __init__(
        self,
        runtime: NodeRuntime,
        committer: GroupCommitter,
        limits: StreamLimits | None = None,
        identity_of: Callable[[grpc.aio.ServicerContext], str | None] = metadata_identity,
        *,
        authenticate: bool = False,
        refusals: RefusalLog | None = None,
        on_stale: Callable[[str], object] | None = None,
        ack_delay: float | None = None,
    ) -> None:
        """`on_stale(reason)`: a handshake found this node's data dir stale.

        `authenticate` (mutual TLS): a stream is accepted only from a node's
        certificate, and carries frames of that node only: a certificate for
        n2 can neither open the channel of n3 nor slip in a frame "from" n3.
        `ack_delay`: see ACK_DELAY (None: ACK_DELAY; 0: every ack at once)."""
        self.runtime = runtime
        self.ack_delay = ACK_DELAY if ack_delay is None else ack_delay
        self.committer = committer
        self.registry = StreamRegistry(limits or StreamLimits())
        self.identity_of = identity_of
        self.authenticate = authenticate
        self.on_stale = on_stale
        self._log = log.bind(node_id=runtime.node_id)
        self.refusals = refusals or RefusalLog(self._log)

    def drop_all(self) -> None:
        """End every incoming stream (a restore committed): senders reconnect
        and handshake again in the new epoch."""
        for stream in self.registry.streams():
            stream.superseded = True
            stream.wake.set()

    def _judge(self, context: grpc.aio.ServicerContext, peer: str) -> FrameRejected | None:
        """The receiver's judgement of the sender's handshake (None: frames may flow)."""
        sender = None
        for key, value in context.invocation_metadata() or ():
            if key == CHANNEL_METADATA and isinstance(value, str):
                sender = decode_sender_end(value)
        if sender is None:
            return None  # a sender that does not handshake: admission still checks epochs
        verdict = judge_channel(peer, self.runtime.node_id, sender, self.runtime.receiver_end(peer))
        if verdict.stale is Stale.RECEIVER:
            self._log.error("this node's data dir is stale", reason=verdict.reason)
            if self.on_stale is not None:
                self.on_stale(verdict.reason)
            return StaleChannel(verdict.reason)
        if verdict.stale is Stale.SENDER:
            self._log.warning("peer's data dir is stale", peer=peer, reason=verdict.reason)
            return StaleChannel(verdict.reason)
        return None

    async def serve(self, context: grpc.aio.ServicerContext) -> None:
        """The Node.Channel handler (reads with context.read, acks with context.write)."""
        runtime = self.runtime
        peer = self.identity_of(context)
        if self.authenticate:
            who = peer_identity(context)
            claimed = peer
            peer = peer if peer is not None else (who.name if who is not None else None)
            refused = refusal(who, {"node"}, peer)
            if refused is not None:
                code, message = refused
                self.refusals.refused(who, "Channel", code, message, claimed=claimed)
                await context.abort(code, message)
        if peer is not None and peer not in runtime.incoming:
            await self._reject(
                context, UnknownSender(f"{peer!r} has no channel to {runtime.node_id}"), peer
            )
        stream = _Stream(peer, ack_seq=-1)  # anonymous: no ack until a frame is applied
        if not self.registry.admit(stream):
            self._log.warning("stream refused: too many", open=self.registry.open_streams)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{runtime.node_id} has {self.registry.limits.anonymous} streams that name no "
                f"sender open already; name the sender in '{SENDER_METADATA}' metadata",
            )
        reader: asyncio.Task[None] | None = None
        if peer is not None:
            runtime.set_connected(peer, "in", True)
            self._log.info("peer connected", peer=peer, direction="incoming")
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        due = self.ack_delay <= 0

        def ack_due() -> None:
            nonlocal due
            due = True
            stream.wake.set()

        try:
            acked = -1
            epoch = runtime.epoch
            if peer is not None:
                end = runtime.receiver_end(peer)
                acked = stream.ack_seq = end.last_applied
                # The first ack is the receiver's half of the handshake, sent even
                # when the channel is refused, so the sender can judge it too.
                await context.write(ack_of(end))
                stale = self._judge(context, peer)
                if stale is not None:
                    await self._reject(context, stale, peer)
            # Frames are read only once the handshake passed: a stale end must
            # neither apply nor acknowledge anything.
            reader = asyncio.create_task(self._read(context, stream))
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                if runtime.epoch != epoch:
                    break  # a restore committed: acks of this stream belong to the old epoch
                if stream.ack_seq > acked:
                    if (
                        due
                        or stream.ack_seq - acked >= ACK_EVERY
                        or stream.error is not None
                        or stream.superseded
                        or stream.reader_done
                    ):
                        if timer is not None:
                            timer.cancel()
                            timer = None
                        due = self.ack_delay <= 0
                        acked = stream.ack_seq
                        await context.write(pb.Ack(seq=acked, epoch=epoch))
                    elif timer is None:
                        timer = loop.call_later(self.ack_delay, ack_due)
                if stream.error is not None:
                    break
                if stream.superseded:
                    await context.abort(
                        grpc.StatusCode.ABORTED, f"superseded by a newer stream from {peer}"
                    )
                if stream.reader_done and stream.pending == 0:
                    return
            error = stream.error
            if error is None:
                await context.abort(
                    grpc.StatusCode.ABORTED, f"{runtime.node_id} moved to epoch {runtime.epoch}"
                )
            if isinstance(error, FrameRejected):
                await self._reject(context, error, peer)
            elif isinstance(error, NodeClosed):
                # Not applied, not acked: the sender resends it to the next incarnation.
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"{runtime.node_id} is shutting down"
                )
            else:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"{runtime.node_id} could not apply: {error}"
                )
        finally:
            if timer is not None:
                timer.cancel()
            if reader is not None:
                reader.cancel()
            self.registry.release(stream)
            if peer is not None:
                runtime.set_connected(peer, "in", False)
                self._log.info("peer disconnected", peer=peer, direction="incoming")

    async def _read(self, context: grpc.aio.ServicerContext, stream: _Stream) -> None:
        incoming = self.runtime.incoming
        try:
            while stream.error is None:
                message = await context.read()
                if message is grpc.aio.EOF:
                    break
                frames = message.bundle if message.bundle else (message,)
                for frame in frames:
                    sender = frame.sender
                    if frame.bundle:
                        stream.fail(BadFrame(f"a bundle inside a bundle from {sender!r}"))
                        return
                    if stream.peer is not None and sender != stream.peer:
                        stream.fail(
                            UnknownSender(f"frame from {sender!r} on the stream of {stream.peer!r}")
                        )
                        return
                    if sender not in incoming:
                        stream.fail(
                            UnknownSender(f"{sender!r} has no channel to {self.runtime.node_id}")
                        )
                        return
                    stream.pending += 1
                    self.committer.submit(ReceiveFrame(frame)).add_done_callback(stream.on_result)
                while stream.pending >= MAX_PENDING_PER_STREAM:
                    stream.room.clear()
                    await stream.room.wait()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the stream broke (peer gone): stop reading
            if stream.error is None and not isinstance(error, grpc.aio.AioRpcError):
                self._log.debug("stream read failed", error=repr(error))
        stream.reader_done = True
        stream.wake.set()

    async def _reject(
        self, context: grpc.aio.ServicerContext, error: FrameRejected, peer: str | None
    ) -> None:
        code = rejection_code(error)
        self._log.warning("frame rejected", peer=peer, code=code.name, reason=str(error))
        await context.abort(code, public_reason(error))
