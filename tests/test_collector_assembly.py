"""The pure assembly: events in, documents out, with the clock passed in."""

from __future__ import annotations

import dataclasses

import pytest

from collector.assembly import Assembly, InvalidReport, ReportOutcome, validate_report
from collector.document import NodeReport
from collector.testing import (
    as_progress,
    consistent_reports,
    small_cluster,
    with_balance,
)
from common.config import ClusterConfig
from node.core import LocalSnapshot, RecordedMessage
from tests.snapshot_check import cut_problems

T0 = 1_800_000_000.0


def problems(config: ClusterConfig, document: dict) -> list[str]:  # type: ignore[type-arg]
    """The tests' own check of the document (not collector/verify.py)."""
    return cut_problems(document, config.expected_total, config.node_ids, config.channels)


def test_complete_when_every_node_reported() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    assert assembly.begin("s1", ["n1"], T0)
    reports = consistent_reports(config, "s1")
    documents = []
    for i, node in enumerate(config.node_ids):
        outcome, document = assembly.add_report(reports[node], T0 + 0.1 * (i + 1))
        assert outcome is ReportOutcome.ACCEPTED
        documents.append(document)
    assert documents[:-1] == [None, None]
    document = documents[-1]
    assert document is not None
    assert document["status"] == "complete"
    assert document["missing"] == []
    assert document["initiators"] == ["n1"]
    assert document["duration_seconds"] == pytest.approx(0.3)
    assert document["verification"]["ok"] is True
    assert problems(config, document) == []
    assert assembly.is_finished("s1")
    assert assembly.progress("s1").status == "complete"  # type: ignore[union-attr]


def test_progress_lists_reported_and_missing() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    assert assembly.progress("s1") is None
    assembly.add_report(consistent_reports(config, "s1")["n2"], T0)
    progress = assembly.progress("s1")
    assert progress is not None
    assert (progress.status, progress.reported, progress.missing) == (
        "pending",
        ("n2",),
        ("n1", "n3"),
    )


def test_aborted_after_timeout_lists_missing_nodes() -> None:
    config = small_cluster(timeout=3.0)
    assembly = Assembly(config)
    assembly.begin("s1", ["n1"], T0)
    reports = consistent_reports(config, "s1")
    assembly.add_report(reports["n1"], T0 + 1)
    assert assembly.expire(T0 + 2.9) == []
    (document,) = assembly.expire(T0 + 3.0)
    assert document["status"] == "aborted"
    assert document["missing"] == ["n2", "n3"]
    assert list(document["nodes"]) == ["n1"]
    assert document["verification"]["ok"] is False
    assert "n2, n3" in document["verification"]["reason"]
    assert assembly.expire(T0 + 10) == []  # finished once only


def test_timeout_counts_from_first_report_when_never_begun() -> None:
    config = small_cluster(timeout=3.0)
    assembly = Assembly(config)
    assembly.add_report(consistent_reports(config, "s1")["n2"], T0 + 5)
    assert assembly.expire(T0 + 7.9) == []
    (document,) = assembly.expire(T0 + 8.0)
    assert document["missing"] == ["n1", "n3"]
    assert document["initiators"] == []


def test_timeout_counts_from_begin_even_without_reports() -> None:
    config = small_cluster(timeout=3.0)
    assembly = Assembly(config)
    assembly.begin("s1", ["n2"], T0)
    (document,) = assembly.expire(T0 + 3)
    assert document["missing"] == ["n1", "n2", "n3"]
    assert document["initiators"] == ["n2"]


def test_duplicate_report_is_idempotent() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    n1 = consistent_reports(config, "s1")["n1"]
    assert assembly.add_report(n1, T0) == (ReportOutcome.ACCEPTED, None)
    assert assembly.add_report(n1, T0 + 1) == (ReportOutcome.DUPLICATE, None)
    progress = assembly.progress("s1")
    assert progress is not None and progress.reported == ("n1",)


def test_conflicting_report_is_refused_and_not_applied() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    n1 = consistent_reports(config, "s1")["n1"]
    assembly.add_report(n1, T0)
    assert assembly.add_report(with_balance(n1, 1), T0 + 1) == (ReportOutcome.CONFLICT, None)
    assert assembly.pending("s1").reports["n1"].snapshot.balance == n1.snapshot.balance  # type: ignore[union-attr]


