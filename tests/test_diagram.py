"""The space-time diagram: layout and SVG of known snapshots."""

from __future__ import annotations

import copy
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from diagram import DiagramError, LayoutOptions, document_svg, from_document, layout
from diagram.from_document import NO_TIMELINE_NOTE
from diagram.layout import natural_key
from diagram.model import Message, Process, SpaceTime
from tests.diagram_documents import aborted_document, at, event, three_node_document

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def elements(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['s']}}}{tag}") if cls in (e.get("class") or "").split()]


def channel_of(e: ET.Element) -> tuple[str, str]:
    return e.get("data-src") or "", e.get("data-dst") or ""


def test_one_lifeline_per_node_in_natural_order() -> None:
    root = parse(document_svg(three_node_document()))
    lanes = elements(root, "g", "lane")
    assert [lane.get("data-node") for lane in lanes] == ["n1", "n2", "n3"]
    assert not elements(root, "g", "missing")
    assert sorted(["n10", "n2", "n1"], key=natural_key) == ["n1", "n2", "n10"]


def test_one_marker_arrow_per_channel() -> None:
    document = three_node_document()
    root = parse(document_svg(document))
    markers = [e for e in elements(root, "line", "msg") if e.get("data-kind") == "marker"]
    channels = sorted((c["from"], c["to"]) for c in document["channels"])
    assert sorted(channel_of(e) for e in markers) == channels
    assert all(e.get("data-snapshot") == "story-3" for e in markers)


def test_the_cut_crosses_exactly_the_recorded_in_flight_transfers() -> None:
    document = three_node_document()
    space = from_document(document)
    placed = layout(space)
    recorded = [a for a in placed.arrows if a.message.recorded]
    assert [(a.message.src, a.message.dst, a.message.seq) for a in recorded] == [("n2", "n1", 5)]
    for arrow in placed.arrows:
        assert (arrow.crossing is not None) == arrow.message.recorded
    # The highlight lies on the arrow and on the cut.
    (x, y) = recorded[0].crossing or (0.0, 0.0)
    assert any(_on_segment((x, y), (s.x1, s.y1), (s.x2, s.y2)) for s in placed.cut)
    a = recorded[0]
    assert _on_segment((x, y), (a.x1, a.y1), (a.x2, a.y2))
    # Semantically too: sent before its sender recorded, received after its receiver did.
    by_node = {p.node: p for p in space.processes}
    for message in space.messages:
        if message.kind != "transfer":
            continue
        src_rec = by_node[message.src].recorded_at
        dst_rec = by_node[message.dst].recorded_at
        assert src_rec is not None and dst_rec is not None
        assert message.sent_at is not None and message.received_at is not None
        crosses = message.sent_at < src_rec and message.received_at > dst_rec
        assert crosses == message.recorded, message
    svg = parse(document_svg(document))
    crossings = elements(svg, "circle", "crossing")
    assert [(*channel_of(c), c.get("data-seq")) for c in crossings] == [("n2", "n1", "5")]
    highlighted = elements(svg, "line", "recorded")
    assert [(e.get("data-seq"), e.get("data-amount")) for e in highlighted] == [("5", "30")]


def test_recording_points_and_the_cut_join_every_node() -> None:
    placed = layout(from_document(three_node_document()))
    assert len(placed.cut) == 2
    xs = [lane.recorded_x for lane in placed.lanes]
    assert all(x is not None for x in xs)
    assert [(s.x1, s.x2) for s in placed.cut] == [(xs[0], xs[1]), (xs[1], xs[2])]
    root = parse(document_svg(three_node_document()))
    records = elements(root, "circle", "record")
    assert [r.get("data-node") for r in records] == ["n1", "n2", "n3"]
    assert [r.get("data-node") for r in elements(root, "circle", "initiator")] == ["n1"]
    assert len(elements(root, "path", "cut")) == 2


