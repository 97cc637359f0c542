"""One node at run time: the core, its store and its outbox; events applied in batches.

The core decides; this module performs its actions durably. Events (a local
transfer, a received frame, a snapshot start, a delivered report) are applied
in batches, in three steps:

    prepare(events)  # on the event loop: run each event through the core and
                     # collect what it produced into ONE storage Change
                     # (core JSON, recorded messages, outbox frames, next seqs,
                     # last applied seqs, final reports, Lamport clock).
                     # Only the core is mutated; everything else is batch-local.
    commit(batch)    # one SQLite transaction (the committer's writer thread under FULL)
    publish(batch)   # on the event loop, only after the commit succeeded:
                     # outbox, last applied seqs (acks), reports, timeline,
                     # status; the transport then sends and acks

so a debit never exists without its outbox frame, a credit never without its
last-applied seq (nor, while a snapshot records its channel, without its
recorded-message row), a marker never leaves before the recording that
produced it is on disk, and an ack never goes out before the credit it
acknowledges. Events that arrive together share one transaction (group
commit, node/committer.py); a lone marker is a batch of one.

Atomicity, per event and per batch:

* An event the core refuses (`CoreError`, or the `ValueError`s of bad
  arguments) changed nothing: its result is the error, the batch goes on.
* An event that fails after the core moved (anything else, e.g. a value that
  cannot be encoded) is undone by reloading the core from disk -- which holds
  the state before this batch -- and the batch is prepared again without it.
* A commit that fails (disk full, I/O error) is undone the same way: the core
  is reloaded, nothing was published, every event of the batch fails.

Received values are checked before the core sees them, so that nothing
beyond int64 ever enters the state: a transfer that would push the balance
past 2^63-1, or a Lamport clock at or beyond 2^63, is refused as `BadFrame`.

Acknowledgements from peers are folded lazily into the next transaction:
losing that deletion in a crash only makes the sender resend frames the
receiver then drops as duplicates.

Progress reports (a snapshot still recording) are not stored: the reporter
asks for them on a slow timer (`progress_reports`), built from committed
state only. Final reports are stored with the event that finished the
snapshot and deleted once the collector acknowledged them.

Restores (node/restore.py decides, this module performs): PrepareRestore,
CommitRestore and AbortRestore are events like the others, so the restore
state (`Participant`) is stored in the same transaction as everything else
and before the caller answers. A commit resets the batch's channel view
(every counter from 0, the old outbox and active recordings dropped:
`Change.reset_channels`) before the core's resent transfers are absorbed, so
one transaction takes the node from its old epoch to the new one. Every
frame is stamped with the core's epoch; a received frame is admitted by
`restore.admit` before anything else looks at it, and an ack of another
epoch acknowledges nothing.

Not thread-safe: one event loop owns a runtime; only `commit` may run on
another thread (the committer's writer, under FULL), and it touches nothing
but the store and the batch.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from common.config import ClusterConfig
from common.timeutil import utc_now_iso
from node import restore, wire
from node.core import (
    Action,
    CoreError,
    InvalidState,
    LocalSnapshotDone,
    Marker,
    MessageRecorded,
    NodeCore,
    ProtocolViolation,
    RecordedMessage,
    Send,
    SnapshotRecorded,
    Transfer,
    validate_snapshot_id,
)
from node.restore import (
    Admission,
    Install,
    Participant,
    ReceiverEnd,
    Refuse,
    RestoreTarget,
    Resume,
    SenderEnd,
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

INT64_MAX = 2**63 - 1
# Frames handed to a sender stream per wake-up.
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
    """The frame is malformed, out of range, or the core refuses it."""


class EpochMismatch(FrameRejected):
    """The frame belongs to another epoch than this node's (a restore is under way)."""


class NotServing(FrameRejected):
    """This node lost its state (stale data dir) and applies nothing until a restore."""


class Unavailable(CoreError):
    """A local transfer or snapshot start refused: prepared for a restore, or stale."""


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class SendTransfer:
    """The application moves `amount` to `peer`. Result: None."""

    peer: str
    amount: int


@dataclass(frozen=True)
class RandomTransfers:
    """Up to `count` workload transfers to random peers (skipping peers with
    `max_in_flight` unacknowledged frames). Result: how many were made."""

    rng: random.Random
    count: int
    max_amount: int
    max_in_flight: int


@dataclass(frozen=True)
class StartSnapshot:
    """Initiate a snapshot here. Result: True if this node had already recorded it."""

    snapshot_id: str


