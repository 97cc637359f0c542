"""Durable node state: atomic transactions, and a restart reproduces the state."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import ClusterConfig, load_cluster
from node import wire
from node.core import InsufficientFunds, Marker, RecordedMessage, Transfer
from node.runtime import (
    NodeRuntime,
    ReceiveFrame,
    SendTransfer,
    SequenceGap,
    StartSnapshot,
)
from node.storage import (
    DB_NAME,
    Change,
    DataDirLocked,
    DataDirMismatch,
    StorageError,
    Store,
)
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
    frames_before = {p: runtime.frames_after(p, 0) for p in ("b", "c")}

    restarted = reopen(config, data_dir, runtime)
    try:
        assert restarted._core.to_dict() == before
        assert restarted.status().active_snapshots == ["snap-1"]
        # The acked frame may come back (the receiver drops it); nothing else differs.
        frames_after = {p: restarted.frames_after(p, 0) for p in ("b", "c")}
        assert frames_after["c"] == frames_before["c"]
        assert frames_after["b"][-len(frames_before["b"]) :] == frames_before["b"]
        # The snapshot completes after the restart, with its recorded_at kept.
        restarted.receive(wire.frame_for("b", "a", 2, Marker("snap-1")))
        restarted.receive(wire.frame_for("c", "a", 2, Marker("snap-1")))
        (report,) = restarted.reports()
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
    assert [r.snapshot_id for r in runtime.reports()] == ["s1"]
    restarted = reopen(config, data_dir, runtime)
    try:
        (report,) = restarted.reports()
        assert report.snapshot_id == "s1" and report.complete
        assert restarted.report_delivered(report) is True
        assert restarted.reports() == []
    finally:
        restarted._store.close()
    assert db_rows(data_dir, "SELECT * FROM reports") == []


def stored_reports(data_dir: Path) -> dict[str, pb.LocalSnapshot]:
    rows = db_rows(data_dir, "SELECT snapshot_id, report FROM reports")
    return {str(sid): pb.LocalSnapshot.FromString(bytes(raw)) for sid, raw in rows}  # type: ignore[arg-type]


def test_progress_report_is_built_from_the_committed_recording_and_never_stored(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.send_transfer("b", 10)
    runtime.receive(wire.frame_for("b", "a", 1, Marker("s1")))  # records; c still open

    assert runtime.reports() == []  # no final report yet, and progress is not queued
    (progress,) = runtime.progress_reports()
    assert not progress.complete and list(progress.open_channels) == ["c"]
    assert (progress.balance, dict(progress.sent)) == (90, {"b": 1, "c": 0})
    assert [(ch.sender, list(ch.messages)) for ch in progress.channels] == [("b", []), ("c", [])]
    assert progress.recorded_at and progress.completed_at == ""
    assert runtime.progress_reports(older_than=3600) == []  # only after a while
    assert stored_reports(data_dir) == {}
    assert db_rows(data_dir, "SELECT snapshot_id FROM recorded") == [("s1",)]

    runtime.receive(transfer_frame("c", 1, 1, 7))  # recorded on c -> a
    restarted = reopen(config, data_dir, runtime)  # the recording survives a crash ...
    try:
        (again,) = restarted.progress_reports()  # ... and so does what progress says
        assert (again.balance, again.recorded_at) == (progress.balance, progress.recorded_at)
        assert [list(ch.messages) for ch in again.channels] == [
            [],
            [pb.RecordedMessage(transfer_seq=1, amount=7)],
        ]
        restarted.receive(wire.frame_for("c", "a", 2, Marker("s1")))
        assert restarted.progress_reports() == []
        (final,) = restarted.reports()
        assert final.complete and list(final.open_channels) == []
        assert (final.balance, final.recorded_at) == (progress.balance, progress.recorded_at)
        assert final.completed_at >= final.recorded_at
        assert stored_reports(data_dir) == {"s1": final}
        assert db_rows(data_dir, "SELECT snapshot_id FROM recorded") == []
    finally:
        restarted._store.close()


def test_delivering_a_report_that_is_not_the_stored_one_deletes_nothing(
    runtime: NodeRuntime, data_dir: Path
):
    runtime.start_snapshot("s1")
    (progress,) = runtime.progress_reports()
    assert runtime.report_delivered(progress) is False  # progress is never stored
    runtime.receive(wire.frame_for("b", "a", 1, Marker("s1")))
    runtime.receive(wire.frame_for("c", "a", 1, Marker("s1")))  # the snapshot finishes
    (final,) = runtime.reports()
    assert final.complete and stored_reports(data_dir) == {"s1": final}
    assert runtime.report_delivered(final) is True
    assert runtime.reports() == [] and stored_reports(data_dir) == {}
    assert runtime.report_delivered(final) is False  # acked twice: nothing left to delete


def test_a_report_delivered_lazily_is_deleted_with_the_next_transaction(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.start_snapshot("s1")
    runtime.receive(wire.frame_for("b", "a", 1, Marker("s1")))
    runtime.receive(wire.frame_for("c", "a", 1, Marker("s1")))
    (final,) = runtime.reports()
    batches = runtime.stats.batches

    assert runtime.report_delivered_lazily(final) is True
    assert runtime.report_delivered_lazily(final) is False  # already forgotten
    assert runtime.reports() == [] and runtime.stats.batches == batches  # no commit of its own
    assert stored_reports(data_dir) == {"s1": final}  # the row waits for the next one

    # Killed now: the report comes back and is sent again (the collector dedups).
    restarted = reopen(config, data_dir, runtime)
    try:
        assert restarted.reports() == [final]
        assert restarted.report_delivered_lazily(final) is True
        restarted.send_transfer("b", 1)  # any transaction carries the deletion
        assert stored_reports(data_dir) == {}
        assert restarted.reports() == []
    finally:
        restarted._store.close()


def test_progress_report_left_by_an_older_version_is_dropped(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.start_snapshot("s1")
    (progress,) = runtime.progress_reports()
    runtime._store.close()
    with sqlite3.connect(data_dir / DB_NAME) as db:
        db.execute("INSERT INTO reports VALUES ('s1', ?)", (progress.SerializeToString(),))
    restarted = NodeRuntime(config, "a", Store(data_dir))
    try:
        assert restarted.reports() == []  # not sent as if it were final
        restarted.send_transfer("b", 1)  # the next commit deletes it
        assert stored_reports(data_dir) == {}
    finally:
        restarted._store.close()


def test_snapshot_recorded_and_done_by_one_event_stores_only_the_final_report(tmp_path: Path):
    write_cluster(tmp_path / "ring.yaml", {"a": 100, "b": 100, "c": 100}, topology="ring")
    ring = load_cluster(tmp_path / "ring.yaml")
    store = Store(tmp_path / "a")
    try:
        runtime = NodeRuntime(ring, "a", store)
        (incoming,) = runtime.incoming
        runtime.receive(wire.frame_for(incoming, "a", 1, Marker("s1")))
        (report,) = runtime.reports()
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


# ------------------------------------------------- recorded in-flight messages


def marker_frame(sender: str, seq: int, snapshot_id: str) -> pb.Frame:
    return wire.frame_for(sender, "a", seq, Marker(snapshot_id))


# Two overlapping snapshots at a (peers b, c). s1 records b -> a and c -> a;
# s2 starts from c's marker and records b -> a only.
WORKLOAD: list[tuple[str, object]] = [
    ("send", ("b", 10)),
    ("frame", transfer_frame("c", 1, 1, 5)),  # before any cut
    ("start", "s1"),
    ("frame", transfer_frame("b", 1, 1, 7)),  # s1 on b
    ("frame", transfer_frame("c", 2, 2, 3)),  # s1 on c
    ("frame", transfer_frame("b", 2, 2, 2)),  # s1 on b
    ("frame", marker_frame("c", 3, "s2")),  # s2 recorded, its c closed
    ("frame", transfer_frame("b", 3, 3, 4)),  # s1 and s2 on b
    ("frame", marker_frame("c", 4, "s1")),  # s1: c closed
    ("send", ("c", 1)),
    ("frame", transfer_frame("b", 4, 4, 1)),  # s1 and s2 on b
    ("frame", marker_frame("b", 5, "s1")),  # s1 done
    ("frame", transfer_frame("b", 6, 5, 6)),  # s2 on b
    ("frame", marker_frame("b", 7, "s2")),  # s2 done
]
S1_DONE = 12  # steps after which s1 is done and s2 is not


def step(runtime: NodeRuntime, kind: str, arg: object) -> None:
    if kind == "send":
        peer, amount = arg  # type: ignore[misc]
        runtime.send_transfer(peer, amount)
    elif kind == "start":
        runtime.start_snapshot(arg)  # type: ignore[arg-type]
    else:
        runtime.receive(arg)  # type: ignore[arg-type]


def without_times(report: pb.LocalSnapshot) -> pb.LocalSnapshot:
    copy = pb.LocalSnapshot()
    copy.CopyFrom(report)
    copy.ClearField("recorded_at")
    copy.ClearField("completed_at")
    # The timeline window lives in memory: a restart mid-snapshot shortens it
    # (lamport_recorded is durable and stays compared).
    copy.ClearField("timeline")
    return copy


def run_workload(
    config: ClusterConfig, data_dir: Path, restart_after: set[int]
) -> dict[str, pb.LocalSnapshot]:
    """Run WORKLOAD at node a, SIGKILL-style restarts after the given steps;
    returns the final reports, without their times."""
    runtime = NodeRuntime(config, "a", Store(data_dir))
    try:
        for index, (kind, arg) in enumerate(WORKLOAD, start=1):
            step(runtime, kind, arg)
            if index in restart_after:
                runtime = reopen(config, data_dir, runtime)
        reports = {r.snapshot_id: without_times(r) for r in runtime.reports()}
        assert all(r.complete for r in reports.values())
        return reports
    finally:
        runtime._store.close()


def recorded_rows(data_dir: Path) -> list[tuple[object, ...]]:
    return db_rows(
        data_dir,
        "SELECT snapshot_id, sender, transfer_seq, amount FROM recorded_messages "
        "ORDER BY snapshot_id, sender, transfer_seq",
    )


def test_workload_records_what_a_consistent_cut_needs(config: ClusterConfig, tmp_path: Path):
    reports = run_workload(config, tmp_path / "a", restart_after=set())
    channels = {
        sid: {ch.sender: [(m.transfer_seq, m.amount) for m in ch.messages] for ch in r.channels}
        for sid, r in reports.items()
    }
    assert channels == {
        "s1": {"b": [(1, 7), (2, 2), (3, 4), (4, 1)], "c": [(2, 3)]},
        "s2": {"b": [(3, 4), (4, 1), (5, 6)], "c": []},
    }
    assert (reports["s1"].balance, reports["s2"].balance) == (95, 107)
    assert recorded_rows(tmp_path / "a") == []  # both finished: no rows left


@pytest.mark.parametrize("restart_after", range(1, len(WORKLOAD)))
def test_restart_mid_snapshot_gives_exactly_the_same_channel_states(
    config: ClusterConfig, tmp_path: Path, restart_after: int
):
    reference = run_workload(config, tmp_path / "reference", restart_after=set())
    restarted = run_workload(config, tmp_path / "a", restart_after={restart_after})
    assert restarted == reference


def test_restart_after_every_event_gives_the_same_snapshots(config: ClusterConfig, tmp_path: Path):
    reference = run_workload(config, tmp_path / "reference", restart_after=set())
    every = set(range(1, len(WORKLOAD) + 1))
    assert run_workload(config, tmp_path / "a", restart_after=every) == reference


def test_recorded_message_is_one_row_committed_with_its_receive_not_in_the_core_json(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    for kind, arg in WORKLOAD[:8]:
        step(runtime, kind, arg)
    assert recorded_rows(data_dir) == [
        ("s1", "b", 1, 7),
        ("s1", "b", 2, 2),
        ("s1", "b", 3, 4),
        ("s1", "c", 2, 3),
        ("s2", "b", 3, 4),
    ]
    core = json.loads(db_rows(data_dir, "SELECT value FROM meta WHERE key = 'core'")[0][0])
    assert core["recordings"]["s1"]["recorded_counts"] == {"b": 3, "c": 1}
    assert core["recordings"]["s2"]["recorded_counts"] == {"b": 1, "c": 0}
    assert "channels" not in core["recordings"]["s1"]
    assert db_rows(data_dir, "SELECT last_applied FROM incoming WHERE peer = 'b'") == [(3,)]


def test_rows_of_a_snapshot_go_in_the_transaction_that_stores_its_final_report(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    for kind, arg in WORKLOAD[: S1_DONE - 1]:
        step(runtime, kind, arg)
    assert {row[0] for row in recorded_rows(data_dir)} == {"s1", "s2"}
    step(runtime, *WORKLOAD[S1_DONE - 1])  # b's marker finishes s1
    assert recorded_rows(data_dir) == [("s2", "b", 3, 4), ("s2", "b", 4, 1)]
    final = stored_reports(data_dir)["s1"]
    assert final.complete
    assert [(m.transfer_seq, m.amount) for m in final.channels[0].messages] == [
        (1, 7),
        (2, 2),
        (3, 4),
        (4, 1),
    ]


def test_failed_commit_of_a_recording_receive_restores_the_recorded_messages(
    runtime: NodeRuntime, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    runtime.start_snapshot("s1")
    runtime.receive(transfer_frame("b", 1, 1, 7))
    store = runtime._store

    def failing_commit(change: Change) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "commit", failing_commit)
    with pytest.raises(sqlite3.OperationalError):
        runtime.receive(transfer_frame("b", 2, 2, 5))
    monkeypatch.undo()
    assert runtime.status().balance == 107  # the credit was rolled back
    progress = runtime._core.progress("s1")
    assert progress is not None
    assert progress[0].channels["b"] == (RecordedMessage(1, 7),)  # kept, from disk
    assert recorded_rows(data_dir) == [("s1", "b", 1, 7)]
    runtime.receive(transfer_frame("b", 2, 2, 5))  # the sender resends it
    runtime.receive(marker_frame("b", 3, "s1"))
    runtime.receive(marker_frame("c", 1, "s1"))
    (final,) = runtime.reports()
    assert final.complete
    assert [(m.transfer_seq, m.amount) for m in final.channels[0].messages] == [(1, 7), (2, 5)]


def test_lost_recorded_message_row_is_refused_at_start(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path
):
    runtime.start_snapshot("s1")
    runtime.receive(transfer_frame("b", 1, 1, 7))
    runtime.receive(transfer_frame("b", 2, 2, 5))
    runtime._store.close()
    with sqlite3.connect(data_dir / DB_NAME) as db:
        db.execute("DELETE FROM recorded_messages WHERE transfer_seq = 2")
    store = Store(data_dir)
    try:
        with pytest.raises(StorageError, match=r"recorded on b->a transfers 1\.\.2, but the"):
            NodeRuntime(config, "a", store)
    finally:
        store.close()


def test_finished_ids_are_rows_kept_across_restarts_and_bounded(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("node.storage.FINISHED_MEMORY", 2)
    for index, sid in enumerate(("s1", "s2", "s3"), start=1):
        runtime.start_snapshot(sid)
        for peer in ("b", "c"):
            runtime.receive(wire.frame_for(peer, "a", index, Marker(sid)))
    assert "finished" not in json.loads(
        db_rows(data_dir, "SELECT value FROM meta WHERE key = 'core'")[0][0]
    )  # type: ignore[arg-type]
    assert db_rows(data_dir, "SELECT snapshot_id FROM finished ORDER BY rowid") == [
        ("s2",),
        ("s3",),
    ]
    restarted = reopen(config, data_dir, runtime)
    try:
        # a late initiator of a finished snapshot does not start it again
        assert restarted.start_snapshot("s3") is True
        assert restarted.status().active_snapshots == []
    finally:
        restarted._store.close()


def test_event_failing_after_the_core_moved_is_undone_and_its_batch_goes_on(
    config: ClusterConfig, runtime: NodeRuntime, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    runtime.start_snapshot("s1")
    real = wire.snapshot_report

    def failing(snapshot, *args):  # type: ignore[no-untyped-def]
        if snapshot.snapshot_id == "s1":
            raise ValueError("cannot encode the report")
        return real(snapshot, *args)

    monkeypatch.setattr(wire, "snapshot_report", failing)
    results = runtime.apply(
        [
            ReceiveFrame(transfer_frame("b", 1, 1, 5)),
            ReceiveFrame(marker_frame("b", 2, "s1")),
            ReceiveFrame(marker_frame("c", 1, "s1")),  # would finish s1: fails after the core
            SendTransfer("b", 3),
        ]
    )
    monkeypatch.undo()
    assert results[:2] == [1, 2] and results[3] is None
    assert isinstance(results[2], ValueError)
    # Memory: everything but the failed event; s1 still waits for c's marker.
    assert runtime.balance == 102 and runtime.active_snapshots == ("s1",)
    assert runtime.last_applied("c") == 0 and runtime.reports() == []
    # Disk: the same.
    restarted = reopen(config, data_dir, runtime)
    try:
        assert restarted.balance == 102 and restarted.active_snapshots == ("s1",)
        assert restarted.last_applied("b") == 2 and restarted.last_applied("c") == 0
        assert restarted.receive(marker_frame("c", 1, "s1")) == 1  # the sender resends it
        (final,) = restarted.reports()
        assert final.complete and [list(ch.messages) for ch in final.channels] == [
            [pb.RecordedMessage(transfer_seq=1, amount=5)],
            [],
        ]
    finally:
        restarted._store.close()


def test_a_batch_is_one_transaction_and_refused_events_change_nothing(
    runtime: NodeRuntime, data_dir: Path
):
    results = runtime.apply(
        [
            ReceiveFrame(transfer_frame("b", 1, 1, 5)),
            ReceiveFrame(transfer_frame("b", 3, 3, 5)),  # a gap: refused
            SendTransfer("c", 1000),  # more than the balance: refused
            ReceiveFrame(transfer_frame("c", 1, 1, 7)),
            ReceiveFrame(transfer_frame("b", 1, 1, 5)),  # a duplicate: not applied again
        ]
    )
    assert results[0] == 1 and results[3] == 1 and results[4] == 1
    assert isinstance(results[1], SequenceGap) and "missing" in str(results[1])
    assert isinstance(results[2], InsufficientFunds)
    assert runtime.balance == 112 and runtime.stats.batches == 1
    assert db_rows(data_dir, "SELECT peer, last_applied FROM incoming ORDER BY peer") == [
        ("b", 1),
        ("c", 1),
    ]


def test_failed_commit_of_a_batch_fails_every_event_and_changes_nothing(
    runtime: NodeRuntime, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    runtime.send_transfer("b", 10)

    def failing_commit(change: Change) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(runtime._store, "commit", failing_commit)
    with pytest.raises(sqlite3.OperationalError):
        runtime.apply([ReceiveFrame(transfer_frame("c", 1, 1, 7)), StartSnapshot("s1")])
    monkeypatch.undo()
    assert runtime.balance == 90 and runtime.active_snapshots == ()
    assert runtime.last_applied("c") == 0 and runtime.frames_after("c", 0) == []
    assert runtime.apply([ReceiveFrame(transfer_frame("c", 1, 1, 7))]) == [1]  # resent: applies
