"""Durable node state: atomic transactions, and a restart reproduces the state."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import ClusterConfig, load_cluster
from node import wire
from node.core import Marker, Transfer
from node.runtime import NodeRuntime, SequenceGap
from node.storage import DB_NAME, DataDirLocked, DataDirMismatch, Store
from node.testing import write_cluster
from protos import chandy_lamport_pb2 as pb


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    write_cluster(tmp_path / "cluster.yaml", {"a": 100, "b": 100, "c": 100})
    return load_cluster(tmp_path / "cluster.yaml")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "a"


@pytest.fixture
def runtime(config: ClusterConfig, data_dir: Path) -> Iterator[NodeRuntime]:
    store = Store(data_dir)
    yield NodeRuntime(config, "a", store)
    store.close()


def reopen(config: ClusterConfig, data_dir: Path, old: NodeRuntime) -> NodeRuntime:
    old._store.close()  # what SIGKILL leaves behind: only what was committed
    return NodeRuntime(config, "a", Store(data_dir))


def db_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / DB_NAME) as db:
        return db.execute(sql).fetchall()


def transfer_frame(sender: str, seq: int, transfer_seq: int, amount: int) -> pb.Frame:
    return wire.frame_for(sender, "a", seq, Transfer(transfer_seq, amount))


def test_debit_and_outbox_frame_are_committed_together(runtime: NodeRuntime, data_dir: Path):
    runtime.send_transfer("b", 30)

    core = json.loads(db_rows(data_dir, "SELECT value FROM meta WHERE key = 'core'")[0][0])
    assert core["balance"] == 70 and core["sent"]["b"] == 1
    ((peer, seq, raw),) = db_rows(data_dir, "SELECT peer, seq, frame FROM outbox")
    frame = pb.Frame.FromString(raw)
    assert (peer, seq, frame.seq, frame.transfer.amount) == ("b", 1, 1, 30)
    assert db_rows(data_dir, "SELECT next_seq FROM outgoing WHERE peer = 'b'") == [(2,)]


def test_failed_commit_changes_neither_disk_nor_memory(runtime: NodeRuntime, data_dir: Path):
    # A row already holding outbox slot (b, 1) makes the transfer's INSERT fail
    # inside the transaction, after the core JSON was already updated in it.
    with sqlite3.connect(data_dir / DB_NAME) as db:
        db.execute("INSERT INTO outbox VALUES ('b', 1, x'00')")

    with pytest.raises(sqlite3.IntegrityError):
        runtime.send_transfer("b", 30)

    core = json.loads(db_rows(data_dir, "SELECT value FROM meta WHERE key = 'core'")[0][0])
    assert core["balance"] == 100 and core["sent"]["b"] == 0
    assert runtime.status().balance == 100
    assert runtime.status().unacknowledged_frames == 0


def test_credit_and_last_applied_seq_are_committed_together(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    assert runtime.receive(transfer_frame("b", 1, 1, 25)) == 1

    assert db_rows(data_dir, "SELECT last_applied FROM incoming WHERE peer = 'b'") == [(1,)]
    restarted = reopen(config, data_dir, runtime)
    try:
        assert restarted.status().balance == 125
        # After the restart the same frame is a duplicate: acked, not applied.
        assert restarted.receive(transfer_frame("b", 1, 1, 25)) == 1
        assert restarted.status().balance == 125
        with pytest.raises(SequenceGap):
            restarted.receive(transfer_frame("b", 3, 2, 5))
    finally:
        restarted._store.close()


def test_restart_reproduces_core_outbox_and_snapshot_state(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.send_transfer("b", 10)
    runtime.send_transfer("c", 20)
    runtime.receive(transfer_frame("c", 1, 1, 5))
    assert runtime.start_snapshot("snap-1") is False  # recording; markers queued
    runtime.receive(transfer_frame("b", 1, 1, 7))  # recorded as in flight on b -> a
    runtime.acknowledge("b", 1)  # lazily deleted: must not matter after restart
    before = runtime._core.to_dict()
    frames_before = {p: runtime.wait_frames(p, 0, 0) for p in ("b", "c")}

    restarted = reopen(config, data_dir, runtime)
    try:
        assert restarted._core.to_dict() == before
        assert restarted.status().active_snapshots == ["snap-1"]
        # The acked frame may come back (the receiver drops it); nothing else differs.
        frames_after = {p: restarted.wait_frames(p, 0, 0) for p in ("b", "c")}
        assert frames_after["c"] == frames_before["c"]
        assert frames_after["b"][-len(frames_before["b"]) :] == frames_before["b"]
        # The snapshot completes after the restart, with its recorded_at kept.
        restarted.receive(wire.frame_for("b", "a", 2, Marker("snap-1")))
        restarted.receive(wire.frame_for("c", "a", 2, Marker("snap-1")))
        (report,) = restarted.wait_reports(timeout=0)
        assert report.snapshot_id == "snap-1" and report.balance == 75
        assert [list(ch.messages) for ch in report.channels] == [
            [pb.RecordedMessage(transfer_seq=1, amount=7)],
            [],
        ]
        assert report.recorded_at and report.completed_at >= report.recorded_at
    finally:
        restarted._store.close()
    assert len(db_rows(data_dir, "SELECT * FROM reports")) == 1


def test_report_is_deleted_only_when_delivered(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.start_snapshot("s1")
    for peer in ("b", "c"):
        runtime.receive(wire.frame_for(peer, "a", 1, Marker("s1")))
    assert [r.snapshot_id for r in runtime.wait_reports(0)] == ["s1"]
    restarted = reopen(config, data_dir, runtime)
    try:
        (report,) = restarted.wait_reports(0)
        assert report.snapshot_id == "s1" and report.complete
        assert restarted.report_delivered(report) is True
        assert restarted.wait_reports(0) == []
    finally:
        restarted._store.close()
    assert db_rows(data_dir, "SELECT * FROM reports") == []


def stored_reports(data_dir: Path) -> dict[str, pb.LocalSnapshot]:
    rows = db_rows(data_dir, "SELECT snapshot_id, report FROM reports")
    return {str(sid): pb.LocalSnapshot.FromString(bytes(raw)) for sid, raw in rows}  # type: ignore[arg-type]


def test_progress_report_is_committed_with_the_recording_and_replaced_by_the_final_one(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.send_transfer("b", 10)
    runtime.receive(wire.frame_for("b", "a", 1, Marker("s1")))  # records; c still open

    (progress,) = runtime.wait_reports(0)
    assert not progress.complete and list(progress.open_channels) == ["c"]
    assert (progress.balance, dict(progress.sent)) == (90, {"b": 1, "c": 0})
    assert [(ch.sender, list(ch.messages)) for ch in progress.channels] == [("b", []), ("c", [])]
    assert progress.recorded_at and progress.completed_at == ""
    assert stored_reports(data_dir) == {"s1": progress}
    assert db_rows(data_dir, "SELECT snapshot_id FROM recorded") == [("s1",)]

    runtime.receive(transfer_frame("c", 1, 1, 7))  # recorded on c -> a
    restarted = reopen(config, data_dir, runtime)  # the progress report survives a crash
    try:
        assert restarted.wait_reports(0) == [progress]
        restarted.receive(wire.frame_for("c", "a", 2, Marker("s1")))
        (final,) = restarted.wait_reports(0)
        assert final.complete and list(final.open_channels) == []
        assert (final.balance, final.recorded_at) == (progress.balance, progress.recorded_at)
        assert [list(ch.messages) for ch in final.channels] == [
            [],
            [pb.RecordedMessage(transfer_seq=1, amount=7)],
        ]
        assert final.completed_at >= final.recorded_at
        assert stored_reports(data_dir) == {"s1": final}  # same key: replaced
        assert db_rows(data_dir, "SELECT snapshot_id FROM recorded") == []
    finally:
        restarted._store.close()


def test_delivered_progress_report_does_not_delete_the_final_one_that_replaced_it(
    runtime: NodeRuntime, data_dir: Path
):
    runtime.start_snapshot("s1")
    (progress,) = runtime.wait_reports(0)  # the reporter is sending it ...
    assert not progress.complete and list(progress.open_channels) == ["b", "c"]
    runtime.receive(wire.frame_for("b", "a", 1, Marker("s1")))  # ... b's marker renews it
    (renewed,) = runtime.wait_reports(0)
    assert not renewed.complete and list(renewed.open_channels) == ["c"]
    assert stored_reports(data_dir) == {"s1": renewed}
    assert runtime.report_delivered(progress) is False  # ... and then the first one is acked
    assert stored_reports(data_dir) == {"s1": renewed}
    runtime.receive(wire.frame_for("c", "a", 1, Marker("s1")))  # the snapshot finishes
    assert runtime.report_delivered(renewed) is False
    (final,) = runtime.wait_reports(0)
    assert final.complete and stored_reports(data_dir) == {"s1": final}
    assert runtime.report_delivered(final) is True
    assert runtime.wait_reports(0) == [] and stored_reports(data_dir) == {}
    assert runtime.report_delivered(final) is False  # acked twice: nothing left to delete


def test_snapshot_recorded_and_done_by_one_event_stores_only_the_final_report(tmp_path: Path):
    write_cluster(tmp_path / "ring.yaml", {"a": 100, "b": 100, "c": 100}, topology="ring")
    ring = load_cluster(tmp_path / "ring.yaml")
    store = Store(tmp_path / "a")
    try:
        runtime = NodeRuntime(ring, "a", store)
        (incoming,) = runtime.incoming
        runtime.receive(wire.frame_for(incoming, "a", 1, Marker("s1")))
        (report,) = runtime.wait_reports(0)
        assert report.complete and report.completed_at
        assert stored_reports(tmp_path / "a") == {"s1": report}
    finally:
        store.close()


def test_data_dir_of_another_node_is_refused(config: ClusterConfig, tmp_path: Path):
    store = Store(tmp_path / "x")
    NodeRuntime(config, "a", store)
    store.close()
    store = Store(tmp_path / "x")
    try:
        with pytest.raises(DataDirMismatch, match="belongs to node 'a', not 'b'"):
            NodeRuntime(config, "b", store)
    finally:
        store.close()


def test_data_dir_of_another_channel_set_is_refused(config: ClusterConfig, tmp_path: Path):
    store = Store(tmp_path / "a")
    NodeRuntime(config, "a", store)
    store.close()
    write_cluster(tmp_path / "ring.yaml", {"a": 100, "b": 100, "c": 100}, topology="ring")
    ring = load_cluster(tmp_path / "ring.yaml")
    store = Store(tmp_path / "a")
    try:
        with pytest.raises(DataDirMismatch, match="channels"):
            NodeRuntime(ring, "a", store)
    finally:
        store.close()


def test_data_dir_in_use_is_refused(runtime: NodeRuntime, data_dir: Path):
    with pytest.raises(DataDirLocked):
        Store(data_dir)
