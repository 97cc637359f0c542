"""An in-memory index of finished snapshots' summaries, so that the history,
the counts and the duration statistics never read snapshot files.

`summarize` is pure (a document in, a `Summary` out); `SnapshotIndex` keeps
them in completion order behind a lock. The collector adds each snapshot as it
finishes; at start the index reads every stored file once.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("complete", "aborted")


@dataclass(frozen=True)
class Summary:
    snapshot_id: str
    status: str  # complete | aborted
    initiators: tuple[str, ...]
    started_at: str
    completed_at: str
    duration_seconds: float | None
    money_in_flight: int
    messages_in_flight: int
    verified: bool | None  # None: not checked (aborted)
    missing: tuple[str, ...] = ()
    epoch: int = 0  # the cluster epoch the snapshot was taken in (restores move it)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["initiators"] = list(self.initiators)
        data["missing"] = list(self.missing)
        return data


def summarize(document: Mapping[str, Any]) -> Summary:
    """The history fields of one snapshot document."""
    channels = [c for c in document.get("channels") or [] if isinstance(c, Mapping)]
    messages = [m for c in channels for m in (c.get("messages") or [])]
    verification = document.get("verification") or {}
    conservation = verification.get("conservation") or {}
    in_flight = conservation.get("in_flight")
    if not isinstance(in_flight, int):
        in_flight = sum(int(m.get("amount", 0)) for m in messages if isinstance(m, Mapping))
    status = str(document.get("status", "?"))
    checked = status == "complete" and verification.get("checked", True) is not False
    duration = document.get("duration_seconds")
    return Summary(
        snapshot_id=str(document["snapshot_id"]),
        status=status,
        initiators=tuple(str(i) for i in document.get("initiators") or []),
        started_at=str(document.get("started_at") or ""),
        completed_at=str(document.get("completed_at") or ""),
        duration_seconds=float(duration) if isinstance(duration, int | float) else None,
        money_in_flight=in_flight,
        messages_in_flight=len(messages),
        verified=bool(verification.get("ok")) if checked else None,
        missing=tuple(str(n) for n in document.get("missing") or []),
        epoch=int(document.get("epoch") or 0),
    )


@dataclass(frozen=True)
class DurationStats:
    count: int
    min: float
    avg: float
    max: float
    p50: float
    p95: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def duration_stats(durations: Sequence[float]) -> DurationStats | None:
    """min/avg/max and nearest-rank p50/p95; None for no data."""
    if not durations:
        return None
    ordered = sorted(durations)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return DurationStats(
        count=len(ordered),
        min=ordered[0],
        avg=sum(ordered) / len(ordered),
        max=ordered[-1],
        p50=rank(50),
        p95=rank(95),
    )


@dataclass(frozen=True)
class Counts:
    begun: int
    in_progress: int
    complete: int
    aborted: int
    verification_failures: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Restores:
    """The restore log at a glance: how many, and the newest one's snapshot and phase."""

    count: int
    latest_snapshot: str = ""
    latest_phase: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class SnapshotIndex:
    """Summaries of finished snapshots, oldest first; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order: list[Summary] = []
        self._by_id: dict[str, int] = {}

    def load(self, ids: Iterable[str], read_text: Callable[[str], str | None]) -> int:
        """Index stored snapshots (oldest first); unreadable ones are skipped."""
        loaded = 0
        for snapshot_id in ids:
            text = read_text(snapshot_id)
            if text is None:
                continue
            try:
                self.add(json.loads(text))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            loaded += 1
        return loaded

    def add(self, document: Mapping[str, Any]) -> Summary:
        summary = summarize(document)
        with self._lock:
            if summary.snapshot_id in self._by_id:  # finished snapshots never change
                return self._order[self._by_id[summary.snapshot_id]]
            self._by_id[summary.snapshot_id] = len(self._order)
            self._order.append(summary)
        return summary

    def get(self, snapshot_id: str) -> Summary | None:
        with self._lock:
            position = self._by_id.get(snapshot_id)
            return None if position is None else self._order[position]

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)

    def page(
        self, offset: int = 0, limit: int = 20, status: str | None = None
    ) -> tuple[list[Summary], int]:
        """Newest first: (`limit` summaries from `offset`, how many match in all)."""
        with self._lock:
            if status is None:
                total = len(self._order)
                end = max(total - offset, 0)
                start = max(end - limit, 0)
                return list(reversed(self._order[start:end])), total
            matching = [s for s in reversed(self._order) if _matches(s, status)]
        return matching[offset : offset + limit], len(matching)

    def counts(self, in_progress: int) -> Counts:
        with self._lock:
            complete = sum(1 for s in self._order if s.status == "complete")
            aborted = sum(1 for s in self._order if s.status == "aborted")
            failures = sum(1 for s in self._order if s.status == "complete" and not s.verified)
            total = len(self._order)
        return Counts(total + in_progress, in_progress, complete, aborted, failures)

    def latest(self, status: str) -> Summary | None:
        with self._lock:
            for summary in reversed(self._order):
                if summary.status == status:
                    return summary
        return None

    def durations(self, status: str = "complete") -> list[float]:
        with self._lock:
            return [
                s.duration_seconds
                for s in self._order
                if s.status == status and s.duration_seconds is not None
            ]


def _matches(summary: Summary, status: str) -> bool:
    if status == "failed":  # complete but failed verification
        return summary.status == "complete" and not summary.verified
    return summary.status == status
