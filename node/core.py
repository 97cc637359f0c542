"""The Chandy-Lamport state machine of one bank node. No I/O lives here.

Everything that decides what a node's state is, and what it must send, is in
this module; nothing here touches a socket, a database, a thread or a clock.
The gRPC transport (node/server.py) and the deterministic simulator
(simulator/engine.py) both drive this same machine: events in, actions out.

Theory of operation
-------------------
A node holds money (`balance`) and is connected to its peers by directed,
FIFO, lossless channels. It counts, per outgoing channel, the transfers it has
sent (`sent[peer]`) and, per incoming channel, the transfers it has received
(`received[peer]`). Transfer number k on a channel carries `transfer_seq == k`.

A snapshot is identified by a string id. For each id a node goes through:

    not recorded --(initiate, or first marker on channel c)--> recording
    recording    --(marker on every incoming channel)-------> done

On recording, the node copies (balance, sent, received) as its local state,
sends one marker on every outgoing channel *before* any later transfer on that
channel, and starts recording every incoming channel except c (a marker on c
means nothing more was in flight on c before the cut). While a channel is
being recorded, every transfer arriving on it is appended to its recorded
state; the marker on that channel closes it. When every incoming channel is
closed the local snapshot is done and is emitted as a `LocalSnapshotDone`.

Invariants that the collector verifies for every channel i -> j:
    recorded messages on i -> j == transfers with
        received_j[i] < transfer_seq <= sent_i[j]
and for the whole snapshot:
    sum(recorded balances) + sum(recorded in-flight amounts) == initial total.

Several snapshots run at once without interfering: each has its own recording
state, and a transfer is appended to every snapshot recording its channel.
Several initiators may start the same id: whichever of "initiate" and "first
marker" happens first records; the later one is a no-op.

The transport guarantees exactly-once FIFO delivery per channel; a second
marker for the same snapshot on the same channel therefore indicates a broken
peer and is refused with `ProtocolViolation` rather than silently absorbed.

Epochs and restores
-------------------
A node lives in a cluster *epoch* (0 until the first restore). Its counters
and every transfer sequence number belong to that epoch. `install_restore`
(driven by the restore protocol, see node/restore.py) moves the node to a
newer epoch with the state a complete snapshot recorded: its balance becomes
the recorded balance, every counter starts again from 0, active recordings
are abandoned (`RecordingAbandoned`: their counters belong to the old epoch),
and the transfers the snapshot recorded in flight on this node's *outgoing*
channels are sent again, in their recorded order, as transfers 1..k of the
new epoch (`Send` actions; the sender was debited before the cut, so its
recorded balance already excludes them). The transport stamps every frame
with the epoch and never lets a frame of one epoch reach a core in another
(node/restore.py decides what happens to such a frame), so within an epoch
everything above holds unchanged. The finished ids are kept: a snapshot id
stays unique across epochs.

Persistence contract
--------------------
The caller makes the core durable after every event, in three parts, so that
a save costs the same however many messages a snapshot has recorded and
however many snapshots the node has taken:

* `to_dict()`: balance, counters, and per active recording its local state,
  open channels and *how many* messages it has recorded per channel -- but
  not the messages themselves, nor the finished ids. Small; rewritten every
  event.
* `MessageRecorded(snapshot_id, sender, message)`: emitted by a transfer
  receive once per snapshot recording that channel. The caller stores it once,
  in the same transaction as the `to_dict()` of that event, and may forget a
  snapshot's messages in the transaction that stores its `LocalSnapshotDone`
  (which carries them all).
* `LocalSnapshotDone`: the caller stores the snapshot id once, in order, in
  the transaction of that event, and hands back at least the newest
  `FINISHED_MEMORY` of them.

`from_dict(data, recorded, finished)` rebuilds the core from all three. It refuses
(`InvalidState`) messages that do not match the saved counts: a recorded
channel holds exactly transfers received+1 .. received+count of its
recording, so a lost, extra or reordered message is detected at restore time
rather than turning into a wrong snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# How many finished snapshot ids a node remembers (see NodeCore._finished).
FINISHED_MEMORY = 1000

SNAPSHOT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Ids that name something else in the collector's snapshot directory
# ("latest" means the most recently finished snapshot), compared lower-cased.
RESERVED_SNAPSHOT_IDS = frozenset({"latest"})


class CoreError(Exception):
    """Base of the errors raised by the state machine."""


class InvalidSnapshotId(CoreError, ValueError):
    """A snapshot id that is not safe to use (it ends up in a file name)."""


class InsufficientFunds(CoreError):
    """The application tried to send more money than the node holds."""


class ProtocolViolation(CoreError):
    """A peer sent something the protocol does not allow; it is not applied."""


class InvalidState(CoreError, ValueError):
    """Saved state (`from_dict`) that does not describe a consistent core."""


class InvalidRestore(CoreError, ValueError):
    """A restore target this node cannot install (older epoch, unknown channel, ...)."""


def validate_snapshot_id(snapshot_id: str) -> str:
    """Return `snapshot_id` if it is a safe id, else raise InvalidSnapshotId."""
    if not SNAPSHOT_ID_PATTERN.fullmatch(snapshot_id):
        raise InvalidSnapshotId(
            f"invalid snapshot id {snapshot_id!r}: use 1-64 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
    if snapshot_id.lower() in RESERVED_SNAPSHOT_IDS:
        raise InvalidSnapshotId(f"invalid snapshot id {snapshot_id!r}: the name is reserved")
    return snapshot_id


# ---------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Transfer:
    transfer_seq: int
    amount: int


@dataclass(frozen=True)
class Marker:
    snapshot_id: str


Payload = Transfer | Marker


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Send:
    """Put `payload` on the channel to `to`, after everything sent before."""

    to: str
    payload: Payload


@dataclass(frozen=True)
class RecordedMessage:
    transfer_seq: int
    amount: int


@dataclass(frozen=True)
class LocalSnapshot:
    """What one node recorded for one snapshot."""

    snapshot_id: str
    node_id: str
    balance: int
    sent: Mapping[str, int]
    received: Mapping[str, int]
    channels: Mapping[str, tuple[RecordedMessage, ...]]  # sender -> in-flight messages
    initiated: bool
    epoch: int = 0  # the cluster epoch the counters belong to


@dataclass(frozen=True)
class SnapshotRecorded:
    """The node recorded its local state for `snapshot_id` (progress, for logs)."""

    snapshot_id: str


@dataclass(frozen=True)
class MessageRecorded:
    """Snapshot `snapshot_id` recorded `message` as in flight on sender -> this node.

    Not part of `to_dict()`: the caller persists it with the event that
    produced it and passes it back to `from_dict` (see Persistence contract).
    """

    snapshot_id: str
    sender: str
    message: RecordedMessage


@dataclass(frozen=True)
class LocalSnapshotDone:
    snapshot: LocalSnapshot


@dataclass(frozen=True)
class RecordingAbandoned:
    """A restore ended recording `snapshot_id` here before it finished.

    The caller forgets what it stored for that recording (its
    MessageRecorded rows and progress report); the snapshot cannot complete.
    """

    snapshot_id: str


Action = Send | SnapshotRecorded | MessageRecorded | LocalSnapshotDone | RecordingAbandoned

# snapshot id -> sender -> recorded messages in order: what `from_dict` needs
# besides `to_dict()`'s data (the MessageRecorded actions of active recordings).
RecordedMessages = Mapping[str, Mapping[str, Sequence[RecordedMessage]]]


# ------------------------------------------------------------------- state


@dataclass
class _Recording:
    balance: int
    sent: dict[str, int]
    received: dict[str, int]
    initiated: bool
    open_channels: set[str]
    channels: dict[str, list[RecordedMessage]] = field(default_factory=dict)


class NodeCore:
    """One node's bank account and snapshot machine.

    Methods take an event and return the actions the caller must perform, in
    order. A method that raises has changed nothing.
    """

    def __init__(
        self,
        node_id: str,
        balance: int,
        incoming: Iterable[str],
        outgoing: Iterable[str],
    ) -> None:
        if balance < 0:
            raise ValueError(f"initial balance of {node_id} must be >= 0, got {balance}")
        self.node_id = node_id
        self.balance = balance
        self.epoch = 0  # the cluster epoch this state belongs to (see Epochs and restores)
        self.incoming: tuple[str, ...] = tuple(sorted(incoming))
        self.outgoing: tuple[str, ...] = tuple(sorted(outgoing))
        self.sent: dict[str, int] = {peer: 0 for peer in self.outgoing}
        self.received: dict[str, int] = {peer: 0 for peer in self.incoming}
        self._recordings: dict[str, _Recording] = {}
        # Ids of finished local snapshots, oldest first: an initiator arriving
        # late for one of them must not start a second recording under the
        # same id. Bounded, so that memory and restore time stay bounded.
        self._finished: dict[str, None] = {}

    # ------------------------------------------------------------ queries

    @property
    def active_snapshots(self) -> tuple[str, ...]:
        return tuple(sorted(self._recordings))

    def has_recorded(self, snapshot_id: str) -> bool:
        return snapshot_id in self._recordings or snapshot_id in self._finished

    def progress(self, snapshot_id: str) -> tuple[LocalSnapshot, tuple[str, ...]] | None:
        """What a recording snapshot holds so far, and its still-open channels.

        None unless `snapshot_id` is recording here. Progress reports let the
        collector say, for a snapshot that never completes, which nodes never
        recorded and which were still waiting for a marker, and from whom.
        """
        recording = self._recordings.get(snapshot_id)
        if recording is None:
            return None
        return self._local_snapshot(snapshot_id, recording), tuple(sorted(recording.open_channels))

    # ------------------------------------------------------------- events

    def send_transfer(self, to: str, amount: int) -> list[Action]:
        """The application moves `amount` from this node to peer `to`."""
        if to not in self.sent:
            raise ValueError(f"{self.node_id} has no outgoing channel to {to!r}")
        if amount <= 0:
            raise ValueError(f"transfer amount must be positive, got {amount}")
        if amount > self.balance:
            raise InsufficientFunds(
                f"{self.node_id} cannot send {amount}: balance is {self.balance}"
            )
        self.balance -= amount
        self.sent[to] += 1
        return [Send(to, Transfer(self.sent[to], amount))]

    def initiate_snapshot(self, snapshot_id: str) -> list[Action]:
        """Start snapshot `snapshot_id` here; a no-op if already recorded."""
        validate_snapshot_id(snapshot_id)
        if self.has_recorded(snapshot_id):
            return []
        return self._record(snapshot_id, marker_channel=None)

    def receive(self, sender: str, payload: Payload) -> list[Action]:
        """A payload arrived on the channel sender -> this node."""
        if sender not in self.received:
            raise ProtocolViolation(f"{self.node_id} has no incoming channel from {sender!r}")
        if isinstance(payload, Transfer):
            return self._receive_transfer(sender, payload)
        return self._receive_marker(sender, payload.snapshot_id)

    def install_restore(
        self, epoch: int, balance: int, resend: Mapping[str, Sequence[int]]
    ) -> list[Action]:
        """Move to `epoch` with a snapshot's recorded state (see Epochs and restores).

        `resend` maps an outgoing peer to the amounts the snapshot recorded
        in flight on this node -> peer, oldest first. Returns the
        RecordingAbandoned of every active recording, then the Sends of the
        resent transfers (numbered 1..k per channel). Raises InvalidRestore,
        changing nothing, for an epoch that is not newer than this node's, a
        negative balance, a peer without a channel from this node, or a
        non-positive amount.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= self.epoch:
            raise InvalidRestore(
                f"{self.node_id} is at epoch {self.epoch}: cannot restore into epoch {epoch!r}"
            )
        if isinstance(balance, bool) or not isinstance(balance, int) or balance < 0:
            raise InvalidRestore(
                f"restored balance of {self.node_id} must be >= 0, got {balance!r}"
            )
        unknown = sorted(set(resend) - set(self.outgoing))
        if unknown:
            raise InvalidRestore(
                f"{self.node_id} has no outgoing channel to {', '.join(map(repr, unknown))}"
            )
        for peer, amounts in resend.items():
            for amount in amounts:
                if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                    raise InvalidRestore(
                        f"in-flight amount on {self.node_id}->{peer} must be positive, "
                        f"got {amount!r}"
                    )
        actions: list[Action] = [RecordingAbandoned(sid) for sid in sorted(self._recordings)]
        self._recordings.clear()
        self.epoch = epoch
        self.balance = balance
        self.received = {peer: 0 for peer in self.incoming}
        self.sent = {peer: 0 for peer in self.outgoing}
        for peer in self.outgoing:
            for amount in resend.get(peer, ()):
                self.sent[peer] += 1
                actions.append(Send(peer, Transfer(self.sent[peer], amount)))
        return actions

    # ----------------------------------------------------------- internals

    def _receive_transfer(self, sender: str, transfer: Transfer) -> list[Action]:
        expected = self.received[sender] + 1
        if transfer.transfer_seq != expected:
            raise ProtocolViolation(
                f"transfer {transfer.transfer_seq} on {sender}->{self.node_id}, expected {expected}"
            )
        if transfer.amount <= 0:
            raise ProtocolViolation(f"non-positive transfer amount {transfer.amount}")
        self.received[sender] = expected
        self.balance += transfer.amount
        message = RecordedMessage(transfer.transfer_seq, transfer.amount)
        actions: list[Action] = []
        for snapshot_id, recording in self._recordings.items():
            if sender in recording.open_channels:
                recording.channels[sender].append(message)
                actions.append(MessageRecorded(snapshot_id, sender, message))
        return actions

    def _receive_marker(self, sender: str, snapshot_id: str) -> list[Action]:
        try:
            validate_snapshot_id(snapshot_id)
        except InvalidSnapshotId as error:
            raise ProtocolViolation(str(error)) from error
        if snapshot_id in self._finished:
            raise ProtocolViolation(
                f"second marker for finished snapshot {snapshot_id} on {sender}->{self.node_id}"
            )
        recording = self._recordings.get(snapshot_id)
        if recording is None:
            return self._record(snapshot_id, marker_channel=sender)
        if sender not in recording.open_channels:
            raise ProtocolViolation(
                f"second marker for snapshot {snapshot_id} on {sender}->{self.node_id}"
            )
        recording.open_channels.discard(sender)
        return self._finish_if_done(snapshot_id)

    def _record(self, snapshot_id: str, marker_channel: str | None) -> list[Action]:
        open_channels = set(self.incoming)
        if marker_channel is not None:
            open_channels.discard(marker_channel)
        self._recordings[snapshot_id] = _Recording(
            balance=self.balance,
            sent=dict(self.sent),
            received=dict(self.received),
            initiated=marker_channel is None,
            open_channels=open_channels,
            channels={peer: [] for peer in self.incoming},
        )
        actions: list[Action] = [SnapshotRecorded(snapshot_id)]
        actions += [Send(peer, Marker(snapshot_id)) for peer in self.outgoing]
        return actions + self._finish_if_done(snapshot_id)

    def _finish_if_done(self, snapshot_id: str) -> list[Action]:
        recording = self._recordings[snapshot_id]
        if recording.open_channels:
            return []
        del self._recordings[snapshot_id]
        self._finished[snapshot_id] = None
        while len(self._finished) > FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]
        return [LocalSnapshotDone(self._local_snapshot(snapshot_id, recording))]

    def _local_snapshot(self, snapshot_id: str, recording: _Recording) -> LocalSnapshot:
        return LocalSnapshot(
            snapshot_id=snapshot_id,
            node_id=self.node_id,
            balance=recording.balance,
            sent=dict(recording.sent),
            received=dict(recording.received),
            channels={peer: tuple(msgs) for peer, msgs in recording.channels.items()},
            initiated=recording.initiated,
            epoch=self.epoch,
        )

    # -------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready copy of the state, for durable storage, without the
        recorded messages of active snapshots (their MessageRecorded actions
        carry those) and without the finished ids (their LocalSnapshotDone
        actions do; see Persistence contract). Its size grows neither with
        the in-flight messages a snapshot records nor with the snapshots taken.
        """
        return {
            "node_id": self.node_id,
            "epoch": self.epoch,
            "balance": self.balance,
            "incoming": list(self.incoming),
            "outgoing": list(self.outgoing),
            "sent": dict(self.sent),
            "received": dict(self.received),
            "recordings": {
                sid: {
                    "balance": r.balance,
                    "sent": r.sent,
                    "received": r.received,
                    "initiated": r.initiated,
                    "open_channels": sorted(r.open_channels),
                    "recorded_counts": {peer: len(msgs) for peer, msgs in r.channels.items()},
                }
                for sid, r in self._recordings.items()
            },
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        recorded: RecordedMessages | None = None,
        finished: Iterable[str] = (),
    ) -> NodeCore:
        """Rebuild a core saved with `to_dict`, plus the messages its active
        snapshots recorded (`recorded`: every MessageRecorded of those
        snapshots, in order) and the ids of its finished snapshots (oldest
        first; the newest FINISHED_MEMORY are kept). Raises InvalidState if
        the recorded messages do not match.
        """
        recorded = {} if recorded is None else recorded
        d: dict[str, object] = dict(data)
        core = cls(
            str(d["node_id"]),
            int(d["balance"]),  # type: ignore[call-overload]
            d["incoming"],  # type: ignore[arg-type]
            d["outgoing"],  # type: ignore[arg-type]
        )
        core.epoch = int(d.get("epoch", 0))  # type: ignore[call-overload]  # absent before epochs
        core.sent = {str(k): int(v) for k, v in d["sent"].items()}  # type: ignore[attr-defined]
        core.received = {str(k): int(v) for k, v in d["received"].items()}  # type: ignore[attr-defined]
        core._finished = dict.fromkeys(list(finished)[-FINISHED_MEMORY:])
        recordings: Mapping[str, Mapping[str, object]] = d["recordings"]  # type: ignore[assignment]
        unknown = sorted(set(recorded) - set(recordings))
        if unknown:
            raise InvalidState(
                f"{core.node_id}: recorded messages for snapshots that are not recording: "
                f"{', '.join(unknown)}"
            )
        for sid, r in recordings.items():
            received: dict[str, int] = dict(r["received"])  # type: ignore[call-overload]
            counts: Mapping[str, int] = r["recorded_counts"]  # type: ignore[assignment]
            core._recordings[sid] = _Recording(
                balance=int(r["balance"]),  # type: ignore[call-overload]
                sent=dict(r["sent"]),  # type: ignore[call-overload]
                received=received,
                initiated=bool(r["initiated"]),
                open_channels=set(r["open_channels"]),  # type: ignore[call-overload]
                channels=_restored_channels(
                    core.node_id, sid, core.incoming, received, counts, recorded.get(sid, {})
                ),
            )
        return core


def _restored_channels(
    node_id: str,
    snapshot_id: str,
    incoming: Sequence[str],
    received: Mapping[str, int],
    counts: Mapping[str, int],
    recorded: Mapping[str, Sequence[RecordedMessage]],
) -> dict[str, list[RecordedMessage]]:
    """The recorded channels of one recording, checked against its saved counts.

    While a channel is recorded every transfer arriving on it is appended, so
    its messages are exactly transfers received[sender]+1 .. +count.
    """
    extra = sorted(set(recorded) - set(incoming))
    if extra:
        raise InvalidState(
            f"{node_id}: snapshot {snapshot_id} has recorded messages from "
            f"{', '.join(extra)}, which has no channel to {node_id}"
        )
    channels: dict[str, list[RecordedMessage]] = {}
    for peer in incoming:
        messages = list(recorded.get(peer, ()))
        first = received[peer] + 1
        expected = list(range(first, first + counts.get(peer, 0)))
        found = [m.transfer_seq for m in messages]
        if found != expected:
            raise InvalidState(
                f"{node_id}: snapshot {snapshot_id} recorded on {peer}->{node_id} transfers "
                f"{_seq_range(expected)}, but the messages restored are {_seq_range(found)}"
            )
        channels[peer] = messages
    return channels


def _seq_range(seqs: Sequence[int]) -> str:
    if not seqs:
        return "none"
    if list(seqs) == list(range(seqs[0], seqs[0] + len(seqs))):
        return f"{seqs[0]}..{seqs[-1]}" if len(seqs) > 1 else str(seqs[0])
    return ", ".join(map(str, seqs[:10])) + (", ..." if len(seqs) > 10 else "")
