"""One node at run time: the core, its store and its outbox, behind one lock.

The core decides; this module performs its actions durably. Every event (a
local transfer, a received frame, a snapshot start) runs under the lock as:

    actions = core.<event>()           # raises -> nothing changed anywhere
    one SQLite transaction:            # core state + frames + reports together
        core JSON, recorded messages, outbox frames, next seqs,
        last applied seq, reports
    publish in memory                  # only after the commit succeeded
    wake the sender / reporter threads

so a debit never exists without its outbox frame, a credit never without its
last-applied seq (nor, while a snapshot records its channel, without its
recorded-message row), and a marker never without the recording that
produced it. The core JSON leaves out what active snapshots recorded: each
recorded message is one row, written once, so an event costs the same at the
end of a long recording as at its start.

Acknowledgements are the one thing written lazily: forgetting an acked frame
is folded into the next transaction, because losing that deletion in a crash
only makes the sender resend frames the receiver then drops as duplicates.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from common.config import ClusterConfig
from common.timeutil import utc_now_iso
from node import wire
from node.core import (
    Action,
    InvalidState,
    LocalSnapshotDone,
    Marker,
    MessageRecorded,
    NodeCore,
    ProtocolViolation,
    RecordedMessage,
    Send,
    SnapshotRecorded,
    validate_snapshot_id,
)
from node.storage import Change, Identity, StorageError, Store, StoredState
from node.timeline import (
    MARKER_RECEIVED,
    MARKER_SENT,
    TRANSFER_RECEIVED,
    TRANSFER_SENT,
    TimelineEvent,
    TimelineRecorder,
)
from protos import chandy_lamport_pb2 as pb

_log = structlog.get_logger("node.runtime")

# Frames handed to a sender stream per wake-up: bounds the time the lock is held.
FRAME_BATCH = 256


class NodeClosed(Exception):
    """The runtime was closed (shutdown): no more state changes are accepted."""


class FrameRejected(Exception):
    """A received frame that is not applied; the stream carrying it is aborted."""


class UnknownSender(FrameRejected):
    """The frame's sender has no channel to this node."""


class WrongReceiver(FrameRejected):
    """The frame is addressed to another node."""


class SequenceGap(FrameRejected):
    """The frame skips sequence numbers: a frame before it was lost."""


class BadFrame(FrameRejected):
    """The frame is malformed or the core refuses it (a protocol violation)."""


