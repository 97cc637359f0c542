"""What a node saw around its recording point: a bounded timeline per snapshot. Pure.

The dashboard draws a space-time diagram of each cut from these events. The
runtime feeds this recorder every transfer and marker it sends or receives,
with the wall-clock time and its Lamport clock; the recorder keeps, for every
snapshot this node records:

* every marker of that snapshot the node sent or received;
* per channel (direction + peer), at most `per_side` transfers before the
  recording point (the newest ones, kept in a ring buffer all the time) and
  at most `per_side` after it, until the local snapshot is done. With the
  default 25 that is at most 50 transfers per channel.

Lamport clock: `tick()` for a local event (a send), `witness(remote)` for a
receive (max(own, remote) + 1). The runtime persists `clock` with each
commit, so it never goes backwards across a restart. The windows themselves
live in memory only: a node restarted mid-snapshot reports the events it saw
after the restart (its `lamport_recorded` is durable, see node/storage.py).

No I/O, no clock reads: the caller passes the time (seconds since the epoch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

PER_SIDE = 25  # transfers per channel before, and after, the recording point

MARKER_SENT = "marker_sent"
MARKER_RECEIVED = "marker_received"
TRANSFER_SENT = "transfer_sent"
TRANSFER_RECEIVED = "transfer_received"
KINDS = (MARKER_SENT, MARKER_RECEIVED, TRANSFER_SENT, TRANSFER_RECEIVED)


@dataclass(frozen=True)
class TimelineEvent:
    kind: str  # one of KINDS
    peer: str
    seq: int  # transfer_seq for transfers, frame seq for markers
    amount: int  # 0 for markers
    snapshot_id: str  # "" for transfers
    at: float  # seconds since the epoch
    lamport: int


@dataclass
class _Window:
    lamport_recorded: int
    before: list[TimelineEvent]
    after: dict[tuple[str, str], int] = field(default_factory=dict)  # channel -> count
    events: list[TimelineEvent] = field(default_factory=list)  # markers + after-transfers


def _channel(kind: str, peer: str) -> tuple[str, str]:
    return ("out" if kind in (TRANSFER_SENT, MARKER_SENT) else "in", peer)


class TimelineRecorder:
    """The Lamport clock and the bounded per-snapshot windows of one node."""

    def __init__(self, clock: int = 0, per_side: int = PER_SIDE) -> None:
        self.clock = clock
        self.per_side = per_side
        self._recent: dict[tuple[str, str], deque[TimelineEvent]] = {}
        self._windows: dict[str, _Window] = {}

    # ---------------------------------------------------------- Lamport clock

    def tick(self) -> int:
        """A local event (a frame sent): the clock advances by one."""
        self.clock += 1
        return self.clock

    def witness(self, remote: int) -> int:
        """A frame received carrying the sender's clock `remote`."""
        self.clock = max(self.clock, remote) + 1
        return self.clock

    # ----------------------------------------------------------------- events

    def opened(self, snapshot_id: str, lamport: int) -> None:
        """This node recorded its state for `snapshot_id` at Lamport time `lamport`."""
        if snapshot_id in self._windows:
            return
        before = sorted(
            (event for recent in self._recent.values() for event in recent),
            key=lambda e: e.lamport,
        )
        self._windows[snapshot_id] = _Window(lamport, before)

    def transfer(
        self, kind: str, peer: str, seq: int, amount: int, at: float, lamport: int
    ) -> None:
        event = TimelineEvent(kind, peer, seq, amount, "", at, lamport)
        channel = _channel(kind, peer)
        recent = self._recent.get(channel)
        if recent is None:
            recent = self._recent[channel] = deque(maxlen=self.per_side)
        recent.append(event)
        for window in self._windows.values():
            count = window.after.get(channel, 0)
            if count < self.per_side:
                window.after[channel] = count + 1
                window.events.append(event)

    def marker(
        self, kind: str, peer: str, seq: int, snapshot_id: str, at: float, lamport: int
    ) -> None:
        window = self._windows.get(snapshot_id)
        if window is not None:
            window.events.append(TimelineEvent(kind, peer, seq, 0, snapshot_id, at, lamport))

    def copy(self) -> TimelineRecorder:
        """An independent copy (events are immutable and shared)."""
        other = TimelineRecorder(self.clock, self.per_side)
        other._recent = {
            channel: deque(recent, maxlen=self.per_side) for channel, recent in self._recent.items()
        }
        other._windows = {
            sid: _Window(w.lamport_recorded, list(w.before), dict(w.after), list(w.events))
            for sid, w in self._windows.items()
        }
        return other

    # ---------------------------------------------------------------- results

    def events(self, snapshot_id: str) -> tuple[TimelineEvent, ...]:
        """The timeline of `snapshot_id` so far, in Lamport order (empty if unknown)."""
        window = self._windows.get(snapshot_id)
        if window is None:
            return ()
        return tuple(sorted((*window.before, *window.events), key=lambda e: e.lamport))

    def closed(self, snapshot_id: str) -> tuple[TimelineEvent, ...]:
        """The local snapshot is done: its final timeline; the window is forgotten."""
        events = self.events(snapshot_id)
        self._windows.pop(snapshot_id, None)
        return events

    def forget(self, snapshot_ids: Iterable[str]) -> None:
        for snapshot_id in snapshot_ids:
            self._windows.pop(snapshot_id, None)

    @property
    def open_windows(self) -> tuple[str, ...]:
        return tuple(sorted(self._windows))
