"""The tests' own snapshot check (tests/snapshot_check.py) finds what it claims to find."""

from __future__ import annotations

from typing import Any

import pytest

from collector.assembly import Assembly
from collector.testing import consistent_reports, small_cluster
from tests.snapshot_check import assert_verified_snapshot, cut_problems

CONFIG = small_cluster()


def document() -> dict[str, Any]:
    """A complete, sound document: n1 -> n2 carries transfer 2 (amount 10) in flight."""
    assembly = Assembly(CONFIG)
    found = None
    for report in consistent_reports(CONFIG, "s1").values():
        found = assembly.add_report(report, 0.0)[1]
    assert found is not None
    return found


def problems(doc: dict[str, Any]) -> list[str]:
    return cut_problems(doc, CONFIG.expected_total, CONFIG.node_ids, CONFIG.channels)


def in_flight(doc: dict[str, Any]) -> list[dict[str, int]]:
    (channel,) = [c for c in doc["channels"] if (c["from"], c["to"]) == ("n1", "n2")]
    return channel["messages"]  # type: ignore[no-any-return]


def test_a_sound_document_has_no_problems() -> None:
    doc = document()
    assert in_flight(doc) == [{"seq": 2, "amount": 10}]
    assert problems(doc) == []
    assert_verified_snapshot(doc, CONFIG.expected_total, CONFIG.node_ids, CONFIG.channels)


def test_each_kind_of_wrong_cut_is_found() -> None:
    lost = document()
    in_flight(lost).clear()
    assert problems(lost) == [
        "n1->n2: recorded [], sent 2, received 1",
        "recorded total 290 != initial total 300",
    ]
    renumbered = document()
    in_flight(renumbered)[0]["seq"] = 1
    assert problems(renumbered) == ["n1->n2: recorded [1], sent 2, received 1"]
    free_money = document()
    in_flight(free_money).append({"seq": 3, "amount": 0})
    assert problems(free_money) == [
        "n1->n2: recorded [2, 3], sent 2, received 1",
        "n1->n2: non-positive amount in [{'seq': 2, 'amount': 10}, {'seq': 3, 'amount': 0}]",
    ]
    missing_node = document()
    del missing_node["nodes"]["n3"]
    assert problems(missing_node) == ["nodes ['n1', 'n2'] != ['n1', 'n2', 'n3']"]
    missing_channel = document()
    missing_channel["channels"].pop()
    assert problems(missing_channel)[0].startswith("channels ")


def test_the_collectors_verdict_is_not_taken_on_trust() -> None:
    doc = document()
    doc["nodes"]["n3"]["balance"] += 1
    doc["verification"] = {"ok": True}  # as if collector/verify.py had missed it
    with pytest.raises(AssertionError, match="recorded total 301 != initial total 300"):
        assert_verified_snapshot(doc, CONFIG.expected_total, CONFIG.node_ids, CONFIG.channels)
    aborted = document()
    aborted["status"] = "aborted"
    with pytest.raises(AssertionError, match="s1"):
        assert_verified_snapshot(aborted, CONFIG.expected_total, CONFIG.node_ids, CONFIG.channels)
