"""Adapter: the simulator's schedule + one of its snapshot documents -> `SpaceTime`. Pure.

Takes the schedule in its stable JSON form (`simulator.engine.step_to_dict`):
sends and deliveries share `(from, to, index)`; `record` and `finish` steps
give each node's recording point and last marker. Time is the simulator's
tick; steps within one tick keep their order as fractions of it (a send at
tick 3 before a node records at tick 3 is drawn just left of the recording
point), so the picture is exactly the run's order of events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from diagram.layout import natural_key
from diagram.model import DiagramError, Message, Process, SpaceTime


def from_schedule(steps: Sequence[Mapping[str, Any]], document: Mapping[str, Any]) -> SpaceTime:
    snapshot_id = document.get("snapshot_id")
    if not isinstance(snapshot_id, str):
        raise DiagramError("snapshot document: snapshot_id missing")
    per_tick = Counter(int(s["tick"]) for s in steps)
    seen: Counter[int] = Counter()
    times: list[float] = []
    for step in steps:
        tick = int(step["tick"])
        seen[tick] += 1
        times.append(tick + (seen[tick] - 1) / per_tick[tick])

    sends: dict[tuple[str, str, int], tuple[float, Mapping[str, Any]]] = {}
    delivered: dict[tuple[str, str, int], float] = {}
    recorded_at: dict[str, float] = {}
    finished_at: dict[str, float] = {}
    nodes: set[str] = set()
    for t, step in zip(times, steps, strict=True):
        kind = step.get("kind")
        if kind in ("send", "deliver"):
            key = (str(step["from"]), str(step["to"]), int(step["index"]))
            nodes.update(key[:2])
            if kind == "send":
                sends[key] = (t, step["message"])
            else:
                delivered[key] = t
        elif kind in ("record", "finish", "initiate", "restore"):
            nodes.add(str(step["node"]))
            if step.get("snapshot_id") == snapshot_id:
                if kind == "record":
                    recorded_at.setdefault(str(step["node"]), t)
                elif kind == "finish":
                    finished_at.setdefault(str(step["node"]), t)

    in_flight = {
        (str(c["from"]), str(c["to"]), int(m["seq"]))
        for c in document.get("channels") or []
        for m in c.get("messages") or []
    }
    messages = []
    for key, (sent, payload) in sorted(sends.items(), key=lambda item: item[1][0]):
        src, dst, _ = key
        if payload.get("type") == "marker":
            if payload.get("snapshot_id") != snapshot_id:
                continue
            messages.append(
                Message("marker", src, dst, sent, delivered.get(key), snapshot_id=snapshot_id)
            )
        else:
            seq = int(payload["seq"])
            messages.append(
                Message(
                    "transfer",
                    src,
                    dst,
                    sent,
                    delivered.get(key),
                    seq=seq,
                    amount=int(payload["amount"]),
                    recorded=(src, dst, seq) in in_flight,
                )
            )

    states: Mapping[str, Any] = document.get("nodes") or {}
    waiting: Mapping[str, Any] = document.get("waiting") or {}
    nodes |= set(states)
    processes = []
    for node in sorted(nodes, key=natural_key):
        state = states.get(node) if isinstance(states.get(node), Mapping) else None
        balance = state.get("balance") if state else None
        processes.append(
            Process(
                node=node,
                recorded_at=recorded_at.get(node),
                completed_at=finished_at.get(node),
                balance=balance if isinstance(balance, int) else None,
                initiated=bool(state.get("initiated")) if state else False,
                waiting_for=tuple(str(s) for s in waiting.get(node, [])),
            )
        )
    return SpaceTime(
        snapshot_id=snapshot_id,
        status=str(document.get("status", "?")),
        processes=tuple(processes),
        messages=tuple(messages),
        time_unit="tick",
        origin="",
    )