def test_aborted_snapshot_marks_the_missing_node_and_who_waited_for_whom() -> None:
    root = parse(document_svg(aborted_document()))
    assert [g.get("data-node") for g in elements(root, "g", "missing")] == ["n4"]
    assert [r.get("data-node") for r in elements(root, "circle", "record")] == ["n1", "n2", "n3"]
    waits = {(g.get("data-waiter"), g.get("data-sender")) for g in elements(root, "g", "wait")}
    assert waits == {("n1", "n4"), ("n2", "n4"), ("n3", "n4")}
    assert root.get("data-status") == "aborted"
    # Markers sent to n4 were never received: open stubs.
    stubs = [e for e in elements(root, "line", "open") if e.get("data-kind") == "marker"]
    assert sorted(channel_of(e) for e in stubs) == [("n1", "n4"), ("n2", "n4"), ("n3", "n4")]
    text = "".join(root.itertext())
    assert "never recorded" in text and "waits for n4" in text


def test_cut_bridges_a_missing_node_in_the_middle() -> None:
    document = aborted_document()
    # Rename so that the missing node sits between recorded ones: n4 -> n2b (lane 3 of 4).
    space = from_document(document)
    processes = (space.processes[0], space.processes[3], space.processes[1], space.processes[2])
    placed = layout(SpaceTime(space.snapshot_id, space.status, processes, space.messages))
    assert [s.bridges_missing for s in placed.cut] == [True, False]


def test_document_without_timelines_degrades_clearly() -> None:
    document = three_node_document(with_timelines=False)
    space = from_document(document)
    assert space.notes[0] == NO_TIMELINE_NOTE
    placed = layout(space)
    assert [a.message.kind for a in placed.arrows] == ["transfer"]
    (arrow,) = placed.arrows
    assert arrow.schematic and arrow.message.recorded and arrow.crossing is not None
    root = parse(document_svg(document))
    assert len(elements(root, "g", "lane")) == 3
    assert len(elements(root, "circle", "crossing")) == 1
    assert "no node timelines" in "".join(root.itertext())


def test_recorded_transfer_outside_the_timeline_window_is_drawn_schematically() -> None:
    document = three_node_document()
    document["channels"][2]["messages"] = [{"seq": 2, "amount": 5}]  # n2 -> n1 #2, not in timelines
    document["channels"][2]["messages"].append({"seq": 5, "amount": 30})
    placed = layout(from_document(document))
    recorded = sorted((a.message.seq, a.schematic) for a in placed.arrows if a.message.recorded)
    assert recorded == [(2, True), (5, False)]
    assert all(a.crossing is not None for a in placed.arrows if a.message.recorded)
    assert any("outside the nodes' timeline windows" in note for note in placed.notes)


def test_lamport_axis() -> None:
    space = from_document(three_node_document(), axis="lamport")
    assert space.time_unit == "lamport"
    assert [p.recorded_at for p in space.processes] == [1.0, 3.0, 5.0]
    without = from_document(three_node_document(with_timelines=False), axis="lamport")
    assert without.time_unit == "ms"
    assert "no Lamport clocks" in without.notes[-1]


def test_concurrent_snapshot_markers_and_bad_events_are_left_out() -> None:
    document = three_node_document()
    timeline = document["nodes"]["n1"]["timeline"]
    timeline.append(event("marker_sent", "n2", 5, 99, snapshot_id="other"))
    timeline.append({"kind": "marker_sent"})  # no peer
    timeline.append(event("transfer_sent", "n9", 5, 99, seq=1, amount=1))  # unknown peer
    space = from_document(document)
    assert len([m for m in space.messages if m.kind == "marker"]) == 6
    assert "2 unreadable timeline events skipped" in space.notes


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "must be a JSON object"),
        ({"nodes": {}}, "snapshot_id missing"),
        ({"snapshot_id": "x", "nodes": []}, "nodes missing or not an object"),
        ({"snapshot_id": "x", "nodes": {"n1": 3}}, "nodes.n1 is not an object"),
    ],
)
def test_bad_documents_are_refused_with_one_clear_error(document: Any, problem: str) -> None:
    with pytest.raises(DiagramError, match=problem):
        from_document(document)


def test_model_refuses_messages_between_unknown_processes() -> None:
    with pytest.raises(DiagramError, match="unknown process 'n9'"):
        SpaceTime("s", "complete", (Process("n1", 0.0),), (Message("marker", "n1", "n9", 0, 1),))
    with pytest.raises(DiagramError, match="at least one process"):
        SpaceTime("s", "complete", (), ())


