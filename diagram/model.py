"""The neutral input of the space-time diagram. Pure data, no I/O.

Whatever produced a snapshot (the collector from node reports, the simulator
from its schedule), an adapter turns it into one `SpaceTime`: the processes
(one lifeline each, in lane order), the messages between them with the times
they were sent and received, and each process's recording point. Times are
plain numbers on one axis whose unit the diagram states (`time_unit`):
milliseconds since the snapshot began for wall-clock data, ticks for the
simulator, or Lamport clock values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MessageKind = Literal["marker", "transfer"]


class DiagramError(ValueError):
    """The input cannot be drawn; the message says what is wrong with it."""


@dataclass(frozen=True)
class Message:
    """One message on channel `src -> dst`.

    `sent_at` is on the sender's lifeline, `received_at` on the receiver's;
    either may be None when the source does not know it (outside the recorded
    window, never delivered). `recorded` is True for a transfer that the
    snapshot recorded as channel state: sent before the sender's recording
    point and received after the receiver's, so it crosses the cut.
    """

    kind: MessageKind
    src: str
    dst: str
    sent_at: float | None
    received_at: float | None
    seq: int | None = None
    amount: int | None = None
    snapshot_id: str | None = None
    recorded: bool = False


@dataclass(frozen=True)
class Process:
    """One node's lifeline. `recorded_at` None: the node never recorded its
    state (aborted snapshots: it is missing). `waiting_for` names the senders
    whose marker never arrived (the node recorded but could not finish)."""

    node: str
    recorded_at: float | None
    completed_at: float | None = None
    balance: int | None = None
    initiated: bool = False
    waiting_for: tuple[str, ...] = ()

    @property
    def missing(self) -> bool:
        return self.recorded_at is None


@dataclass(frozen=True)
class SpaceTime:
    """Everything the diagram shows of one snapshot."""

    snapshot_id: str
    status: str  # "complete", "aborted" or "pending"
    processes: tuple[Process, ...]
    messages: tuple[Message, ...]
    time_unit: str = "ms"  # "ms", "tick" or "lamport"
    origin: str = ""  # what time 0 is, e.g. the snapshot's started_at
    notes: tuple[str, ...] = ()  # what the source could not provide

    def __post_init__(self) -> None:
        names = [p.node for p in self.processes]
        if not names:
            raise DiagramError("a space-time diagram needs at least one process")
        if len(set(names)) != len(names):
            raise DiagramError(f"duplicate process in {names}")
        known = set(names)
        for message in self.messages:
            for end in (message.src, message.dst):
                if end not in known:
                    raise DiagramError(
                        f"{message.kind} {message.src} -> {message.dst}: unknown process "
                        f"{end!r} (known: {', '.join(names)})"
                    )
