"""Atomic files of the snapshot directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from collector.assembly import Assembly, InvalidReport, PendingSnapshot
from collector.store import SnapshotStore, document_text
from collector.testing import as_progress, consistent_reports, small_cluster
from common import files as files_module
from common.files import atomic_write_json

T0 = 1_800_000_000.0


def test_a_document_file_has_one_line_per_node_channel_and_check(tmp_path: Path) -> None:
    config = small_cluster()
    assembly = Assembly(config, require_begin=False)
    reports = consistent_reports(config, "s1")
    finished = [assembly.add_report(r, T0)[1] for r in reports.values()]
    complete = finished[-1]
    assert complete is not None and complete["status"] == "complete"
    assembly.add_report(as_progress(consistent_reports(config, "s2")["n1"], ["n2", "n3"]), T0)
    (aborted,) = assembly.expire(T0 + config.snapshot_timeout)
    for document in (complete, aborted):
        text = document_text(document)
        assert json.loads(text) == document
        assert text.endswith("}\n")
    lines = document_text(complete).splitlines()
    for node in config.node_ids:
        (line,) = [line for line in lines if line.startswith(f'    "{node}": ')]
        assert json.loads(line.split(": ", 1)[1].rstrip(",")) == complete["nodes"][node]
    for key in ("channels", "verification"):
        channels = complete[key] if key == "channels" else complete[key]["channels"]
        for channel in channels:
            assert any(line.strip().rstrip(",") == json.dumps(channel) for line in lines)


def test_atomic_write_json_writes_indented_json(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"b": 1, "a": [1, 2]}
    assert '\n  "b": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_crash_between_temp_write_and_rename_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"version": 1})

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(files_module.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_temp_files_left_by_a_killed_process_are_ignored_and_removed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    config = small_cluster()
    document = _finished_document(config, "s1")
    store.write_document(document)
    # A process killed after writing the temp file but before the rename leaves this:
    (tmp_path / ".tmp-abc.json").write_text('{"snapshot_id": "s1", "status": "trunc')
    (tmp_path / ".pending" / ".tmp-x.jsonl").write_text("{")
    reopened = SnapshotStore(tmp_path)
    assert json.loads(reopened.read_text("s1") or "") == document
    assert not list(tmp_path.glob(".tmp-*"))
    assert not list((tmp_path / ".pending").glob(".tmp-*"))
    assert [s.snapshot_id for s in reopened.finished()] == ["s1"]


def _finished_document(config, snapshot_id: str, now: float = T0):  # type: ignore[no-untyped-def]
    assembly = Assembly(config)
    document = None
    for report in consistent_reports(config, snapshot_id).values():
        document = assembly.add_report(report, now)[1]
    assert document is not None
    return document


def test_write_document_updates_latest_and_lists_oldest_first(tmp_path: Path) -> None:
    config = small_cluster()
    store = SnapshotStore(tmp_path)
    assert store.read_text("latest") is None
    first = _finished_document(config, "s-b", T0)
    second = _finished_document(config, "s-a", T0 + 1)
    store.write_document(first)
    assert json.loads(store.read_text("latest") or "") == first
    store.write_document(second)
    assert json.loads(store.read_text("latest") or "") == second
    assert json.loads((tmp_path / "s-b.json").read_text()) == first
    assert [s.snapshot_id for s in store.finished()] == ["s-b", "s-a"]
    assert store.read_text("unknown") is None


def test_unsafe_ids_never_reach_the_file_system(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    for bad in ("../x", "latest", "/etc/passwd"):
        with pytest.raises(InvalidReport):
            store.path(bad)
        with pytest.raises(InvalidReport):
            store.save_pending(PendingSnapshot(bad, T0))
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".pending", "snaps"]


def test_pending_reports_round_trip_through_the_log(tmp_path: Path) -> None:
    config = small_cluster()
    store = SnapshotStore(tmp_path)
    reports = consistent_reports(config, "s1")
    pending = PendingSnapshot("s1", T0, {"n1"})
    store.save_pending(pending)
    store.save_report(reports["n1"])
    store.save_report(reports["n2"])
    store.save_pending(PendingSnapshot("s1", T0 + 5, {"n2"}))  # a second initiator
    (loaded,) = SnapshotStore(tmp_path).load_pending()
    assert loaded.snapshot_id == "s1"
    assert loaded.started == T0  # the first begin counts
    assert loaded.initiators == {"n1", "n2"}
    assert loaded.reports == {"n1": reports["n1"], "n2": reports["n2"]}
    store.compact([])  # nothing pending any more
    assert SnapshotStore(tmp_path).load_pending() == []


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    config = small_cluster()
    store = SnapshotStore(tmp_path)
    reports = consistent_reports(config, "s1")
    store.save_pending(PendingSnapshot("s1", T0, {"n1"}))
    store.save_report(reports["n1"])
    with open(tmp_path / ".pending" / "log.jsonl", "ab") as log:
        log.write(b'{"report": {"snapshot_id": "s1", "node_id": "n2", "bal')  # killed mid-write
    (loaded,) = SnapshotStore(tmp_path).load_pending()
    assert loaded.reports == {"n1": reports["n1"]}


def test_reports_of_a_snapshot_without_a_begin_line_are_ignored(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save_report(consistent_reports(small_cluster(), "s1")["n1"])
    assert store.load_pending() == []


def test_compaction_keeps_only_pending_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_cluster()
    store = SnapshotStore(tmp_path)
    done, open_ = consistent_reports(config, "done"), consistent_reports(config, "open")
    store.save_pending(PendingSnapshot("done", T0, {"n1"}))
    for report in done.values():
        store.save_report(report)
    keep = PendingSnapshot("open", T0, {"n2"}, {"n1": open_["n1"]})
    store.save_pending(keep)
    store.save_report(open_["n1"])
    store.compact([keep])  # small: left alone
    assert {p.snapshot_id for p in SnapshotStore(tmp_path).load_pending()} == {"done", "open"}
    monkeypatch.setattr("collector.store.COMPACT_BYTES", 10)
    store.compact([keep])
    (loaded,) = SnapshotStore(tmp_path).load_pending()
    assert (loaded.snapshot_id, loaded.initiators, loaded.reports) == (
        "open",
        {"n2"},
        {"n1": open_["n1"]},
    )


def test_progress_report_is_replaced_by_the_final_one(tmp_path: Path) -> None:
    config = small_cluster()
    store = SnapshotStore(tmp_path)
    reports = consistent_reports(config, "s1")
    store.save_pending(PendingSnapshot("s1", T0, {"n1"}))
    early = as_progress(reports["n1"], ["n2", "n3"])
    store.save_report(early)
    (loaded,) = SnapshotStore(tmp_path).load_pending()
    assert loaded.reports == {"n1": early}
    assert (loaded.reports["n1"].complete, loaded.reports["n1"].open_channels) == (
        False,
        ("n2", "n3"),
    )
    store.save_report(reports["n1"])
    (loaded,) = SnapshotStore(tmp_path).load_pending()
    assert loaded.reports == {"n1": reports["n1"]}


def test_directory_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(files_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_write_json(tmp_path / "x.json", {})
    assert len(synced) == 2  # the file, then the directory


def test_snapshot_files_are_readable_by_other_users(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "s.json", {"a": 1})
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o644