@dataclass(frozen=True)
class ReceiveFrame:
    """A frame arrived. Result: the seq to acknowledge (duplicates are not applied)."""

    frame: pb.Frame


@dataclass(frozen=True)
class ReportDelivered:
    """The collector acked (or refused for good) a final report. Result: True if
    it was still the stored report and is now deleted."""

    report: pb.LocalSnapshot


@dataclass(frozen=True)
class PrepareRestore:
    """Prepare for a restore (node/restore.py `prepare`). Result: the Vote."""

    target: RestoreTarget


@dataclass(frozen=True)
class CommitRestore:
    """Commit a prepared restore. Result: Install, Acknowledge or Refuse."""

    restore: int
    epoch: int


@dataclass(frozen=True)
class AbortRestore:
    """Abort a prepared restore. Result: Resume or Acknowledge."""

    restore: int


@dataclass(frozen=True)
class SetWorkload:
    """Pause (running=False) or resume the workload, durably. Result: None."""

    running: bool


@dataclass(frozen=True)
class MarkStale:
    """A channel handshake showed this node lost state (`judge_channel`). Result: None."""

    reason: str


Event = (
    SendTransfer
    | RandomTransfers
    | StartSnapshot
    | ReceiveFrame
    | ReportDelivered
    | PrepareRestore
    | CommitRestore
    | AbortRestore
    | SetWorkload
    | MarkStale
)

_RESTORE_EVENTS = (PrepareRestore, CommitRestore, AbortRestore, SetWorkload, MarkStale)

TimelineOp = tuple[str, tuple[object, ...]]  # (recorder method, arguments)


@dataclass
class Batch:
    """One group of events, prepared; committed and published together."""

    events: Sequence[Event]
    results: list[object] = field(default_factory=list)  # value or exception, per event
    change: Change = field(default_factory=Change)
    frames: list[tuple[str, pb.Frame]] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)  # sender -> last applied seq
    recorded: dict[str, tuple[str, int]] = field(default_factory=dict)  # sid -> (at, lamport)
    done: list[str] = field(default_factory=list)
    reports: dict[str, pb.LocalSnapshot] = field(default_factory=dict)
    report_bytes: dict[str, bytes] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    timeline: list[TimelineOp] = field(default_factory=list)
    lamport: int = 0
    changed: bool = False  # anything to write (else the commit is skipped)
    prepared_at: float = 0.0
    participant: Participant | None = None  # the restore state, if this batch changed it
    paused: bool | None = None  # the workload pause, if this batch changed it
    reset: bool = False  # a restore was committed: channels start again in the new epoch


@dataclass
class RuntimeStats:
    """Counters of one runtime (read by logs, benchmarks and metrics)."""

    batches: int = 0  # transactions committed
    events: int = 0  # events in them
    largest_batch: int = 0
    frames_applied: int = 0
    frames_duplicate: int = 0
    frames_rejected: int = 0
    transfers_sent: int = 0
    markers_sent: int = 0
    commit_failures: int = 0
    commit_seconds: float = 0.0  # total time in SQLite commits
    reports_delivered: int = 0


