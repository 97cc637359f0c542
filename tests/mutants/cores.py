"""Planted-bug cores: node/core.py's NodeCore with one mistake each.

Each is a subclass that changes as little as possible to make one mistake an
implementation of Chandy-Lamport could plausibly make, and stays restorable
(to_dict/from_dict) so that the simulator's restores keep working: a mutant
must be killed by the checks, not by crashing the harness. `MUTANTS` names
them; `make mutants` (tests/mutants/__main__.py) runs the suite's property
checks against every one and fails unless each is killed.

Why hand-written rather than mutmut or cosmic-ray: those tools mutate
operators and constants one at a time and rerun a test command per mutant
(hundreds of pytest runs of a suite that takes minutes here), and none of
them produces the semantic mistakes the suite must be shown to catch
(reporting the initial state, reusing an old cut, closing the wrong
channel). These are those mistakes, written out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from node.core import (
    Action,
    LocalSnapshot,
    LocalSnapshotDone,
    Marker,
    MessageRecorded,
    NodeCore,
    Payload,
    RecordedMessage,
    RecordedMessages,
    Send,
    Transfer,
    _Recording,
)
from simulator.engine import CoreFactory

# ------------------------------------------------------- the mutants


class InitialStateCut(NodeCore):
    """Reports the initial state for every snapshot: start balance, counters 0,
    nothing in flight. A consistent cut, just not the one of this execution."""

    def __init__(
        self, node_id: str, balance: int, incoming: Iterable[str], outgoing: Iterable[str]
    ) -> None:
        super().__init__(node_id, balance, incoming, outgoing)
        self.initial_balance = balance

    def _local_snapshot(self, snapshot_id: str, recording: _Recording) -> LocalSnapshot:
        return LocalSnapshot(
            snapshot_id=snapshot_id,
            node_id=self.node_id,
            balance=self.initial_balance,
            sent=dict.fromkeys(self.outgoing, 0),
            received=dict.fromkeys(self.incoming, 0),
            channels={peer: () for peer in self.incoming},
            initiated=recording.initiated,
        )

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "initial_balance": self.initial_balance}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        recorded: RecordedMessages | None = None,
        finished: Iterable[str] = (),
    ) -> NodeCore:
        core = super().from_dict(data, recorded, finished)
        assert isinstance(core, InitialStateCut)
        core.initial_balance = int(data["initial_balance"])  # type: ignore[call-overload]
        return core


class StaleCut(NodeCore):
    """Reports the cut of its previous finished snapshot (the first one is right)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_cut: LocalSnapshot | None = None

    def _finish_if_done(self, snapshot_id: str) -> list[Action]:
        actions = super()._finish_if_done(snapshot_id)
        for i, action in enumerate(actions):
            if isinstance(action, LocalSnapshotDone):
                real, stale = action.snapshot, self.last_cut
                self.last_cut = real
                if stale is not None:
                    cut = replace(stale, snapshot_id=snapshot_id, initiated=real.initiated)
                    actions[i] = LocalSnapshotDone(cut)
        return actions

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        cut = self.last_cut
        data["last_cut"] = None if cut is None else {
            "balance": cut.balance,
            "sent": dict(cut.sent),
            "received": dict(cut.received),
            "channels": {p: [[m.transfer_seq, m.amount] for m in ms]
                         for p, ms in cut.channels.items()},
        }
        return data

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        recorded: RecordedMessages | None = None,
        finished: Iterable[str] = (),
    ) -> NodeCore:
        core = super().from_dict(data, recorded, finished)
        assert isinstance(core, StaleCut)
        cut: Any = data["last_cut"]
        if cut is not None:
            core.last_cut = LocalSnapshot(
                snapshot_id="", node_id=core.node_id, balance=cut["balance"],
                sent=cut["sent"], received=cut["received"],
                channels={p: tuple(RecordedMessage(s, a) for s, a in ms)
                          for p, ms in cut["channels"].items()},
                initiated=False,
            )
        return core