class NodeRuntime:
    """The state of one running node; every public method is thread-safe."""

    def __init__(
        self,
        config: ClusterConfig,
        node_id: str,
        store: Store,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        spec = config.node(node_id)
        self.node_id = node_id
        self.incoming = config.incoming(node_id)
        self.outgoing = config.outgoing(node_id)
        self._store = store
        self._clock = clock
        # Bound explicitly (not only via contextvars): runtime methods run on
        # callers' threads, and tests run several nodes in one process.
        self._log = log = _log.bind(node_id=node_id)
        identity = Identity(node_id, self.incoming, self.outgoing)
        if store.identity() is None:
            core = NodeCore(node_id, spec.balance, self.incoming, self.outgoing)
            store.initialise(identity, core.to_dict())
            log.info("data dir initialised", data_dir=str(store.data_dir), balance=spec.balance)
        else:
            store.check_identity(identity)
        state = store.load()
        self._core = self._core_of(state)
        self._last_applied = dict(state.last_applied)
        self._next_seq = dict(state.next_seq)
        self._outbox: dict[str, deque[pb.Frame]] = {
            peer: deque(pb.Frame.FromString(raw) for _, raw in state.outbox.get(peer, []))
            for peer in self.outgoing
        }
        self._acked: dict[str, int] = {}  # acks not yet deleted from the DB outbox
        self._recorded_at = dict(state.recorded_at)
        self._recorded_lamport = dict(state.recorded_lamport)
        self._timeline = TimelineRecorder(clock=state.lamport)
        self._wall_clock = time.time
        # Which channels have a stream open now, and whether the workload runs
        # (set by the transport and the workload; shown by GetStatus).
        self._connected_out: set[str] = set()
        self._connected_in: dict[str, int] = {}
        self.workload_running = False
        # Reports not yet acked by the collector, and their bytes as stored
        # (a delivered report is deleted only if it is still the stored one).
        self._report_bytes: dict[str, bytes] = dict(state.reports)
        self._reports: dict[str, pb.LocalSnapshot] = {
            sid: pb.LocalSnapshot.FromString(raw) for sid, raw in state.reports.items()
        }
        self._lock = threading.Lock()
        self._frames_ready = {peer: threading.Condition(self._lock) for peer in self.outgoing}
        self._reports_ready = threading.Condition(self._lock)
        self._closed = False
        log.info(
            "state loaded",
            balance=self._core.balance,
            unacknowledged=sum(len(q) for q in self._outbox.values()),
            active_snapshots=list(self._core.active_snapshots),
            pending_reports=len(self._reports),
        )

    # ----------------------------------------------------------- application

    def send_transfer(self, peer: str, amount: int) -> None:
        """Move `amount` to `peer` (raises the core's errors if it cannot)."""
        with self._lock:
            self._apply(lambda: self._core.send_transfer(peer, amount))

    def send_random_transfer(self, rng: random.Random, max_amount: int, max_in_flight: int) -> bool:
        """One workload transfer to a random peer; False if nothing could be sent.

        Peers with `max_in_flight` unacknowledged frames are skipped, so a peer
        that is down does not make the outbox grow without bound.
        """
        with self._lock:
            balance = self._core.balance
            peers = [p for p in self.outgoing if len(self._outbox[p]) < max_in_flight]
            if balance <= 0 or not peers:
                return False
            peer = rng.choice(peers)
            amount = rng.randint(1, min(balance, max_amount))
            self._apply(lambda: self._core.send_transfer(peer, amount))
            return True

    def start_snapshot(self, snapshot_id: str) -> bool:
        """Initiate `snapshot_id` here; True if this node had already recorded it."""
        validate_snapshot_id(snapshot_id)
        with self._lock:
            if self._core.has_recorded(snapshot_id):
                return True
            self._log.info("snapshot initiated", snapshot_id=snapshot_id)
            self._apply(lambda: self._core.initiate_snapshot(snapshot_id), local_event=True)
            return False

    # -------------------------------------------------------------- incoming

    def last_applied(self, peer: str) -> int:
        with self._lock:
            return self._last_applied[peer]

    def receive(self, frame: pb.Frame) -> int:
        """Apply `frame` exactly once; returns the seq to acknowledge.

        A duplicate (seq already applied) is acknowledged and not applied.
        Raises a FrameRejected subclass for anything that must not be applied.
        """
        sender = frame.sender
        with self._lock:
            if sender not in self._last_applied:
                raise UnknownSender(f"{sender!r} has no channel to {self.node_id}")
            if frame.receiver != self.node_id:
                raise WrongReceiver(
                    f"frame {frame.seq} from {sender} is addressed to {frame.receiver!r}, "
                    f"this is {self.node_id}"
                )
            if frame.seq == 0:
                raise BadFrame(f"frame from {sender} has seq 0 (sequence numbers start at 1)")
            last = self._last_applied[sender]
            if frame.seq <= last:
                return last
            if frame.seq != last + 1:
                raise SequenceGap(
                    f"frame {frame.seq} from {sender} after {last}: "
                    f"frames {last + 1}..{frame.seq - 1} are missing"
                )
            try:
                payload = wire.payload_of(frame)
                self._apply(
                    lambda: self._core.receive(sender, payload),
                    applied=(sender, frame.seq),
                    marker_of=payload.snapshot_id if isinstance(payload, Marker) else None,
                    received=frame,
                )
            except (wire.MalformedFrame, ProtocolViolation) as error:
                raise BadFrame(str(error)) from error
            return frame.seq

    # -------------------------------------------------------------- outgoing

    def wait_frames(self, peer: str, after: int, timeout: float) -> list[pb.Frame]:
        """Unacknowledged frames to `peer` with seq > `after`, waiting up to `timeout`.

        Returns [] on timeout or after `close`.
        """
        ready = self._frames_ready[peer]
        with ready:
            while True:
                queue = self._outbox[peer]
                if queue:
                    start = max(0, after + 1 - queue[0].seq)
                    if start < len(queue):
                        return list(itertools.islice(queue, start, start + FRAME_BATCH))
                if self._closed or not ready.wait(timeout):
                    return []

    def acknowledge(self, peer: str, seq: int) -> None:
        """`peer` durably applied every frame up to `seq`."""
        with self._lock:
            queue = self._outbox[peer]
            if seq >= self._next_seq[peer]:
                # The peer applied frames this node never sent: one of the two
                # data dirs was replaced. Resending cannot repair that; say so.
                self._log.error(
                    "peer acked frames this node never sent (data dirs out of sync)",
                    peer=peer,
                    acked=seq,
                    last_sent=self._next_seq[peer] - 1,
                )
                return
            while queue and queue[0].seq <= seq:
                queue.popleft()
            if seq > self._acked.get(peer, 0):
                self._acked[peer] = seq

    # --------------------------------------------------------------- reports

    def wait_reports(self, timeout: float) -> list[pb.LocalSnapshot]:
        """Reports not yet acked by the collector, waiting up to `timeout` for one."""
        with self._reports_ready:
            if not self._reports and not self._closed:
                self._reports_ready.wait(timeout)
            return list(self._reports.values())

    def report_delivered(self, report: pb.LocalSnapshot) -> bool:
        """The collector acked `report` (or refused it for good): stop sending it.

        A progress report may have been replaced by the snapshot's final
        report while it was being sent; then nothing is deleted (returns
        False) and the final report is still delivered.
        """
        sid = report.snapshot_id
        with self._lock:
            self._check_open()
            if self._reports.get(sid) != report:
                return False
            self._store.delete_report(sid, self._report_bytes[sid])
            del self._reports[sid]
            del self._report_bytes[sid]
            return True

    # ---------------------------------------------------------------- status

    def status(self) -> pb.NodeStatus:
        with self._lock:
            core = self._core
            channels = [
                pb.ChannelStatus(
                    peer=peer,
                    direction="out",
                    sent_or_received=core.sent[peer],
                    unacked=len(self._outbox[peer]),
                    connected=peer in self._connected_out,
                )
                for peer in self.outgoing
            ] + [
                pb.ChannelStatus(
                    peer=peer,
                    direction="in",
                    sent_or_received=core.received[peer],
                    unacked=0,
                    connected=self._connected_in.get(peer, 0) > 0,
                )
                for peer in self.incoming
            ]
            return pb.NodeStatus(
                node_id=self.node_id,
                balance=core.balance,
                active_snapshots=list(core.active_snapshots),
                unacknowledged_frames=sum(len(q) for q in self._outbox.values()),
                channels=channels,
                workload_running=self.workload_running,
            )

    def set_connected(self, peer: str, direction: str, connected: bool) -> None:
        """The transport opened (True) or lost (False) a stream on a channel."""
        with self._lock:
            if direction == "out":
                if connected:
                    self._connected_out.add(peer)
                else:
                    self._connected_out.discard(peer)
            else:
                count = self._connected_in.get(peer, 0) + (1 if connected else -1)
                self._connected_in[peer] = max(0, count)

    def in_flight_amount(self) -> int:
        """Money in unacknowledged transfer frames (some may already be applied)."""
        with self._lock:
            return sum(wire.transfer_amount(f) for q in self._outbox.values() for f in q)

    def close(self) -> None:
        """Flush lazy acks, refuse further changes, wake every waiter.

        The store is closed by its owner, after this returns: from here on no
        thread touches it, because every change checks `_closed` under the lock.
        """
        with self._lock:
            if self._closed:
                return
            self._flush_acks()
            self._closed = True
            for ready in self._frames_ready.values():
                ready.notify_all()
            self._reports_ready.notify_all()

    # ------------------------------------------------------------- internals

    def _core_of(self, state: StoredState) -> NodeCore:
        """The core as stored: its JSON, the messages its active snapshots
        recorded and the ids of the snapshots it finished."""
        recorded = {
            sid: {
                sender: [RecordedMessage(seq, amount) for seq, amount in messages]
                for sender, messages in by_sender.items()
            }
            for sid, by_sender in state.recorded_messages.items()
        }
        try:
            return NodeCore.from_dict(state.core, recorded, state.finished)
        except InvalidState as error:
            raise StorageError(f"data dir {self._store.data_dir}: {error}") from error

    def _timeline_of(
        self, snapshot_id: str, pending: list[tuple[str, tuple[object, ...]]]
    ) -> tuple[TimelineEvent, ...]:
        """The timeline of `snapshot_id` including this event's entries (not yet
        applied to the recorder): replayed on a copy so the recorder is unchanged."""
        copy = self._timeline.copy()
        for method, args in pending:
            getattr(copy, method)(*args)
        return copy.events(snapshot_id)

    def _check_open(self) -> None:
        if self._closed:
            raise NodeClosed(f"node {self.node_id} is shutting down")

    def _flush_acks(self) -> None:
        for peer, seq in self._acked.items():
            self._store.acknowledge(peer, seq)
        self._acked.clear()

    def _apply(
        self,
        event: Callable[[], list[Action]],
        applied: tuple[str, int] | None = None,
        marker_of: str | None = None,
        received: pb.Frame | None = None,
        local_event: bool = False,
    ) -> None:
        """Run a core event and make its effects durable, then visible. Lock held.

        `marker_of`: the event is a marker of that snapshot, which may have
        closed one of its channels (the progress report is then renewed).
        `received`: the frame this event applies (its Lamport clock is
        witnessed); `local_event`: a snapshot initiated here (a clock tick).
        Timeline entries are computed here but applied to the recorder only
        after the commit, like every other in-memory effect.
        """
        self._check_open()
        actions = event()
        try:
            self._commit_actions(actions, applied, marker_of, received, local_event)
        except BaseException:
            # The core already moved on in memory; put it back to what is on disk.
            self._core = self._core_of(self._store.load())
            raise

    def _commit_actions(
        self,
        actions: list[Action],
        applied: tuple[str, int] | None,
        marker_of: str | None,
        received: pb.Frame | None,
        local_event: bool,
    ) -> None:
        now = self._wall_clock()
        lamport = self._timeline.clock
        if received is not None:
            lamport = max(lamport, received.lamport) + 1
        elif local_event:
            lamport += 1
        event_lamport = lamport
        # (recorder method name, args) applied after the commit, in order
        timeline: list[tuple[str, tuple[object, ...]]] = []
        opened = [a.snapshot_id for a in actions if isinstance(a, SnapshotRecorded)]
        for sid in opened:
            timeline.append(("opened", (sid, event_lamport)))
        if received is not None:
            body = received.WhichOneof("body")
            if body == "transfer":
                timeline.append((
                    "transfer",
                    (TRANSFER_RECEIVED, received.sender, received.transfer.transfer_seq,
                     received.transfer.amount, now, event_lamport),
                ))  # fmt: skip
            elif body == "marker":
                timeline.append((
                    "marker",
                    (MARKER_RECEIVED, received.sender, received.seq,
                     received.marker.snapshot_id, now, event_lamport),
                ))  # fmt: skip
        change = Change(core=self._core.to_dict(), applied=applied, acked=dict(self._acked))
        frames: list[tuple[str, pb.Frame]] = []
        recorded_now: dict[str, str] = {}
        done: list[str] = []
        reports: dict[str, pb.LocalSnapshot] = {}
        report_bytes: dict[str, bytes] = {}
        for action in actions:
            if isinstance(action, Send):
                seq = change.next_seq.get(action.to, self._next_seq[action.to])
                lamport += 1
                frame = wire.frame_for(self.node_id, action.to, seq, action.payload, lamport)
                change.outbox.append((action.to, seq, frame.SerializeToString()))
                change.next_seq[action.to] = seq + 1
                frames.append((action.to, frame))
                payload = action.payload
                if isinstance(payload, Marker):
                    timeline.append((
                        "marker",
                        (MARKER_SENT, action.to, seq, payload.snapshot_id, now, lamport),
                    ))  # fmt: skip
                else:
                    timeline.append((
                        "transfer",
                        (TRANSFER_SENT, action.to, payload.transfer_seq, payload.amount, now,
                         lamport),
                    ))  # fmt: skip
            elif isinstance(action, SnapshotRecorded):
                recorded_now[action.snapshot_id] = self._clock()
                change.recorded.append(
                    (action.snapshot_id, recorded_now[action.snapshot_id], event_lamport)
                )
            elif isinstance(action, MessageRecorded):
                message = action.message
                change.messages.append(
                    (action.snapshot_id, action.sender, message.transfer_seq, message.amount)
                )
            elif isinstance(action, LocalSnapshotDone):
                sid = action.snapshot.snapshot_id
                recorded_at = recorded_now.get(sid) or self._recorded_at.get(sid, "")
                report = wire.snapshot_report(
                    action.snapshot,
                    recorded_at,
                    self._clock(),
                    self._timeline_of(sid, timeline),
                    event_lamport if sid in recorded_now else self._recorded_lamport.get(sid, 0),
                )
                report_bytes[sid] = report.SerializeToString()
                change.reports.append((sid, report_bytes[sid]))
                reports[sid] = report
                done.append(sid)
        # Recorded, or a channel closed, but not done by this same event: a
        # progress report (replacing the previous one), so that the collector
        # can tell who was still waiting for whom if the snapshot never
        # completes. The final report replaces it in turn.
        touched = list(recorded_now)
        if marker_of is not None and marker_of not in recorded_now:
            touched.append(marker_of)
        for sid in touched:
            progress = self._core.progress(sid)
            if progress is not None:
                so_far, open_channels = progress
                recorded_at = recorded_now.get(sid) or self._recorded_at.get(sid, "")
                report = wire.progress_report(
                    so_far,
                    open_channels,
                    recorded_at,
                    self._timeline_of(sid, timeline),
                    event_lamport if sid in recorded_now else self._recorded_lamport.get(sid, 0),
                )
                report_bytes[sid] = report.SerializeToString()
                change.progress.append((sid, report_bytes[sid]))
                reports[sid] = report
        change.lamport = lamport
        self._store.commit(change)
        # Committed: from here on only in-memory effects, which cannot fail.
        self._acked.clear()
        for method, args in timeline:
            getattr(self._timeline, method)(*args)
        self._timeline.clock = lamport
        for sid in done:
            self._timeline.closed(sid)
        if applied is not None:
            self._last_applied[applied[0]] = applied[1]
        self._next_seq.update(change.next_seq)
        for peer, frame in frames:
            self._outbox[peer].append(frame)
        for peer in {peer for peer, _ in frames}:
            self._frames_ready[peer].notify_all()
        self._recorded_at.update(recorded_now)
        for sid in recorded_now:
            self._recorded_lamport[sid] = event_lamport
        for sid in recorded_now:
            self._log.info("snapshot recorded", snapshot_id=sid, balance=self._core.balance)
        for sid in done:
            self._recorded_at.pop(sid, None)
            self._recorded_lamport.pop(sid, None)
            self._log.info("snapshot done", snapshot_id=sid, balance=reports[sid].balance)
        if reports:
            self._reports.update(reports)
            self._report_bytes.update(report_bytes)
            self._reports_ready.notify_all()