def test_late_report_after_abort_is_ignored() -> None:
    config = small_cluster(timeout=3.0)
    assembly = Assembly(config)
    assembly.begin("s1", ["n1"], T0)
    (aborted,) = assembly.expire(T0 + 3)
    late = consistent_reports(config, "s1")["n1"]
    assert assembly.add_report(late, T0 + 4) == (ReportOutcome.ALREADY_FINISHED, None)
    assert assembly.pending("s1") is None
    assert assembly.progress("s1").status == "aborted"  # type: ignore[union-attr]
    assert assembly.begin("s1", ["n1"], T0 + 5) is False


def test_reports_of_finished_snapshots_after_restart_are_ignored() -> None:
    config = small_cluster()
    assembly = Assembly(config, {"s1": "complete"})
    report = consistent_reports(config, "s1")["n1"]
    assert assembly.add_report(report, T0) == (ReportOutcome.ALREADY_FINISHED, None)


@pytest.mark.parametrize(
    "bad_id", ["", "../etc/passwd", "a/b", ".hidden", "x" * 65, "latest", "LATEST", "sp ace"]
)
def test_invalid_snapshot_id_rejected(bad_id: str) -> None:
    config = small_cluster()
    assembly = Assembly(config)
    with pytest.raises(InvalidReport):
        assembly.begin(bad_id, ["n1"], T0)
    report = consistent_reports(config, "s1")["n1"]
    snap = report.snapshot
    renamed = LocalSnapshot(
        bad_id, snap.node_id, snap.balance, snap.sent, snap.received, snap.channels, True
    )
    with pytest.raises(InvalidReport):
        validate_report(config, type(report)(renamed))


def test_begin_with_unknown_initiator_rejected() -> None:
    with pytest.raises(InvalidReport, match="unknown initiator node zz"):
        Assembly(small_cluster()).begin("s1", ["zz"], T0)


def _replace(report, **changes):  # type: ignore[no-untyped-def]
    snap = report.snapshot
    fields = {
        "snapshot_id": snap.snapshot_id,
        "node_id": snap.node_id,
        "balance": snap.balance,
        "sent": snap.sent,
        "received": snap.received,
        "channels": snap.channels,
        "initiated": snap.initiated,
    }
    fields.update(changes)
    return type(report)(LocalSnapshot(**fields))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"node_id": "n9"}, "unknown node 'n9'"),
        ({"balance": -1}, "negative balance"),
        ({"sent": {"n4": 1}}, "no channel n1 -> n4"),
        ({"received": {"n1": 1}}, "no channel n1 -> n1"),
        ({"channels": {"n2": ()}}, "missing the state of the channel from n3"),
        ({"channels": {"n2": (), "n3": (), "n7": ()}}, "no such incoming channel from n7"),
        (
            {"channels": {"n2": (RecordedMessage(1, 0),), "n3": ()}},
            "non-positive amount",
        ),
        (
            {"channels": {"n2": (RecordedMessage(2, 1), RecordedMessage(2, 1)), "n3": ()}},
            "not increasing",
        ),
    ],
)
def test_report_inconsistent_with_topology_rejected(changes: dict, message: str) -> None:  # type: ignore[type-arg]
    config = small_cluster()
    report = _replace(consistent_reports(config, "s1")["n1"], **changes)
    with pytest.raises(InvalidReport, match=message):
        validate_report(config, report)


def test_ring_topology_channels_checked() -> None:
    config = small_cluster(ids=("a", "b", "c", "d"), topology="ring")
    reports = consistent_reports(config, "r1")
    for report in reports.values():
        validate_report(config, report)
    bad = _replace(reports["b"], channels={"a": (), "c": ()})
    with pytest.raises(InvalidReport, match="no such incoming channel from c"):
        validate_report(config, bad)


def test_concurrent_snapshots_are_independent() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    first, second = consistent_reports(config, "s1"), consistent_reports(config, "s2", "n2")
    finished = []
    for node in config.node_ids:
        finished += [d for d in (assembly.add_report(second[node], T0)[1],) if d]
        finished += [d for d in (assembly.add_report(first[node], T0)[1],) if d]
    assert [d["snapshot_id"] for d in finished] == ["s2", "s1"]
    assert finished[0]["initiators"] == ["n2"]
    assert all(d["verification"]["ok"] for d in finished)


def test_wrong_cut_is_stored_as_failed_verification() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    reports = consistent_reports(config, "s1")
    reports["n3"] = with_balance(reports["n3"], 101)
    document = None
    for node in config.node_ids:
        document = assembly.add_report(reports[node], T0)[1]
    assert document is not None
    assert document["status"] == "complete"
    assert document["verification"]["ok"] is False
    assert problems(config, document) == ["recorded total 301 != initial total 300"]


