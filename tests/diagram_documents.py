"""Known snapshot documents for the diagram tests, built from a written-out story.

`three_node_document()` is a complete snapshot of a 3-node complete graph in
which n1 initiates; exactly one transfer (n2 -> n1 #5, amount 30) is in flight
across the cut. `aborted_document()` is a 4-node snapshot where n4 never
recorded and n1, n2, n3 still wait for its marker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def at(ms: float) -> str:
    return (START + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def event(
    kind: str,
    peer: str,
    ms: float,
    lamport: int,
    seq: int = 0,
    amount: int = 0,
    snapshot_id: str = "",
) -> dict[str, Any]:
    return {
        "kind": kind,
        "peer": peer,
        "seq": seq,
        "amount": amount,
        "snapshot_id": snapshot_id,
        "at": at(ms),
        "lamport": lamport,
    }


def three_node_document(with_timelines: bool = True) -> dict[str, Any]:
    sid = "story-3"
    markers = [  # (src, dst, sent ms, received ms)
        ("n1", "n2", 1, 100),
        ("n1", "n3", 1, 120),
        ("n2", "n1", 101, 200),
        ("n2", "n3", 101, 210),
        ("n3", "n1", 121, 230),
        ("n3", "n2", 121, 240),
    ]
    transfers = [  # (src, dst, seq, amount, sent ms, received ms)
        ("n2", "n1", 5, 30, -50, 60),  # in flight: n2 sent before 100, n1 got it after 0
        ("n1", "n2", 7, 20, -80, 20),  # arrived before n2 recorded: part of n2's balance
        ("n3", "n2", 3, 10, 150, 250),  # sent after n3 recorded: not in this snapshot
    ]
    recorded = {"n1": 0, "n2": 100, "n3": 120}
    completed = {"n1": 230, "n2": 240, "n3": 210}
    timelines: dict[str, list[dict[str, Any]]] = {n: [] for n in recorded}
    clock = 0
    for src, dst, sent, received in markers:
        clock += 1
        timelines[src].append(event("marker_sent", dst, sent, clock, snapshot_id=sid))
        clock += 1
        timelines[dst].append(event("marker_received", src, received, clock, snapshot_id=sid))
    for src, dst, seq, amount, sent, received in transfers:
        clock += 1
        timelines[src].append(event("transfer_sent", dst, sent, clock, seq, amount))
        clock += 1
        timelines[dst].append(event("transfer_received", src, received, clock, seq, amount))
    nodes: dict[str, Any] = {}
    balances = {"n1": 900, "n2": 1070, "n3": 1000}
    for n in recorded:
        peers = [p for p in recorded if p != n]
        nodes[n] = {
            "complete": True,
            "balance": balances[n],
            "sent": {p: 10 for p in peers},
            "received": {p: 10 for p in peers},
            "initiated": n == "n1",
            "recorded_at": at(recorded[n]),
            "completed_at": at(completed[n]),
        }
        if with_timelines:
            nodes[n]["timeline"] = timelines[n]
            nodes[n]["lamport_recorded"] = {"n1": 1, "n2": 3, "n3": 5}[n]
    channels = [
        {
            "from": s,
            "to": d,
            "messages": [{"seq": 5, "amount": 30}] if (s, d) == ("n2", "n1") else [],
        }
        for s in recorded
        for d in recorded
        if s != d
    ]
    return {
        "schema_version": 1,
        "snapshot_id": sid,
        "status": "complete",
        "initiators": ["n1"],
        "started_at": at(0),
        "completed_at": at(240),
        "duration_seconds": 0.24,
        "expected_total": 3000,
        "missing": [],
        "waiting": {},
        "nodes": nodes,
        "channels": channels,
        "verification": {
            "ok": True,
            "conservation": {
                "ok": True,
                "expected_total": 3000,
                "recorded_balances": 2970,
                "in_flight": 30,
                "recorded_total": 3000,
            },
            "channels": [],
        },
    }


def aborted_document() -> dict[str, Any]:
    sid = "n4-down"
    ids = ["n1", "n2", "n3", "n4"]
    recorded = {"n1": 0, "n2": 40, "n3": 55}
    nodes: dict[str, Any] = {}
    clock = 0
    timelines: dict[str, list[dict[str, Any]]] = {n: [] for n in recorded}
    for src in recorded:
        for dst in ids:
            if dst == src:
                continue
            clock += 1
            timelines[src].append(
                event("marker_sent", dst, recorded[src] + 1, clock, snapshot_id=sid)
            )
            if dst in recorded:  # every marker between live nodes arrives
                clock += 1
                received = max(recorded[dst], recorded[src] + 12)
                timelines[dst].append(
                    event("marker_received", src, received, clock, snapshot_id=sid)
                )
    for n, t in recorded.items():
        nodes[n] = {
            "complete": False,
            "balance": 1000,
            "sent": {},
            "received": {},
            "initiated": n == "n1",
            "recorded_at": at(t),
            "completed_at": "",
            "timeline": timelines[n],
            "lamport_recorded": 1,
        }
    return {
        "schema_version": 1,
        "snapshot_id": sid,
        "status": "aborted",
        "initiators": ["n1"],
        "started_at": at(0),
        "completed_at": at(30000),
        "duration_seconds": 30.0,
        "expected_total": 4000,
        "missing": ["n4"],
        "waiting": {"n1": ["n4"], "n2": ["n4"], "n3": ["n4"]},
        "nodes": nodes,
        "channels": [{"from": s, "to": d, "messages": None} for s in ids for d in ids if s != d],
        "verification": {
            "ok": False,
            "checked": False,
            "reason": "n4 never recorded its state; n1, n2, n3 were still "
            "waiting for markers (from n4)",
        },
    }
