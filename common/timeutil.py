"""Wall-clock helpers for the edges (the core never reads a clock)."""

from datetime import UTC, datetime


def utc_now_iso() -> str:
    """Now, as ISO 8601 UTC with milliseconds, e.g. 2026-11-21T05:01:08.123+00:00."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
