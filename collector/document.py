"""The global snapshot JSON document (schema_version 1). Pure.

The collector and the simulator both build their files with `build_document`,
so a snapshot looks the same whichever produced it. The README documents the
schema with a real example.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.verify import verify_snapshot
from node.core import LocalSnapshot

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NodeReport:
    """A node's local snapshot plus the wall-clock times the node saw."""

    snapshot: LocalSnapshot
    recorded_at: str = ""
    completed_at: str = ""


def build_document(
    *,
    snapshot_id: str,
    initiators: Sequence[str],
    started_at: str,
    completed_at: str,
    expected_total: int,
    node_ids: Sequence[str],
    channels: Sequence[tuple[str, str]],
    reports: Mapping[str, NodeReport],
    timed_out: bool = False,
) -> dict[str, Any]:
    """Assemble (and verify, when complete) one global snapshot document.

    The snapshot is complete when every node in `node_ids` has reported and
    it did not time out; otherwise it is aborted and lists what is missing.
    """
    missing = [node_id for node_id in node_ids if node_id not in reports]
    status = "complete" if not missing and not timed_out else "aborted"
    nodes = {
        node_id: {
            "balance": report.snapshot.balance,
            "sent": dict(sorted(report.snapshot.sent.items())),
            "received": dict(sorted(report.snapshot.received.items())),
            "initiated": report.snapshot.initiated,
            "recorded_at": report.recorded_at,
            "completed_at": report.completed_at,
        }
        for node_id, report in sorted(reports.items())
    }
    channel_list: list[dict[str, Any]] = []
    for src, dst in sorted(channels):
        report = reports.get(dst)
        messages = None
        if report is not None:
            recorded = report.snapshot.channels.get(src, ())
            messages = [{"seq": m.transfer_seq, "amount": m.amount} for m in recorded]
        channel_list.append({"from": src, "to": dst, "messages": messages})

    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "snapshot_id": snapshot_id,
        "status": status,
        "initiators": sorted(set(initiators)),
        "started_at": started_at,
        "completed_at": completed_at,
        "duration_seconds": _duration(started_at, completed_at),
        "expected_total": expected_total,
        "missing": missing,
        "nodes": nodes,
        "channels": channel_list,
    }
    if status == "complete":
        document["verification"] = verify_snapshot(expected_total, nodes, channel_list)
    else:
        reason = (
            f"not every node reported: missing {', '.join(missing)}"
            if missing
            else "timed out"
        )
        document["verification"] = {"ok": False, "checked": False, "reason": reason}
    return document


def _duration(started_at: str, completed_at: str) -> float | None:
    try:
        start = datetime.fromisoformat(started_at)
        end = datetime.fromisoformat(completed_at)
    except ValueError:
        return None
    return round((end - start).total_seconds(), 3)
