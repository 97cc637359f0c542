"""`cl-initiator --list` as a history table and the `--count` duration summary. Pure.

The columns are the dashboard's: id, status, epoch, initiators, start, duration,
money in flight, messages in flight, verified.
"""

from __future__ import annotations

from collections.abc import Sequence

from collector.web.index import Summary, duration_stats

HEADERS = (
    "id",
    "status",
    "epoch",
    "initiators",
    "start",
    "duration",
    "money in flight",
    "msgs in flight",
    "verified",
)
RIGHT = {"epoch", "duration", "money in flight", "msgs in flight"}


def _row(s: Summary) -> tuple[str, ...]:
    if s.status == "pending":
        return (s.snapshot_id, "in progress", "", "", "", "", "", "", "")
    verified = "-" if s.verified is None else ("yes" if s.verified else "FAILED")
    duration = "-" if s.duration_seconds is None else f"{s.duration_seconds:.3f}s"
    return (
        s.snapshot_id,
        s.status,
        str(s.epoch),
        ",".join(s.initiators) or "-",
        s.started_at.replace("T", " ").removesuffix("+00:00"),
        duration,
        str(s.money_in_flight),
        str(s.messages_in_flight),
        verified,
    )


def format_table(rows: Sequence[Summary], total: int | None = None) -> str:
    """An aligned text table, newest last, with a closing line counting what was left out."""
    cells = [HEADERS, *(_row(s) for s in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if HEADERS[i] in RIGHT else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    if not rows:
        lines.append("(no snapshot)")
    if total is not None and total > len(rows):
        lines.append(f"({len(rows)} of {total} shown; --limit 0 for all)")
    return "\n".join(lines)


def pending_summary(snapshot_id: str) -> Summary:
    return Summary(snapshot_id, "pending", (), "", "", None, 0, 0, None)


def format_durations(summaries: Sequence[Summary]) -> str:
    """'durations over 5 snapshots: min 0.210s avg 0.255s max 0.310s (5 complete, 0 aborted)'."""
    complete = [s for s in summaries if s.status == "complete"]
    aborted = sum(1 for s in summaries if s.status == "aborted")
    stats = duration_stats([s.duration_seconds for s in complete if s.duration_seconds is not None])
    counts = f"({len(complete)} complete, {aborted} aborted)"
    if stats is None:
        return f"durations: no complete snapshot {counts}"
    return (
        f"durations over {stats.count} complete snapshots: min {stats.min:.3f}s "
        f"avg {stats.avg:.3f}s max {stats.max:.3f}s {counts}"
    )