class WrongChannelClosed(NodeCore):
    """A marker closes the recording of the first still-open channel (in name
    order) instead of the channel it arrived on. Each marker still closes one
    channel, so every snapshot completes."""

    def _receive_marker(self, sender: str, snapshot_id: str) -> list[Action]:
        recording = self._recordings.get(snapshot_id)
        if recording is None or not recording.open_channels:
            return super()._receive_marker(sender, snapshot_id)
        recording.open_channels.discard(min(recording.open_channels))
        return self._finish_if_done(snapshot_id)


class RecordsAfterOwnMarker(NodeCore):
    """Keeps recording a channel after the marker on it arrived, until the
    whole local snapshot is done."""

    def _receive_transfer(self, sender: str, transfer: Transfer) -> list[Action]:
        actions = super()._receive_transfer(sender, transfer)
        message = RecordedMessage(transfer.transfer_seq, transfer.amount)
        for snapshot_id, recording in self._recordings.items():
            if sender not in recording.open_channels:
                recording.channels[sender].append(message)
                actions.append(MessageRecorded(snapshot_id, sender, message))
        return actions


class MarkerBeforeRecording(NodeCore):
    """On a marker it forwards markers at once, but takes its local state only
    after the next transfer it sends or receives (so the state includes a
    transfer made after the markers went out)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: set[str] = set()

    def _record(self, snapshot_id: str, marker_channel: str | None) -> list[Action]:
        actions = super()._record(snapshot_id, marker_channel)
        if marker_channel is not None and snapshot_id in self._recordings:
            self.deferred.add(snapshot_id)
        return actions

    def _take_deferred_state(self) -> None:
        for snapshot_id in self.deferred:
            recording = self._recordings.get(snapshot_id)
            if recording is not None:
                recording.balance = self.balance
                recording.sent = dict(self.sent)
                recording.received = dict(self.received)
        self.deferred.clear()

    def send_transfer(self, to: str, amount: int) -> list[Action]:
        actions = super().send_transfer(to, amount)
        self._take_deferred_state()
        return actions

    def _receive_transfer(self, sender: str, transfer: Transfer) -> list[Action]:
        actions = super()._receive_transfer(sender, transfer)
        self._take_deferred_state()
        return actions

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "deferred": sorted(self.deferred)}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        recorded: RecordedMessages | None = None,
        finished: Iterable[str] = (),
    ) -> NodeCore:
        core = super().from_dict(data, recorded, finished)
        assert isinstance(core, MarkerBeforeRecording)
        core.deferred = set(data["deferred"])  # type: ignore[call-overload]
        return core


class AllInitiated(NodeCore):
    """Claims `initiated: true` in every local snapshot."""

    def _local_snapshot(self, snapshot_id: str, recording: _Recording) -> LocalSnapshot:
        return replace(super()._local_snapshot(snapshot_id, recording), initiated=True)


class OffByOneCounters(NodeCore):
    """Reports each received counter one too low (counting from 0, not 1)."""

    def _local_snapshot(self, snapshot_id: str, recording: _Recording) -> LocalSnapshot:
        snapshot = super()._local_snapshot(snapshot_id, recording)
        received = {peer: max(0, n - 1) for peer, n in snapshot.received.items()}
        return replace(snapshot, received=received)


class DropsMessageOnRestore(NodeCore):
    """Restoring from saved state loses the newest recorded message of each
    channel a snapshot is recording (and its count, so the restore's own
    consistency check does not see it)."""

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        recorded: RecordedMessages | None = None,
        finished: Iterable[str] = (),
    ) -> NodeCore:
        saved: dict[str, Any] = {**data, "recordings": {}}
        kept: dict[str, dict[str, Sequence[RecordedMessage]]] = {}
        recordings: Any = data["recordings"]
        for sid, recording in recordings.items():
            counts = dict(recording["recorded_counts"])
            messages = {p: list(ms) for p, ms in (recorded or {}).get(sid, {}).items()}
            for peer, count in counts.items():
                if count > 0:
                    counts[peer] = count - 1
                    messages[peer] = messages[peer][:-1]
            saved["recordings"][sid] = {**recording, "recorded_counts": counts}
            kept[sid] = messages
        return super().from_dict(saved, kept, finished)


# ------------------------------------------ the suite's earlier broken cores


class ForgetfulCore(NodeCore):
    """Forgets to record transfers arriving on its first incoming channel.

    Consistently: neither in memory nor in the MessageRecorded actions that
    its store would keep, so a restore does not bring them back.
    """

    def receive(self, sender: str, payload: Payload) -> list[Action]:
        recording = [
            sid
            for sid, r in self._recordings.items()
            if sender == self.incoming[0] and sender in r.open_channels
        ]
        actions = super().receive(sender, payload)
        if isinstance(payload, Transfer):
            for sid in recording:
                self._recordings[sid].channels[sender].pop()
            actions = [
                a
                for a in actions
                if not (isinstance(a, MessageRecorded) and a.snapshot_id in recording)
            ]
        return actions


class LateMarkerCore(NodeCore):
    """Holds its markers back and sends them after its next transfer.

    Held markers go out, late, with the next event of any kind, so every
    snapshot still completes: only the order marker/transfer is wrong.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: list[Action] = []

    def _late(self, actions: list[Action]) -> list[Action]:
        late, self.held = self.held, []
        for action in actions:
            if isinstance(action, Send) and isinstance(action.payload, Marker):
                self.held.append(action)
            else:
                late.append(action)
        return late

    def send_transfer(self, to: str, amount: int) -> list[Action]:
        late, self.held = self.held, []
        return super().send_transfer(to, amount) + late

    def initiate_snapshot(self, snapshot_id: str) -> list[Action]:
        return self._late(super().initiate_snapshot(snapshot_id))

    def receive(self, sender: str, payload: Payload) -> list[Action]:
        return self._late(super().receive(sender, payload))

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["held"] = [[a.to, a.payload.snapshot_id] for a in self.held]  # type: ignore[union-attr]
        return data

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        recorded: RecordedMessages | None = None,
        finished: Iterable[str] = (),
    ) -> NodeCore:
        core = super().from_dict(data, recorded, finished)
        assert isinstance(core, LateMarkerCore)
        held: Any = data["held"]
        core.held = [Send(to, Marker(sid)) for to, sid in held]
        return core