def ring_document(n: int, transfers_per_channel: int, seed: int = 1) -> dict[str, Any]:
    """A complete n-node ring snapshot with many transfers around the cut."""
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(1, n + 1)]
    recorded = {node: 5.0 * i for i, node in enumerate(ids)}
    channels = [(ids[i], ids[(i + 1) % n]) for i in range(n)]
    timelines: dict[str, list[dict[str, Any]]] = {node: [] for node in ids}
    messages: dict[tuple[str, str], list[dict[str, int]]] = {ch: [] for ch in channels}
    for src, dst in channels:
        sent_marker = recorded[src] + 0.5
        received_marker = max(recorded[dst], sent_marker + 1) if dst != "n1" else 5.0 * n + 3
        timelines[src].append(event("marker_sent", dst, sent_marker, 0, snapshot_id="ring"))
        timelines[dst].append(event("marker_received", src, received_marker, 0, snapshot_id="ring"))
        for seq in range(1, transfers_per_channel + 1):
            sent = rng.uniform(-40, 120)
            received = sent + rng.uniform(1, 20)
            if sent < recorded[src] < received_marker and received > recorded[dst]:
                received = min(received, received_marker - 0.01)
            timelines[src].append(event("transfer_sent", dst, sent, 0, seq, 1))
            timelines[dst].append(event("transfer_received", src, received, 0, seq, 1))
            if sent < recorded[src] and received > recorded[dst]:
                messages[(src, dst)].append({"seq": seq, "amount": 1})
    nodes = {
        node: {
            "complete": True,
            "balance": 100,
            "sent": {},
            "received": {},
            "initiated": node == "n1",
            "recorded_at": at(recorded[node]),
            "completed_at": at(recorded[node] + 10),
            "timeline": timelines[node],
            "lamport_recorded": 0,
        }
        for node in ids
    }
    return {
        "snapshot_id": "ring",
        "status": "complete",
        "started_at": at(0),
        "nodes": nodes,
        "missing": [],
        "waiting": {},
        "channels": [{"from": s, "to": d, "messages": messages[(s, d)]} for s, d in channels],
    }


def test_sixteen_nodes_collapse_transfers_but_keep_markers_recorded_and_cut() -> None:
    document = ring_document(16, 30)
    recorded = {(c["from"], c["to"], m["seq"]) for c in document["channels"] for m in c["messages"]}
    assert recorded, "the story must have money in flight"
    root = parse(document_svg(document))
    lines = elements(root, "line", "msg")
    markers = [e for e in lines if e.get("data-kind") == "marker"]
    transfers = [e for e in lines if e.get("data-kind") == "transfer"]
    assert len(markers) == 16
    assert {(*channel_of(e), int(e.get("data-seq") or 0)) for e in transfers} == recorded
    assert all("recorded" in (e.get("class") or "") for e in transfers)
    assert len(elements(root, "path", "cut")) == 15
    assert len(elements(root, "circle", "crossing")) == len(recorded)
    assert elements(root, "circle", "dot")
    assert "collapsed" in "".join(root.itertext())
    # Still one lane per node, and the picture fits a slide.
    assert len(elements(root, "g", "lane")) == 16
    assert float(root.get("height") or 0) < 800


def test_crossings_match_recorded_transfers_on_random_rings() -> None:
    for seed in range(20):
        document = ring_document(5, 12, seed)
        placed = layout(from_document(document), LayoutOptions(collapse_transfers=False))
        recorded = {
            (c["from"], c["to"], m["seq"]) for c in document["channels"] for m in c["messages"]
        }
        crossed = {
            (a.message.src, a.message.dst, a.message.seq)
            for a in placed.arrows
            if a.crossing is not None
        }
        assert crossed == recorded, seed


def test_layout_is_deterministic_and_does_not_modify_its_input() -> None:
    document = three_node_document()
    before = copy.deepcopy(document)
    assert document_svg(document) == document_svg(document)
    assert document == before


def _on_segment(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> bool:
    cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
    inside = min(a[0], b[0]) - 1e-6 <= p[0] <= max(a[0], b[0]) + 1e-6
    return abs(cross) / max(length, 1e-9) < 1e-6 and inside
