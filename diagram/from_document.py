"""Adapter: a snapshot JSON document (schema_version 1) -> `SpaceTime`. Pure.

Uses each node's `timeline` (markers and a window of transfers, with ISO
times and Lamport clocks) and `lamport_recorded`. Documents written before
nodes reported timelines still draw: the lifelines, the recording points, the
cut and the recorded in-flight transfers (schematically), with a note saying
what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from diagram.layout import natural_key
from diagram.model import DiagramError, Message, MessageKind, Process, SpaceTime

Axis = Literal["wall", "lamport"]

_KINDS: dict[str, tuple[MessageKind, bool]] = {
    "marker_sent": ("marker", True),
    "marker_received": ("marker", False),
    "transfer_sent": ("transfer", True),
    "transfer_received": ("transfer", False),
}

NO_TIMELINE_NOTE = (
    "this snapshot has no node timelines (written before nodes reported them): "
    "markers and transfers are not drawn; the recorded in-flight transfers are "
    "drawn schematically across the cut"
)


def from_document(document: Mapping[str, Any], axis: Axis = "wall") -> SpaceTime:
    """The diagram input of one snapshot document; `axis` "lamport" uses the
    nodes' Lamport clocks as time instead of their wall clocks."""
    if not isinstance(document, Mapping):
        raise DiagramError("a snapshot document must be a JSON object")
    snapshot_id = document.get("snapshot_id")
    nodes = document.get("nodes")
    if not isinstance(snapshot_id, str) or not snapshot_id:
        raise DiagramError("snapshot document: snapshot_id missing")
    if not isinstance(nodes, Mapping):
        raise DiagramError(f"snapshot {snapshot_id}: nodes missing or not an object")
    status = str(document.get("status", "?"))
    missing = [str(n) for n in document.get("missing") or []]
    channels = [c for c in document.get("channels") or [] if isinstance(c, Mapping)]
    names = set(nodes) | set(missing)
    names |= {str(c.get("from")) for c in channels} | {str(c.get("to")) for c in channels}
    names.discard("None")
    order = sorted(names, key=natural_key)

    notes: list[str] = []
    has_timeline = any(
        isinstance(state, Mapping) and isinstance(state.get("timeline"), list)
        for state in nodes.values()
    )
    if axis == "lamport" and not all(
        isinstance(state, Mapping) and isinstance(state.get("lamport_recorded"), int)
        for state in nodes.values()
    ):
        notes.append("no Lamport clocks in this snapshot: wall-clock time shown instead")
        axis = "wall"
    origin_text = str(document.get("started_at") or "")
    origin = _parse(origin_text)
    if axis == "wall" and origin is None:
        origin = _earliest(nodes)

    def when(value: Any, lamport: Any) -> float | None:
        if axis == "lamport":
            return float(lamport) if isinstance(lamport, int) else None
        moment = _parse(value)
        if moment is None or origin is None:
            return None
        return (moment - origin).total_seconds() * 1000.0

    # Pair the two ends of every message seen in some timeline.
    sends: dict[tuple[Any, ...], tuple[float | None, int | None]] = {}
    receives: dict[tuple[Any, ...], tuple[float | None, int | None]] = {}
    bad = 0
    last_marker: dict[str, float] = {}
    for node_id, state in nodes.items():
        if not isinstance(state, Mapping):
            raise DiagramError(f"snapshot {snapshot_id}: nodes.{node_id} is not an object")
        for event in state.get("timeline") or []:
            try:
                kind, is_send = _KINDS[str(event["kind"])]
                peer = str(event["peer"])
                at = when(event.get("at"), event.get("lamport"))
                if kind == "marker":
                    sid = str(event.get("snapshot_id") or snapshot_id)
                    if sid != snapshot_id:
                        continue  # a concurrent snapshot's marker
                    ident: Any = sid
                    amount = None
                else:
                    ident = int(event["seq"])
                    amount = int(event["amount"])
            except (KeyError, TypeError, ValueError):
                bad += 1
                continue
            if peer not in names:
                bad += 1
                continue
            src, dst = (str(node_id), peer) if is_send else (peer, str(node_id))
            key = (kind, src, dst, ident)
            (sends if is_send else receives)[key] = (at, amount)
            if kind == "marker" and not is_send and at is not None:
                last_marker[str(node_id)] = max(last_marker.get(str(node_id), at), at)
    if bad:
        notes.append(f"{bad} unreadable timeline events skipped")

    recorded: set[tuple[str, str, int]] = set()
    recorded_amount: dict[tuple[str, str, int], int] = {}
    for channel in channels:
        for message in channel.get("messages") or []:
            try:
                key3 = (str(channel["from"]), str(channel["to"]), int(message["seq"]))
                recorded.add(key3)
                recorded_amount[key3] = int(message["amount"])
            except (KeyError, TypeError, ValueError):
                continue

    messages: list[Message] = []
    for key in sorted(set(sends) | set(receives), key=_sort_key(sends, receives)):
        kind, src, dst, ident = key
        sent_at, amount = sends.get(key, (None, None))
        received_at, received_amount = receives.get(key, (None, None))
        is_recorded = kind == "transfer" and (src, dst, ident) in recorded
        messages.append(
            Message(
                kind=kind,
                src=src,
                dst=dst,
                sent_at=sent_at,
                received_at=received_at,
                seq=ident if kind == "transfer" else None,
                amount=amount if amount is not None else received_amount,
                snapshot_id=ident if kind == "marker" else None,
                recorded=is_recorded,
            )
        )
    seen = {(m.src, m.dst, m.seq) for m in messages if m.kind == "transfer"}
    unseen = sorted(recorded - seen, key=lambda k: (natural_key(k[0]), natural_key(k[1]), k[2]))
    for src, dst, seq in unseen:
        messages.append(
            Message(
                "transfer",
                src,
                dst,
                None,
                None,
                seq,
                recorded_amount[(src, dst, seq)],
                recorded=True,
            )
        )
    if not has_timeline:
        notes.insert(0, NO_TIMELINE_NOTE)
    elif unseen:
        notes.append(
            f"{len(unseen)} recorded in-flight transfers are outside the nodes' timeline "
            "windows: drawn schematically across the cut"
        )

    waiting = document.get("waiting") or {}
    processes = []
    for node_id in order:
        state = nodes.get(node_id)
        if not isinstance(state, Mapping):
            processes.append(Process(node_id, None))
            continue
        recorded_at: float | None
        if axis == "lamport":
            recorded_at = float(state["lamport_recorded"])
            completed_at = last_marker.get(node_id)
        else:
            recorded_at = when(state.get("recorded_at"), None)
            completed_at = when(state.get("completed_at"), None)
            if recorded_at is None:
                notes.append(f"{node_id}: no readable recorded_at")
        balance = state.get("balance")
        processes.append(
            Process(
                node=node_id,
                recorded_at=recorded_at,
                completed_at=completed_at if state.get("complete", True) else None,
                balance=balance if isinstance(balance, int) else None,
                initiated=bool(state.get("initiated")),
                waiting_for=tuple(str(s) for s in waiting.get(node_id, [])),
            )
        )
    return SpaceTime(
        snapshot_id=snapshot_id,
        status=status,
        processes=tuple(processes),
        messages=tuple(messages),
        time_unit="lamport" if axis == "lamport" else "ms",
        origin="" if axis == "lamport" else origin_text,
        notes=tuple(notes),
    )


def has_timelines(document: Mapping[str, Any]) -> bool:
    nodes = document.get("nodes")
    return isinstance(nodes, Mapping) and any(
        isinstance(s, Mapping) and isinstance(s.get("timeline"), list) for s in nodes.values()
    )


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _earliest(nodes: Mapping[str, Any]) -> datetime | None:
    times = [
        t
        for state in nodes.values()
        if isinstance(state, Mapping)
        for t in [_parse(state.get("recorded_at"))]
        if t is not None
    ]
    return min(times) if times else None


def _sort_key(
    sends: Mapping[tuple[Any, ...], tuple[float | None, int | None]],
    receives: Mapping[tuple[Any, ...], tuple[float | None, int | None]],
) -> Any:
    def key(k: tuple[Any, ...]) -> tuple[float, str, str, str]:
        t = sends.get(k, (None, None))[0]
        if t is None:
            t = receives.get(k, (None, None))[0]
        return (t if t is not None else float("inf"), k[1], k[2], str(k[3]))

    return key