# ------------------------------------------------------- progress reports


def test_progress_report_then_final_one_is_an_upgrade() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    reports = consistent_reports(config, "s1")
    early = as_progress(reports["n1"], ["n2", "n3"])
    assert assembly.add_report(early, T0) == (ReportOutcome.ACCEPTED, None)
    progress = assembly.progress("s1")
    assert progress is not None
    assert (progress.reported, progress.missing, progress.recorded) == (
        (),
        ("n1", "n2", "n3"),
        ("n1",),
    )
    assert assembly.add_report(reports["n1"], T0 + 1) == (ReportOutcome.ACCEPTED, None)
    assert assembly.pending("s1").reports["n1"].complete  # type: ignore[union-attr]
    progress = assembly.progress("s1")
    assert progress is not None
    assert (progress.reported, progress.missing, progress.recorded) == (("n1",), ("n2", "n3"), ())


def test_snapshot_completes_only_when_every_report_is_complete() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    reports = consistent_reports(config, "s1")
    for node in config.node_ids:
        others = [n for n in config.node_ids if n != node]
        assert assembly.add_report(as_progress(reports[node], others), T0)[1] is None
    assert assembly.add_report(reports["n1"], T0 + 1)[1] is None
    assert assembly.add_report(reports["n2"], T0 + 1)[1] is None
    outcome, document = assembly.add_report(reports["n3"], T0 + 1)
    assert outcome is ReportOutcome.ACCEPTED and document is not None
    assert document["status"] == "complete"
    assert document["missing"] == [] and document["waiting"] == {}
    assert all(state["complete"] for state in document["nodes"].values())
    assert document["verification"]["ok"] is True
    assert problems(config, document) == []


def test_repeated_progress_report_is_a_duplicate() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    early = as_progress(consistent_reports(config, "s1")["n1"], ["n2", "n3"])
    assembly.add_report(early, T0)
    retried = dataclasses.replace(early, recorded_at="2026-01-01T00:00:09.000+00:00")
    assert assembly.add_report(retried, T0 + 1) == (ReportOutcome.DUPLICATE, None)
    assert assembly.pending("s1").reports["n1"] == early  # type: ignore[union-attr]


def test_progress_report_with_fewer_open_channels_replaces_the_earlier_one() -> None:
    config = small_cluster(("n1", "n2", "n3", "n4"))
    assembly = Assembly(config)
    final = consistent_reports(config, "s1")["n1"]
    first = as_progress(final, ["n2", "n3", "n4"])
    renewed = as_progress(final, ["n3", "n4"])
    assembly.add_report(first, T0)
    assert assembly.add_report(renewed, T0 + 1) == (ReportOutcome.ACCEPTED, None)
    assert assembly.pending("s1").reports["n1"] == renewed  # type: ignore[union-attr]
    assert assembly.add_report(first, T0 + 2) == (ReportOutcome.DUPLICATE, None)  # older, late
    assert assembly.classify(as_progress(final, ["n2", "n3"])) is ReportOutcome.CONFLICT
    (document,) = assembly.expire(T0 + 10)
    assert document["waiting"] == {"n1": ["n3", "n4"]}


def test_progress_report_after_the_final_one_is_a_duplicate() -> None:
    config = small_cluster()
    assembly = Assembly(config)
    final = consistent_reports(config, "s1")["n1"]
    assembly.add_report(final, T0)
    stale = as_progress(final, ["n2"])
    assert assembly.add_report(stale, T0 + 1) == (ReportOutcome.DUPLICATE, None)
    assert assembly.pending("s1").reports["n1"] == final  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "change",
    [
        {"balance": 1},
        {"sent": {"n2": 7, "n3": 0}},
        {"received": {"n2": 0, "n3": 4}},
    ],
)
def test_final_report_contradicting_the_progress_report_is_a_conflict(change: dict) -> None:  # type: ignore[type-arg]
    config = small_cluster()
    assembly = Assembly(config)
    final = consistent_reports(config, "s1")["n1"]
    early = as_progress(final, ["n2", "n3"])
    assembly.add_report(early, T0)
    contradicting = dataclasses.replace(
        final, snapshot=dataclasses.replace(final.snapshot, **change)
    )
    assert assembly.add_report(contradicting, T0 + 1) == (ReportOutcome.CONFLICT, None)
    assert assembly.pending("s1").reports["n1"] == early  # type: ignore[union-attr]
    # ... and so is a progress report that contradicts an earlier one.
    other_early = as_progress(contradicting, ["n2", "n3"])
    assert assembly.classify(other_early) is ReportOutcome.CONFLICT