class EarlyDoneCore(NodeCore):
    """Reports its local snapshot as soon as it records (ignores incoming channels)."""

    def _finish_if_done(self, snapshot_id: str) -> list[Action]:
        self._recordings[snapshot_id].open_channels.clear()
        return super()._finish_if_done(snapshot_id)

    def receive(self, sender: str, payload: Payload) -> list[Action]:
        if isinstance(payload, Marker) and self.has_recorded(payload.snapshot_id):
            return []  # its own early finish makes later markers look like duplicates
        return super().receive(sender, payload)


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Mutant:
    name: str
    core: CoreFactory
    mistake: str


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant("initial-state-cut", InitialStateCut, "reports the initial state every time"),
        Mutant("stale-cut", StaleCut, "reuses its previous snapshot's cut"),
        Mutant("wrong-channel-closed", WrongChannelClosed,
               "a marker closes the first open channel, not its own"),
        Mutant("records-after-own-marker", RecordsAfterOwnMarker,
               "keeps recording a channel after its marker"),
        Mutant("marker-before-recording", MarkerBeforeRecording,
               "forwards markers, records its state one transfer later"),
        Mutant("all-initiated", AllInitiated, "claims initiated: true everywhere"),
        Mutant("off-by-one-counters", OffByOneCounters, "records received counters one too low"),
        Mutant("drops-message-on-restore", DropsMessageOnRestore,
               "a restore loses the newest recorded message per channel"),
        Mutant("forgetful", ForgetfulCore, "never records its first incoming channel"),
        Mutant("late-marker", LateMarkerCore, "sends markers after its next transfer"),
        Mutant("early-done", EarlyDoneCore, "finishes as soon as it records"),
    )
}
