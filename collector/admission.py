"""What the collector lets in beyond well-formedness. Pure: the caller passes the time.

* Only begun snapshots: a report is stored only for a snapshot the collector
  began (an operator's `BeginSnapshot`) and has not forgotten; a report for
  any other id is refused, so nobody fills the disk with made-up snapshots.
* Begins are rate limited (a token bucket: `begin_rate` per second, bursts of
  `begin_burst`), and at most `max_pending` snapshots may be pending at once.
* Reports are size limited (`max_report_bytes`, the serialized protobuf).
* Retention: only the newest `keep` finished snapshot files stay on disk
  (`to_prune` says which to delete).

Refusal messages are for the user (what was wrong and which setting
governs it); they never echo the refused content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_BEGIN_RATE = 5.0
DEFAULT_BEGIN_BURST = 20
DEFAULT_MAX_PENDING = 64
DEFAULT_MAX_REPORT_BYTES = 1024 * 1024
DEFAULT_KEEP = 1000


@dataclass(frozen=True)
class Limits:
    begin_rate: float = DEFAULT_BEGIN_RATE  # begins per second, sustained
    begin_burst: int = DEFAULT_BEGIN_BURST  # begins at once
    max_pending: int = DEFAULT_MAX_PENDING  # snapshots pending at the same time
    max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES
    keep: int = DEFAULT_KEEP  # finished snapshot files kept on disk

    def __post_init__(self) -> None:
        if not self.begin_rate > 0:
            raise ValueError("begin rate must be a positive number of begins per second")
        for name in ("begin_burst", "max_pending", "max_report_bytes", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `take(now)` spends one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now

    def take(self, now: float) -> float:
        """0.0 if a token was spent, else the seconds until one is available."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class Admission:
    """The collector's admission decisions; each returns None (admit) or the refusal."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._begins = TokenBucket(self.limits.begin_rate, self.limits.begin_burst)

    def begin(self, now: float, *, known: bool, pending: int) -> str | None:
        """A BeginSnapshot for a new (not `known`) snapshot while `pending` are pending.

        Repeating the begin of a known snapshot (a second initiator, a retry) is free.
        """
        if known:
            return None
        if pending >= self.limits.max_pending:
            return (
                f"{pending} snapshots are already pending (at most {self.limits.max_pending}, "
                "CL_MAX_PENDING_SNAPSHOTS): wait for them to finish"
            )
        wait = self._begins.take(now)
        if wait > 0:
            return (
                f"too many snapshots begun: at most {self.limits.begin_burst} at once and "
                f"{self.limits.begin_rate:g} per second (CL_BEGIN_RATE); "
                f"retry in {max(wait, 0.1):.1f}s"
            )
        return None

    def report_size(self, size: int) -> str | None:
        """A node's report of `size` bytes (the serialized message)."""
        if size > self.limits.max_report_bytes:
            return (
                f"report too large: {size} bytes, the collector accepts at most "
                f"{self.limits.max_report_bytes} (CL_MAX_REPORT_BYTES)"
            )
        return None

    def report_begun(self, snapshot_id: str, *, begun: bool, finished: bool) -> str | None:
        """A report for `snapshot_id`, which is pending (`begun`), `finished`, or neither."""
        if not begun and not finished:
            return f"snapshot {snapshot_id} was not begun at this collector"
        return None


def to_prune(finished: Sequence[str], keep: int) -> list[str]:
    """The ids to delete so that only the newest `keep` remain (`finished` is oldest first)."""
    excess = len(finished) - keep
    return list(finished[:excess]) if excess > 0 else []