def test_aborted_document_names_who_never_recorded_and_who_waited() -> None:
    """Complete graph of 4, n4 down: the others recorded and wait for n4's marker."""
    config = small_cluster(("n1", "n2", "n3", "n4"), timeout=3.0)
    assembly = Assembly(config)
    assembly.begin("s1", ["n1"], T0)
    reports = consistent_reports(config, "s1")
    for node in ("n1", "n2", "n3"):
        assembly.add_report(as_progress(reports[node], ["n4"]), T0 + 0.1)
    (document,) = assembly.expire(T0 + 3)
    assert document["status"] == "aborted"
    assert document["missing"] == ["n4"]
    assert document["waiting"] == {"n1": ["n4"], "n2": ["n4"], "n3": ["n4"]}
    assert sorted(document["nodes"]) == ["n1", "n2", "n3"]
    assert [state["complete"] for state in document["nodes"].values()] == [False] * 3
    assert document["nodes"]["n1"]["balance"] == reports["n1"].snapshot.balance
    assert document["nodes"]["n1"]["completed_at"] == ""
    assert all(ch["messages"] is None for ch in document["channels"])
    assert document["verification"] == {
        "ok": False,
        "checked": False,
        "reason": "n4 never recorded its state; "
        "n1, n2, n3 were still waiting for markers (from n4)",
    }


def test_aborted_document_mixes_complete_waiting_and_missing_nodes() -> None:
    """Ring a -> b -> c -> d -> a, c down, started at a: b completes, a waits for d."""
    config = small_cluster(("a", "b", "c", "d"), topology="ring", timeout=3.0)
    assembly = Assembly(config)
    assembly.begin("r1", ["a"], T0)
    reports = consistent_reports(config, "r1", initiator="a")
    assembly.add_report(as_progress(reports["a"], ["d"]), T0 + 0.1)
    assembly.add_report(reports["b"], T0 + 0.2)
    (document,) = assembly.expire(T0 + 3)
    assert document["missing"] == ["c", "d"]
    assert document["waiting"] == {"a": ["d"]}
    assert {n: s["complete"] for n, s in document["nodes"].items()} == {"a": False, "b": True}
    messages = {(ch["from"], ch["to"]): ch["messages"] for ch in document["channels"]}
    assert messages == {
        ("a", "b"): [{"seq": 2, "amount": 10}],
        ("b", "c"): None,
        ("c", "d"): None,
        ("d", "a"): None,
    }
    assert document["verification"]["reason"] == (
        "c, d never recorded their state; a was still waiting for a marker (from d)"
    )


@pytest.mark.parametrize(
    ("complete", "open_channels", "message"),
    [
        (True, ("n2",), "complete report cannot have open channels"),
        (False, (), "must name its open channels"),
        (False, ("n9",), "no such channel"),
        (False, ("n2", "n2"), "named twice"),
    ],
)
def test_inconsistent_progress_fields_rejected(
    complete: bool, open_channels: tuple[str, ...], message: str
) -> None:
    config = small_cluster()
    report = consistent_reports(config, "s1")["n1"]
    bad = NodeReport(report.snapshot, complete=complete, open_channels=open_channels)
    with pytest.raises(InvalidReport, match=message):
        validate_report(config, bad)


def test_would_finish_says_exactly_which_report_finishes_the_snapshot() -> None:
    # The collector does not log the last report (its document is written
    # instead): `would_finish` must agree with `add_report` on every report.
    config = small_cluster()
    assembly = Assembly(config)
    assert assembly.begin("s1", ["n1"], T0)
    reports = consistent_reports(config, "s1")
    sequence = [
        as_progress(reports["n1"], ["n2", "n3"]),
        reports["n1"],
        reports["n1"],  # a retry
        as_progress(reports["n2"], ["n3"]),
        as_progress(reports["n3"], ["n1"]),
        reports["n2"],
        as_progress(reports["n3"], ["n1"]),  # a retry of a progress report
        reports["n3"],  # the last one
        reports["n3"],  # after the end
    ]
    finished = []
    for index, report in enumerate(sequence):
        predicted = assembly.would_finish(report)
        _, document = assembly.add_report(report, T0 + index)
        assert predicted == (document is not None), index
        finished.append(predicted)
    assert finished == [False] * 7 + [True, False]
