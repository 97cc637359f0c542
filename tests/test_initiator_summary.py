"""The initiator's text output: pure functions of the snapshot document."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.assembly import Assembly
from collector.testing import as_progress, consistent_reports, small_cluster, with_balance
from common.timeutil import new_snapshot_id
from initiator.client import validated_id
from initiator.summary import Queued, exit_code, format_progress, format_queued, format_summary

T0 = 1_800_000_000.0


def _document(broken: bool = False, abort: bool = False):  # type: ignore[no-untyped-def]
    config = small_cluster(timeout=2.0)
    assembly = Assembly(config)
    assembly.begin("snap-1", ["n1"], T0)
    reports = consistent_reports(config, "snap-1")
    if broken:
        reports["n3"] = with_balance(reports["n3"], 90)
    if abort:
        assembly.add_report(reports["n1"], T0 + 0.5)
        return assembly.expire(T0 + 2)[0]
    document = None
    for node in config.node_ids:
        document = assembly.add_report(reports[node], T0 + 0.25)[1]
    return document


def test_summary_of_a_complete_snapshot() -> None:
    text = format_summary(_document())
    assert text.splitlines() == [
        "snapshot snap-1: COMPLETE (initiated by n1)",
        "  started 2027-01-15T08:00:00.000+00:00, finished 2027-01-15T08:00:00.250+00:00,"
        " took 0.250s",
        "  balances: n1=85  n2=105  n3=100",
        "  in flight: 1 message, amount 10 (n1->n2: 1)",
        "  conservation: OK: balances 290 + in flight 10 = 300, expected 300",
        "  channels: OK (6 checked: recorded == sent - received)",
        "  verification: PASSED",
    ]
    assert exit_code(_document()) == 0


def test_summary_of_a_failed_verification() -> None:
    document = _document(broken=True)
    text = format_summary(document)
    assert "conservation: FAILED: balances 280 + in flight 10 = 290, expected 300" in text
    assert "verification: FAILED" in text
    assert exit_code(document) == 4


def test_summary_of_an_aborted_snapshot_names_missing_nodes() -> None:
    document = _document(abort=True)
    text = format_summary(document)
    assert text.splitlines()[0] == "snapshot snap-1: ABORTED (initiated by n1)"
    assert "  missing: n2, n3 (never recorded their state)" in text
    assert "waiting" not in text
    assert "  balances: n1=85" in text
    assert "verification: not checked (n2, n3 never recorded their state)" in text
    assert exit_code(document) == 3


def test_summary_of_an_aborted_snapshot_names_who_waited_for_whom() -> None:
    config = small_cluster(("n1", "n2", "n3", "n4"), timeout=2.0)
    assembly = Assembly(config)
    assembly.begin("snap-1", ["n1"], T0)
    reports = consistent_reports(config, "snap-1")
    for node in ("n1", "n2", "n3"):
        assembly.add_report(as_progress(reports[node], ["n4"]), T0 + 0.1)
    document = assembly.expire(T0 + 2)[0]
    lines = format_summary(document).splitlines()
    assert lines[2:4] == [
        "  missing: n4 (never recorded its state)",
        "  still waiting for markers: n1, n2, n3 from n4",
    ]
    assert lines[-1] == (
        "  verification: not checked (n4 never recorded its state; "
        "n1, n2, n3 were still waiting for markers (from n4))"
    )
    assert exit_code(document) == 3


def test_channel_failures_are_listed() -> None:
    document = _document()
    document["verification"]["ok"] = False
    document["verification"]["channels"][0].update(ok=False, problem="recorded 0 messages")
    text = format_summary(document)
    assert "channels: FAILED on 1 of 6" in text
    assert "    n1->n2: recorded 0 messages" in text


def test_progress_line() -> None:
    assert (
        format_progress("snap-1", ["n1", "n2", "n3"], ["n4", "n5"], 2.04)
        == "waiting for snap-1: 3/5 complete (missing: n4, n5) 2.0s"
    )
    assert format_progress("s", ["a"], [], 0) == "waiting for s: 1/1 complete 0.0s"


def test_progress_line_uses_the_summarys_words_for_a_down_node() -> None:
    """n3 down: the others recorded and wait for its marker. The progress line
    said '0/5 reported (missing n1, ..., n5)' while the summary said 'missing: n3'."""
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    others = ["n1", "n2", "n4", "n5"]
    line = format_progress("s", [], nodes, 3.0, recorded=others)
    assert line == (
        "waiting for s: 0/5 complete (waiting for markers: n1, n2, n4, n5; missing: n3) 3.0s"
    )
    document = _document()
    document.update(
        status="aborted",
        missing=["n3"],
        waiting={n: ["n3"] for n in others},
        channels=[{**ch, "messages": None} for ch in document["channels"]],
    )
    text = format_summary(document)
    assert "  missing: n3 (never recorded its state)" in text
    assert "  still waiting for markers: n1, n2, n4, n5 from n3" in text
    assert "in flight: 0 messages, amount 0; 6 of 6 channels not recorded" in text


def test_queued_lines() -> None:
    queued = [Queued("n1", "n3", 3, 40), Queued("n2", "n3", 1, 0)]
    assert format_queued(queued, ["n3", "n5"]) == [
        "  unreachable now: n3; queued toward it: amount 40 in 4 unacknowledged frames "
        "(n1->n3: 40, n2->n3: 0), resent when it is back",
        "  unreachable now: n5 (nothing queued toward it)",
    ]


def test_generated_ids_are_valid() -> None:
    now = datetime(2026, 11, 21, 5, 1, 8, tzinfo=UTC)
    assert new_snapshot_id(now, "a1b2c3") == "snap-20261121T050108Z-a1b2c3"
    generated = new_snapshot_id()
    assert validated_id(generated) == generated
    assert len(generated) == len("snap-20261121T050108Z-a1b2c3")
