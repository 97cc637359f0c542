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
    """A node's local snapshot plus the wall-clock times the node saw.

    `complete` is False for a progress report: the node recorded its state
    (balance, counters) but was still waiting for a marker on each channel
    in `open_channels`; its channel states are only what it recorded so far.
    """

    snapshot: LocalSnapshot
    recorded_at: str = ""
    completed_at: str = ""
    complete: bool = True
    open_channels: tuple[str, ...] = ()
    # TimelineEvent dicts (kind, peer, seq, amount, snapshot_id, at, lamport),
    # oldest first, and the node's Lamport clock at its recording point.
    timeline: tuple[dict[str, Any], ...] = ()
    lamport_recorded: int = 0


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

    The snapshot is complete when every node in `node_ids` has a complete
    report and it did not time out; otherwise it is aborted and says who is
    to blame: `missing` lists the nodes that never recorded their state (no
    report at all), `waiting` the nodes that recorded but were still waiting
    for markers, with the senders of those markers.
    """
    missing = [node_id for node_id in node_ids if node_id not in reports]
    waiting = {
        node_id: sorted(reports[node_id].open_channels)
        for node_id in node_ids
        if node_id in reports and not reports[node_id].complete
    }
    # Counters belong to one epoch (see node/restore.py): reports from two
    # epochs mean a restore happened mid-snapshot, and the cut means nothing.
    epochs = {node_id: report.snapshot.epoch for node_id, report in reports.items()}
    mixed = len(set(epochs.values())) > 1
    status = (
        "complete" if not missing and not waiting and not timed_out and not mixed else "aborted"
    )
    nodes = {
        node_id: {
            "complete": report.complete,
            "balance": report.snapshot.balance,
            "sent": dict(sorted(report.snapshot.sent.items())),
            "received": dict(sorted(report.snapshot.received.items())),
            "initiated": report.snapshot.initiated,
            "recorded_at": report.recorded_at,
            "completed_at": report.completed_at,
            "lamport_recorded": report.lamport_recorded,
            "timeline": [dict(event) for event in report.timeline],
        }
        for node_id, report in sorted(reports.items())
    }
    channel_list: list[dict[str, Any]] = []
    for src, dst in sorted(channels):
        report = reports.get(dst)
        messages = None
        if report is not None and report.complete:
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
        "epoch": max(epochs.values(), default=0),
        "missing": missing,
        "waiting": waiting,
        "nodes": nodes,
        "channels": channel_list,
    }
    if status == "complete":
        document["verification"] = verify_snapshot(
            expected_total, nodes, channel_list, initiators=document["initiators"]
        )
    else:
        reason = abort_reason(missing, waiting)
        if mixed:
            reason = (
                "nodes recorded in different epochs ("
                + ", ".join(f"{n}: {e}" for n, e in sorted(epochs.items()))
                + "): a restore happened during the snapshot"
            )
        document["verification"] = {"ok": False, "checked": False, "reason": reason}
    return document


def abort_reason(missing: Sequence[str], waiting: Mapping[str, Sequence[str]]) -> str:
    """Why a snapshot could not complete, naming the nodes, e.g.

    'n5 never recorded its state; n1, n2, n3, n4 were still waiting for markers (from n5)'.
    Nodes waiting for the same senders are named together.
    """
    parts = []
    if missing:
        its = "its" if len(missing) == 1 else "their"
        parts.append(f"{', '.join(missing)} never recorded {its} state")
    groups: dict[tuple[str, ...], list[str]] = {}
    for node_id, senders in waiting.items():
        groups.setdefault(tuple(senders), []).append(node_id)
    for senders, waiters in groups.items():
        was = "was" if len(waiters) == 1 else "were"
        markers = "a marker" if len(senders) == 1 and len(waiters) == 1 else "markers"
        source = f" (from {', '.join(senders)})" if senders else ""
        parts.append(f"{', '.join(waiters)} {was} still waiting for {markers}{source}")
    return "; ".join(parts) if parts else "timed out"


def _duration(started_at: str, completed_at: str) -> float | None:
    try:
        start = datetime.fromisoformat(started_at)
        end = datetime.fromisoformat(completed_at)
    except ValueError:
        return None
    return round((end - start).total_seconds(), 3)
