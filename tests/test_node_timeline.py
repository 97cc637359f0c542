"""The snapshot timeline: the pure recorder, what a node reports, what the JSON holds."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import grpc

from collector.server import CollectorServer
from common.config import load_cluster
from node import wire
from node.core import Marker, Transfer
from node.runtime import NodeRuntime
from node.storage import Store
from node.testing import write_cluster
from node.timeline import (
    MARKER_RECEIVED,
    MARKER_SENT,
    TRANSFER_RECEIVED,
    TRANSFER_SENT,
    TimelineRecorder,
)
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

# ------------------------------------------------------------ recorder (pure)


def test_lamport_clock_ticks_and_witnesses() -> None:
    recorder = TimelineRecorder(clock=5)
    assert recorder.tick() == 6
    assert recorder.witness(3) == 7  # own clock ahead: +1
    assert recorder.witness(20) == 21  # remote ahead: max + 1


def test_window_keeps_at_most_per_side_transfers_before_and_after_per_channel() -> None:
    recorder = TimelineRecorder(per_side=3)
    clock = 0
    for seq in range(1, 11):  # 10 transfers out to b, 10 in from c, before the cut
        clock += 1
        recorder.transfer(TRANSFER_SENT, "b", seq, seq, 100.0 + clock, clock)
        clock += 1
        recorder.transfer(TRANSFER_RECEIVED, "c", seq, seq, 100.0 + clock, clock)
    clock += 1
    recorder.opened("s1", clock)
    recorder.marker(MARKER_SENT, "b", 11, "s1", 200.0, clock + 1)
    recorder.marker(MARKER_SENT, "b", 1, "other", 200.0, clock + 1)  # another snapshot's
    clock += 1
    for seq in range(11, 21):  # 10 more each way, after the cut
        clock += 1
        recorder.transfer(TRANSFER_SENT, "b", seq, seq, 300.0, clock)
        clock += 1
        recorder.transfer(TRANSFER_RECEIVED, "c", seq, seq, 300.0, clock)
    events = recorder.closed("s1")

    def seqs(kind: str) -> list[int]:
        return [e.seq for e in events if e.kind == kind]

    assert seqs(TRANSFER_SENT) == [8, 9, 10, 11, 12, 13]  # 3 before + 3 after
    assert seqs(TRANSFER_RECEIVED) == [8, 9, 10, 11, 12, 13]
    assert [(e.kind, e.snapshot_id) for e in events if e.kind == MARKER_SENT] == [
        (MARKER_SENT, "s1")
    ]
    assert [e.lamport for e in events] == sorted(e.lamport for e in events)
    assert recorder.open_windows == ()  # closed: forgotten
    assert recorder.events("s1") == ()


def test_copy_is_independent() -> None:
    recorder = TimelineRecorder()
    recorder.opened("s1", 1)
    copy = recorder.copy()
    copy.marker(MARKER_RECEIVED, "b", 1, "s1", 1.0, 2)
    assert recorder.events("s1") == () and len(copy.events("s1")) == 1


# ------------------------------------------------------ runtime and collector


def test_final_report_carries_markers_transfers_and_the_lamport_clock(tmp_path: Path) -> None:
    write_cluster(tmp_path / "cluster.yaml", {"a": 100, "b": 100, "c": 100})
    config = load_cluster(tmp_path / "cluster.yaml")
    store = Store(tmp_path / "a")
    runtime = NodeRuntime(config, "a", store)
    try:
        runtime.send_transfer("b", 10)  # lamport 1
        runtime.receive(wire.frame_for("c", "a", 1, Transfer(1, 5), lamport=40))  # -> 41
        assert runtime.start_snapshot("s1") is False  # recorded at 42; markers 43, 44
        (b_marker,) = runtime.wait_frames("b", 1, 0)
        assert b_marker.lamport > 42 and b_marker.WhichOneof("body") == "marker"
        runtime.receive(wire.frame_for("b", "a", 1, Transfer(1, 7), lamport=2))  # in flight
        runtime.receive(wire.frame_for("b", "a", 2, Marker("s1"), lamport=3))
        runtime.receive(wire.frame_for("c", "a", 2, Marker("s1"), lamport=50))
        (report,) = runtime.wait_reports(0)
    finally:
        runtime.close()
        store.close()
    assert report.complete and report.lamport_recorded == 42
    kinds = [(e.kind, e.peer) for e in report.timeline]
    assert kinds == [
        ("transfer_sent", "b"),
        ("transfer_received", "c"),
        ("marker_sent", "b"),
        ("marker_sent", "c"),
        ("transfer_received", "b"),
        ("marker_received", "b"),
        ("marker_received", "c"),
    ]
    lamports = [e.lamport for e in report.timeline]
    assert lamports == sorted(lamports) and lamports[-1] == 51
    assert [e.amount for e in report.timeline if e.kind.startswith("transfer")] == [10, 5, 7]
    assert all(e.snapshot_id == "s1" for e in report.timeline if e.kind.startswith("marker"))
    for event in report.timeline:
        assert datetime.fromisoformat(event.at).tzinfo is not None


def test_lamport_clock_survives_a_restart(tmp_path: Path) -> None:
    write_cluster(tmp_path / "cluster.yaml", {"a": 100, "b": 100, "c": 100})
    config = load_cluster(tmp_path / "cluster.yaml")
    store = Store(tmp_path / "a")
    runtime = NodeRuntime(config, "a", store)
    runtime.receive(wire.frame_for("c", "a", 1, Transfer(1, 5), lamport=70))
    store.close()  # as after SIGKILL: only what was committed
    store = Store(tmp_path / "a")
    try:
        runtime = NodeRuntime(config, "a", store)
        runtime.send_transfer("b", 1)
        (frame,) = runtime.wait_frames("b", 0, 0)
        assert frame.lamport == 72
    finally:
        store.close()


def test_collector_puts_the_timeline_in_the_snapshot_json(tmp_path: Path) -> None:
    write_cluster(tmp_path / "ring.yaml", {"a": 100, "b": 100}, topology="ring")
    config = load_cluster(tmp_path / "ring.yaml")
    collector = CollectorServer(config, str(tmp_path / "snaps"), "127.0.0.1", 0)
    collector.start()
    stores = {n: Store(tmp_path / n) for n in ("a", "b")}
    runtimes = {n: NodeRuntime(config, n, stores[n]) for n in ("a", "b")}
    try:
        a, b = runtimes["a"], runtimes["b"]
        with grpc.insecure_channel(collector.address) as channel:
            stub = pb_grpc.CollectorStub(channel)
            stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["a"]))
            a.start_snapshot("s1")
            for frame in a.wait_frames("b", 0, 0):
                b.receive(frame)
            for frame in b.wait_frames("a", 0, 0):
                a.receive(frame)
            for runtime in (a, b):
                for report in runtime.wait_reports(0):
                    stub.ReportLocalSnapshot(report, timeout=5)
        document = json.loads((tmp_path / "snaps" / "s1.json").read_text())
    finally:
        for runtime in runtimes.values():
            runtime.close()
        for store in stores.values():
            store.close()
        collector.stop(grace=0.2)
    assert document["status"] == "complete"
    node_a, node_b = document["nodes"]["a"], document["nodes"]["b"]
    assert [e["kind"] for e in node_a["timeline"]] == ["marker_sent", "marker_received"]
    assert [e["kind"] for e in node_b["timeline"]] == ["marker_received", "marker_sent"]
    sent = node_a["timeline"][0]
    assert set(sent) == {"kind", "peer", "seq", "amount", "snapshot_id", "at", "lamport"}
    assert (sent["peer"], sent["snapshot_id"], sent["lamport"]) == ("b", "s1", 2)
    assert node_a["lamport_recorded"] == 1
    # b recorded when a's marker (lamport 2) arrived: max(0, 2) + 1
    assert node_b["lamport_recorded"] == 3