class _EventFailed(Exception):
    """An event failed after the core had changed: the core must be reloaded."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.index = index
        self.cause = cause


class _Refused(Exception):
    """An event refused before or by the core: nothing changed."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class NodeRuntime:
    """The state of one running node (see the module docstring)."""

    def __init__(
        self,
        config: ClusterConfig,
        node_id: str,
        store: Store,
        clock: Callable[[], str] = utc_now_iso,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        spec = config.node(node_id)
        self.node_id = node_id
        self.incoming = config.incoming(node_id)
        self.outgoing = config.outgoing(node_id)
        self._store = store
        self._clock = clock
        self._wall_clock = wall_clock
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
        self._recorded_since: dict[str, float] = dict.fromkeys(state.recorded_at, 0.0)
        # Final reports not yet acked by the collector, and their bytes as stored.
        # Progress reports stored by an older version are dropped (the timer
        # rebuilds them from the recording).
        self._report_bytes: dict[str, bytes] = {}
        self._reports: dict[str, pb.LocalSnapshot] = {}
        self._stale_reports: list[tuple[str, bytes]] = []
        for sid, raw in state.reports.items():
            report = pb.LocalSnapshot.FromString(raw)
            if report.complete:
                self._reports[sid] = report
                self._report_bytes[sid] = raw
            else:
                self._stale_reports.append((sid, raw))
        self._timeline = TimelineRecorder(clock=state.lamport)
        self._closed = False
        self._in_flight: Batch | None = None
        self.stats = RuntimeStats()
        # Which channels have a stream open now, and whether the workload runs
        # (set by the transport and the workload; shown by GetStatus).
        self._connected_out: set[str] = set()
        self._connected_in: dict[str, int] = {}
        self.workload_running = False
        # The restore protocol's state (node/restore.py) and the operator's pause.
        self.participant = (
            Participant.from_dict(state.participant)
            if state.participant is not None
            else Participant(node_id, epoch=self._core.epoch)
        )
        self.workload_paused = state.workload_paused
        # With `require_handshake` (a running node), workload transfers go only on
        # channels whose handshake showed this node's counters are not stale: a
        # node started on an old copy of its data dir must not send frames a peer
        # would drop as duplicates before it learns it is stale.
        self.require_handshake = False
        self.rejoin_note = ""  # why `--rejoin` could not bring this node back (status)
        self._verified_out: set[str] = set()
        self._refresh_view()
        log.info(
            "state loaded",
            balance=self._core.balance,
            unacknowledged=sum(len(q) for q in self._outbox.values()),
            active_snapshots=list(self._core.active_snapshots),
            pending_reports=len(self._reports),
        )

    # ------------------------------------------------- synchronous interface

    def apply(self, events: Sequence[Event]) -> list[object]:
        """Prepare, commit and publish `events` as one batch; their results
        (a value, or the exception that event raised)."""
        batch = self.prepare(events)
        try:
            self.commit(batch)
        except BaseException:
            self.rollback(batch)
            raise
        self.publish(batch)
        return batch.results

    def _one(self, event: Event) -> object:
        (result,) = self.apply([event])
        if isinstance(result, BaseException):
            raise result
        return result

    def send_transfer(self, peer: str, amount: int) -> None:
        """Move `amount` to `peer` (raises the core's errors if it cannot)."""
        self._one(SendTransfer(peer, amount))

    def send_random_transfer(self, rng: random.Random, max_amount: int, max_in_flight: int) -> bool:
        """One workload transfer to a random peer; False if nothing could be sent."""
        return bool(self._one(RandomTransfers(rng, 1, max_amount, max_in_flight)))

    def start_snapshot(self, snapshot_id: str) -> bool:
        """Initiate `snapshot_id` here; True if this node had already recorded it."""
        return bool(self._one(StartSnapshot(snapshot_id)))

    def receive(self, frame: pb.Frame) -> int:
        """Apply `frame` exactly once; returns the seq to acknowledge.

        A duplicate (seq already applied) is acknowledged and not applied.
        Raises a FrameRejected subclass for anything that must not be applied.
        """
        result = self._one(ReceiveFrame(frame))
        assert isinstance(result, int)
        return result

    def report_delivered(self, report: pb.LocalSnapshot) -> bool:
        """The collector acked `report` (or refused it for good): stop sending it."""
        return bool(self._one(ReportDelivered(report)))

    def report_delivered_lazily(self, report: pb.LocalSnapshot) -> bool:
        """`report_delivered` without a transaction of its own: the report is
        forgotten in memory now and its row deleted in the next transaction
        (like acks). Losing that deletion in a crash only makes the node send
        the report again, which the collector acknowledges as a duplicate.
        False if `report` is not the stored final report."""
        sid = report.snapshot_id
        if self._reports.get(sid) != report:
            return False
        del self._reports[sid]
        self._stale_reports.append((sid, self._report_bytes.pop(sid)))
        self.stats.reports_delivered += 1
        return True

    # -------------------------------------------------------- batch interface

    def prepare(self, events: Sequence[Event]) -> Batch:
        """Run `events` through the core; the Change that makes them durable.

        Raises NodeClosed after `close`. Per-event failures are in the results.
        """
        self._check_open()
        if self._in_flight is not None:
            raise RuntimeError("a batch is already prepared and not yet published")
        failed: dict[int, BaseException] = {}
        acked, self._acked = self._acked, {}
        stale, self._stale_reports = self._stale_reports, []
        while True:
            try:
                batch = self._prepare(events, failed)
            except _EventFailed as error:
                failed[error.index] = error.cause
                self._core = self._core_of(self._store.load())
                self._log.error(
                    "event failed after the core changed; state reloaded",
                    error=repr(error.cause),
                )
                continue
            except BaseException:
                self._merge_back(acked, stale)
                raise
            break
        if batch.reset:
            acked = {}  # acks of the old epoch: its outbox is gone
        batch.change.acked = acked
        batch.change.delete_reports.extend(stale)
        batch.changed = batch.changed or bool(acked) or bool(stale)
        batch.prepared_at = time.perf_counter()
        self._in_flight = batch
        return batch

    def commit(self, batch: Batch) -> None:
        """Write `batch` in one transaction (the only step that may run on
        another thread: it touches the store and the batch only)."""
        if not batch.changed:
            return
        started = time.perf_counter()
        self._store.commit(batch.change)
        self.stats.commit_seconds += time.perf_counter() - started

    def rollback(self, batch: Batch) -> None:
        """The commit of `batch` failed: back to what is on disk; nothing published."""
        self._in_flight = None
        self.stats.commit_failures += 1
        self._core = self._core_of(self._store.load())
        self._merge_back(batch.change.acked, batch.change.delete_reports)

    def publish(self, batch: Batch) -> None:
        """`batch` is committed: make its effects visible in memory."""
        self._in_flight = None
        if batch.reset:
            for queue in self._outbox.values():
                queue.clear()
            self._acked.clear()  # of the old epoch
            self._recorded_at.clear()
            self._recorded_lamport.clear()
            self._recorded_since.clear()
            self._timeline.forget(self._timeline.open_windows)
        if batch.participant is not None:
            if batch.participant.epoch != self.participant.epoch or batch.participant.stale:
                self._log.info(
                    "restore state changed",
                    epoch=batch.participant.epoch,
                    phase=batch.participant.phase.value,
                    reason=batch.participant.stale,
                )
            self.participant = batch.participant
        if batch.paused is not None:
            self.workload_paused = batch.paused
        self._last_applied.update(batch.applied)
        self._next_seq.update(batch.change.next_seq)
        for peer, frame in batch.frames:
            self._outbox[peer].append(frame)
        now = time.monotonic()
        for sid, (at, lamport) in batch.recorded.items():
            self._recorded_at[sid] = at
            self._recorded_lamport[sid] = lamport
            self._recorded_since[sid] = now
            self._log.info("snapshot recorded", snapshot_id=sid, balance=self._core.balance)
        for method, args in batch.timeline:
            getattr(self._timeline, method)(*args)
        self._timeline.clock = batch.lamport
        for sid in batch.done:
            self._recorded_at.pop(sid, None)
            self._recorded_lamport.pop(sid, None)
            self._recorded_since.pop(sid, None)
            self._timeline.closed(sid)
            self._log.info("snapshot done", snapshot_id=sid, balance=batch.reports[sid].balance)
        for sid in batch.delivered:
            self._reports.pop(sid, None)
            self._report_bytes.pop(sid, None)
        self._reports.update(batch.reports)
        self._report_bytes.update(batch.report_bytes)
        stats = self.stats
        if batch.changed:
            stats.batches += 1
        stats.events += len(batch.events)
        stats.largest_batch = max(stats.largest_batch, len(batch.events))
        stats.reports_delivered += len(batch.delivered)
        self._refresh_view()

    # ---------------------------------------------------------- preparation

    def _prepare(self, events: Sequence[Event], failed: dict[int, BaseException]) -> Batch:
        batch = Batch(events, lamport=self._timeline.clock)
        batch.change.core = None
        for index, event in enumerate(events):
            if index in failed:
                batch.results.append(failed[index])
                continue
            try:
                batch.results.append(self._prepare_event(batch, event))
            except _Refused as refused:
                batch.results.append(refused.cause)
            except _EventFailed as error:
                error.index = index
                raise
        if batch.changed:
            batch.change.core = self._core.to_dict()
            batch.change.lamport = batch.lamport
        batch.change.applied = dict(batch.applied)
        return batch

    def _prepare_event(self, batch: Batch, event: Event) -> object:
        if isinstance(event, ReceiveFrame):
            return self._prepare_receive(batch, event.frame)
        if isinstance(event, _RESTORE_EVENTS):
            return self._prepare_restore_event(batch, event)
        if isinstance(event, SendTransfer | StartSnapshot):
            why = restore.may_originate(self._participant_in(batch))
            if why is not None:
                raise _Refused(Unavailable(why))
        if isinstance(event, SendTransfer):
            actions = self._core_call(lambda: self._core.send_transfer(event.peer, event.amount))
            self._absorb(batch, actions, batch.lamport)
            return None
        if isinstance(event, RandomTransfers):
            return self._prepare_random(batch, event)
        if isinstance(event, StartSnapshot):
            sid = event.snapshot_id
            self._core_call(lambda: validate_snapshot_id(sid))
            if self._core.has_recorded(sid):
                return True
            self._log.info("snapshot initiated", snapshot_id=sid)
            actions = self._core_call(lambda: self._core.initiate_snapshot(sid))
            batch.lamport += 1  # a local event
            self._absorb(batch, actions, batch.lamport)
            return False
        return self._prepare_delivered(batch, event.report)

    # -------------------------------------------------------------- restore

    def _participant_in(self, batch: Batch) -> Participant:
        return batch.participant if batch.participant is not None else self.participant

    def _paused_in(self, batch: Batch) -> bool:
        return batch.paused if batch.paused is not None else self.workload_paused

    def _set_participant(self, batch: Batch, state: Participant) -> None:
        if state == self._participant_in(batch):
            return
        batch.participant = state
        batch.change.participant = state.to_dict()
        batch.changed = True

    def _set_paused(self, batch: Batch, paused: bool) -> None:
        if paused == self._paused_in(batch):
            return
        batch.paused = paused
        batch.change.workload_paused = paused
        batch.changed = True

    def _prepare_restore_event(
        self,
        batch: Batch,
        event: PrepareRestore | CommitRestore | AbortRestore | SetWorkload | MarkStale,
    ) -> object:
        state = self._participant_in(batch)
        if isinstance(event, SetWorkload):
            self._set_paused(batch, not event.running)
            return None
        if isinstance(event, MarkStale):
            self._set_participant(batch, restore.mark_stale(state, event.reason))
            return None
        if isinstance(event, PrepareRestore):
            running = not self._paused_in(batch)
            new, vote = restore.prepare(state, event.target, self.outgoing, running)
            self._set_participant(batch, new)
            return vote
        if isinstance(event, AbortRestore):
            new, aborted = restore.abort(state, event.restore)
            if isinstance(aborted, Resume):
                self._set_participant(batch, new)
                self._set_paused(batch, not aborted.resume_workload)
            return aborted
        new, outcome = restore.commit(state, event.restore, event.epoch)
        if not isinstance(outcome, Install):
            return outcome
        target = outcome.target
        try:
            actions = self._core_call(
                lambda: self._core.install_restore(target.epoch, target.balance, target.resend)
            )
        except _Refused as refused:
            return Refuse(str(refused.cause))
        self._reset_channels(batch)
        self._absorb(batch, actions, batch.lamport)
        self._set_participant(batch, new)
        self._set_paused(batch, not outcome.resume_workload)
        self._log.info(
            "restore installed",
            restore=target.restore,
            epoch=target.epoch,
            snapshot_id=target.snapshot_id,
            balance=target.balance,
            resent=target.resent_amount,
        )
        return outcome

    def _reset_channels(self, batch: Batch) -> None:
        """A restore commit: the batch's view of every channel starts again."""
        batch.reset = True
        change = batch.change
        change.reset_channels = True
        change.outbox.clear()
        batch.frames.clear()
        change.next_seq = {peer: 1 for peer in self.outgoing}
        batch.applied = {peer: 0 for peer in self.incoming}
        change.messages.clear()
        change.recorded.clear()
        batch.recorded.clear()
        batch.changed = True

    def sender_end(self, peer: str) -> SenderEnd:
        """What this node tells `peer` when it opens the channel to it (the handshake)."""
        state = self.participant
        queue = self._outbox[peer]
        last_sent = self._next_seq[peer] - 1
        return SenderEnd(
            epoch=state.epoch,
            prepared_epoch=state.prepared.epoch if state.prepared is not None else None,
            last_sent=last_sent,
            first_unacked=queue[0].seq if queue else last_sent + 1,
        )

    def receiver_end(self, peer: str) -> ReceiverEnd:
        """What this node tells `peer` in the first ack of the channel from it."""
        state = self.participant
        return ReceiverEnd(
            epoch=state.epoch,
            prepared_epoch=state.prepared.epoch if state.prepared is not None else None,
            last_applied=self._last_applied[peer],
        )

    def channel_verified(self, peer: str) -> None:
        """The handshake of this node -> `peer` did not find this node stale."""
        self._verified_out.add(peer)

    @property
    def epoch(self) -> int:
        return self.participant.epoch

    def _core_call(self, call: Callable[[], object]) -> list[Action]:
        """Run a core method: its refusals change nothing (`_Refused`)."""
        try:
            result = call()
        except (CoreError, ValueError) as error:
            raise _Refused(error) from error
        except BaseException as error:
            raise _EventFailed(-1, error) from error
        return result if isinstance(result, list) else []

    def _prepare_receive(self, batch: Batch, frame: pb.Frame) -> int:
        sender = frame.sender
        if sender not in self._last_applied:
            self.stats.frames_rejected += 1
            raise _Refused(UnknownSender(f"{sender!r} has no channel to {self.node_id}"))
        if frame.receiver != self.node_id:
            self.stats.frames_rejected += 1
            raise _Refused(
                WrongReceiver(
                    f"frame {frame.seq} from {sender} is addressed to {frame.receiver!r}, "
                    f"this is {self.node_id}"
                )
            )
        if frame.seq == 0:
            self.stats.frames_rejected += 1
            raise _Refused(BadFrame(f"frame from {sender} has seq 0 (sequence numbers start at 1)"))
        self._admit(batch, frame)
        last = batch.applied.get(sender, self._last_applied[sender])
        if frame.seq <= last:
            self.stats.frames_duplicate += 1
            return last
        if frame.seq != last + 1:
            self.stats.frames_rejected += 1
            raise _Refused(
                SequenceGap(
                    f"frame {frame.seq} from {sender} after {last}: "
                    f"frames {last + 1}..{frame.seq - 1} are missing"
                )
            )
        try:
            payload = wire.payload_of(frame)
        except wire.MalformedFrame as error:
            self.stats.frames_rejected += 1
            raise _Refused(BadFrame(str(error))) from error
        problem = self._out_of_range(frame, payload)
        if problem:
            self.stats.frames_rejected += 1
            raise _Refused(BadFrame(problem))
        try:
            actions = self._core_call(lambda: self._core.receive(sender, payload))
        except _Refused as refused:
            self.stats.frames_rejected += 1
            cause = refused.cause
            raise _Refused(
                BadFrame(str(cause)) if isinstance(cause, ProtocolViolation) else cause
            ) from cause
        batch.applied[sender] = frame.seq
        batch.changed = True
        self.stats.frames_applied += 1
        batch.lamport = max(batch.lamport, frame.lamport) + 1
        lamport = batch.lamport
        now = self._wall_clock()
        for action in actions:
            if isinstance(action, SnapshotRecorded):
                batch.timeline.append(("opened", (action.snapshot_id, lamport, now)))
        if isinstance(payload, Transfer):
            batch.timeline.append((
                "transfer",
                (TRANSFER_RECEIVED, sender, payload.transfer_seq, payload.amount, now, lamport),
            ))  # fmt: skip
        else:
            batch.timeline.append(
                ("marker", (MARKER_RECEIVED, sender, frame.seq, payload.snapshot_id, now, lamport))
            )
        self._absorb(batch, actions, lamport, opened_done=True)
        return frame.seq

    def _admit(self, batch: Batch, frame: pb.Frame) -> None:
        """Refuse (unapplied, unacked) a frame of another epoch than this node's."""
        state = self._participant_in(batch)
        admission = restore.admit(state, frame.epoch)
        if admission is Admission.APPLY:
            return
        self.stats.frames_rejected += 1
        if admission is Admission.NOT_SERVING:
            raise _Refused(NotServing(f"{self.node_id} is not serving: {state.stale}"))
        if admission is Admission.BEHIND:
            reason = (
                f"{frame.sender} sent a frame of epoch {frame.epoch} but {self.node_id} is at "
                f"epoch {state.epoch}: it missed a restore (data dir stale or an old copy)"
            )
            self._set_participant(batch, restore.mark_stale(state, reason))
            raise _Refused(NotServing(reason))
        raise _Refused(
            EpochMismatch(
                f"frame {frame.seq} from {frame.sender} is of epoch {frame.epoch}, "
                f"{self.node_id} is at epoch {state.epoch} ({admission.value})"
            )
        )

    def _out_of_range(self, frame: pb.Frame, payload: object) -> str:
        """Why a frame's values cannot be applied within int64, or ''."""
        if frame.lamport >= INT64_MAX:
            return f"frame {frame.seq} from {frame.sender}: Lamport clock {frame.lamport} >= 2^63-1"
        if isinstance(payload, Transfer) and payload.amount > INT64_MAX - self._core.balance:
            return (
                f"transfer of {payload.amount} from {frame.sender} would take the balance "
                f"of {self.node_id} ({self._core.balance}) beyond 2^63-1"
            )
        return ""

    def _prepare_random(self, batch: Batch, event: RandomTransfers) -> int:
        queued: dict[str, int] = {}
        for peer, _ in batch.frames:
            queued[peer] = queued.get(peer, 0) + 1
        made = 0
        if self._paused_in(batch) or restore.may_originate(self._participant_in(batch)):
            return 0
        allowed = [
            p for p in self.outgoing if not self.require_handshake or p in self._verified_out
        ]
        for _ in range(event.count):
            balance = self._core.balance
            peers = [
                p for p in allowed if len(self._outbox[p]) + queued.get(p, 0) < event.max_in_flight
            ]
            if balance <= 0 or not peers:
                break
            peer = event.rng.choice(peers)
            amount = event.rng.randint(1, min(balance, event.max_amount))
            actions = self._core_call(lambda p=peer, a=amount: self._core.send_transfer(p, a))
            self._absorb(batch, actions, batch.lamport)
            queued[peer] = queued.get(peer, 0) + 1
            made += 1
        return made

    def _prepare_delivered(self, batch: Batch, report: pb.LocalSnapshot) -> bool:
        sid = report.snapshot_id
        if sid in batch.delivered or self._reports.get(sid) != report:
            return False
        batch.delivered.append(sid)
        batch.change.delete_reports.append((sid, self._report_bytes[sid]))
        batch.changed = True
        return True

    def _absorb(
        self, batch: Batch, actions: list[Action], event_lamport: int, opened_done: bool = False
    ) -> None:
        """Turn the core's actions into storage rows, frames and timeline ops.

        Raises `_EventFailed` if anything goes wrong: the core has moved.
        """
        try:
            self._absorb_actions(batch, actions, event_lamport, opened_done)
        except BaseException as error:
            raise _EventFailed(-1, error) from error

    def _absorb_actions(
        self, batch: Batch, actions: list[Action], event_lamport: int, opened_done: bool
    ) -> None:
        batch.changed = True
        change = batch.change
        now = self._wall_clock()
        for action in actions:
            if isinstance(action, Send):
                peer = action.to
                seq = change.next_seq.get(peer, self._next_seq[peer])
                batch.lamport += 1
                frame = wire.frame_for(
                    self.node_id, peer, seq, action.payload, batch.lamport, self._core.epoch
                )
                change.outbox.append((peer, seq, frame.SerializeToString()))
                change.next_seq[peer] = seq + 1
                batch.frames.append((peer, frame))
                payload = action.payload
                if isinstance(payload, Marker):
                    self.stats.markers_sent += 1
                    batch.timeline.append((
                        "marker",
                        (MARKER_SENT, peer, seq, payload.snapshot_id, now, batch.lamport),
                    ))  # fmt: skip
                else:
                    self.stats.transfers_sent += 1
                    batch.timeline.append((
                        "transfer",
                        (TRANSFER_SENT, peer, payload.transfer_seq, payload.amount, now,
                         batch.lamport),
                    ))  # fmt: skip
            elif isinstance(action, SnapshotRecorded):
                sid = action.snapshot_id
                batch.recorded[sid] = (self._clock(), event_lamport)
                change.recorded.append((sid, batch.recorded[sid][0], event_lamport))
                if not opened_done:
                    batch.timeline.append(("opened", (sid, event_lamport, now)))
            elif isinstance(action, MessageRecorded):
                message = action.message
                change.messages.append(
                    (action.snapshot_id, action.sender, message.transfer_seq, message.amount)
                )
            elif isinstance(action, LocalSnapshotDone):
                sid = action.snapshot.snapshot_id
                at, lamport = batch.recorded.get(sid) or (
                    self._recorded_at.get(sid, ""),
                    self._recorded_lamport.get(sid, 0),
                )
                report = wire.snapshot_report(
                    action.snapshot, at, self._clock(), self._timeline_of(sid, batch), lamport
                )
                raw = report.SerializeToString()
                change.reports.append((sid, raw))
                batch.reports[sid] = report
                batch.report_bytes[sid] = raw
                batch.done.append(sid)

    def _timeline_of(self, snapshot_id: str, batch: Batch) -> tuple[TimelineEvent, ...]:
        """The timeline of `snapshot_id` including the batch's entries (not yet
        applied to the recorder): replayed on a copy so the recorder is unchanged."""
        copy = self._timeline.copy()
        for method, args in batch.timeline:
            getattr(copy, method)(*args)
        return copy.events(snapshot_id)

    # -------------------------------------------------------------- outgoing

    def frames_after(self, peer: str, after: int, limit: int = FRAME_BATCH) -> list[pb.Frame]:
        """Unacknowledged frames to `peer` with seq > `after` (at most `limit`)."""
        queue = self._outbox[peer]
        if not queue:
            return []
        start = max(0, after + 1 - queue[0].seq)
        if start >= len(queue):
            return []
        return [queue[i] for i in range(start, min(len(queue), start + limit))]

    def acknowledge(self, peer: str, seq: int, epoch: int | None = None) -> None:
        """`peer` durably applied every frame up to `seq` (of `epoch`: an ack of
        another epoch than this node's acknowledges nothing)."""
        if epoch is not None and epoch != self.participant.epoch:
            return
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

    def last_applied(self, peer: str) -> int:
        return self._last_applied[peer]

    def unacknowledged(self, peer: str) -> int:
        return len(self._outbox[peer])

    # --------------------------------------------------------------- reports

    def reports(self) -> list[pb.LocalSnapshot]:
        """Final reports not yet acked by the collector, oldest first."""
        return list(self._reports.values())

    def progress_reports(self, older_than: float = 0.0) -> list[pb.LocalSnapshot]:
        """A progress report (complete=false, naming the open channels) for every
        snapshot recording here for at least `older_than` seconds. Built from
        committed state only: never while a batch is prepared."""
        if self._in_flight is not None:
            return []
        now = time.monotonic()
        reports = []
        for sid in self._core.active_snapshots:
            if now - self._recorded_since.get(sid, 0.0) < older_than:
                continue
            progress = self._core.progress(sid)
            if progress is None:
                continue
            so_far, open_channels = progress
            reports.append(
                wire.progress_report(
                    so_far,
                    open_channels,
                    self._recorded_at.get(sid, ""),
                    self._timeline.events(sid),
                    self._recorded_lamport.get(sid, 0),
                )
            )
        return reports

    # ---------------------------------------------------------------- status

    def _refresh_view(self) -> None:
        core = self._core
        self._view = (core.balance, dict(core.sent), dict(core.received), core.active_snapshots)

    @property
    def balance(self) -> int:
        """The balance as committed."""
        return self._view[0]

    @property
    def active_snapshots(self) -> tuple[str, ...]:
        """Snapshots recording here, as committed."""
        return self._view[3]

    def status(self) -> pb.NodeStatus:
        """Committed state only (at most one batch behind the core)."""
        balance, sent, received, active = self._view
        channels = [
            pb.ChannelStatus(
                peer=peer,
                direction="out",
                sent_or_received=sent[peer],
                unacked=len(self._outbox[peer]),
                connected=peer in self._connected_out,
                unacked_amount=sum(wire.transfer_amount(f) for f in self._outbox[peer]),
            )
            for peer in self.outgoing
        ] + [
            pb.ChannelStatus(
                peer=peer,
                direction="in",
                sent_or_received=received[peer],
                unacked=0,
                connected=self._connected_in.get(peer, 0) > 0,
            )
            for peer in self.incoming
        ]
        return pb.NodeStatus(
            node_id=self.node_id,
            balance=balance,
            active_snapshots=list(active),
            unacknowledged_frames=sum(len(q) for q in self._outbox.values()),
            channels=channels,
            workload_running=self.workload_running
            and not self.workload_paused
            and self.participant.serving,
            epoch=self.participant.epoch,
            restore_phase=self.participant.phase.value,
            not_serving_reason="; ".join(
                filter(None, (self.participant.stale, self.participant.stale and self.rejoin_note))
            ),
            prepared_restore=(
                self.participant.prepared.restore if self.participant.prepared is not None else 0
            ),
        )

    def set_connected(self, peer: str, direction: str, connected: bool) -> None:
        """The transport opened (True) or lost (False) a stream on a channel."""
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
        return sum(wire.transfer_amount(f) for q in self._outbox.values() for f in q)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flush lazy acks, refuse further changes. The store is closed by its
        owner, after this returns (and after any commit in progress ended)."""
        if self._closed:
            return
        if self._in_flight is None and (self._acked or self._stale_reports):
            try:
                self._store.commit(
                    Change(acked=dict(self._acked), delete_reports=list(self._stale_reports))
                )
            except Exception as error:  # only resends follow; never block a shutdown
                self._log.warning("acks not flushed at close", error=str(error))
            self._acked.clear()
        self._closed = True

    # ------------------------------------------------------------- internals

    def _merge_back(self, acked: dict[str, int], stale: list[tuple[str, bytes]]) -> None:
        for peer, seq in acked.items():
            if seq > self._acked.get(peer, 0):
                self._acked[peer] = seq
        self._stale_reports[:0] = [item for item in stale if item[0] not in self._reports]

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

    def _check_open(self) -> None:
        if self._closed:
            raise NodeClosed(f"node {self.node_id} is shutting down")
