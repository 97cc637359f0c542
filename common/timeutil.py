"""Wall-clock helpers for the edges (the core never reads a clock)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime


def iso_utc(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds,
    e.g. 2026-11-21T05:01:08.123+00:00."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def utc_now_iso() -> str:
    """Now, as `iso_utc` gives it."""
    return iso_utc(time.time())


def new_snapshot_id(now: datetime | None = None, token: str | None = None) -> str:
    """A fresh id like snap-20261121T050108Z-a1b2c3 (time-ordered, unique enough
    that two initiators do not pick the same one by accident)."""
    now = now or datetime.now(UTC)
    # os.urandom rather than `secrets`: the same source, without importing
    # hmac/hashlib/random on every CLI start.
    return f"snap-{now:%Y%m%dT%H%M%SZ}-{token or os.urandom(3).hex()}"
