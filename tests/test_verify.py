"""collector/verify.py finds every kind of wrong snapshot."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from collector.verify import verify_snapshot

# n1 -> n2 -> n3 -> n1 with 600 in total: 20 in flight on n1 -> n2 (seqs 3, 4),
# nothing on n2 -> n3, 5 in flight on n3 -> n1 (seq 1).
NODES: dict[str, dict[str, Any]] = {
    "n1": {"balance": 250, "sent": {"n2": 4}, "received": {"n3": 0}},
    "n2": {"balance": 225, "sent": {"n3": 1}, "received": {"n1": 2}},
    "n3": {"balance": 100, "sent": {"n1": 1}, "received": {"n2": 1}},
}
CHANNELS: list[dict[str, Any]] = [
    {"from": "n1", "to": "n2", "messages": [{"seq": 3, "amount": 15}, {"seq": 4, "amount": 5}]},
    {"from": "n2", "to": "n3", "messages": []},
    {"from": "n3", "to": "n1", "messages": [{"seq": 1, "amount": 5}]},
]


def verify(
    nodes: dict[str, Any] = NODES, channels: list[dict[str, Any]] = CHANNELS, total: int = 600
) -> dict[str, Any]:
    return verify_snapshot(total, nodes, channels)


def test_a_consistent_snapshot_is_ok() -> None:
    result = verify()
    assert result["ok"] is True
    assert result["conservation"] == {
        "ok": True,
        "expected_total": 600,
        "recorded_balances": 575,
        "in_flight": 25,
        "recorded_total": 600,
    }
    assert [c["ok"] for c in result["channels"]] == [True, True, True]
    assert result["channels"][0] == {
        "from": "n1",
        "to": "n2",
        "sent": 4,
        "received": 2,
        "recorded": 2,
        "ok": True,
    }


def test_wrong_balance_fails_conservation_only() -> None:
    nodes = copy.deepcopy(NODES)
    nodes["n2"]["balance"] += 1
    result = verify(nodes)
    assert result["ok"] is False
    assert result["conservation"]["ok"] is False
    assert result["conservation"]["recorded_total"] == 601
    assert all(c["ok"] for c in result["channels"])


def test_wrong_expected_total() -> None:
    assert verify(total=599)["ok"] is False


def test_missing_in_flight_message() -> None:
    channels = copy.deepcopy(CHANNELS)
    channels[0]["messages"].pop()
    result = verify(channels=channels)
    assert result["ok"] is False
    assert result["conservation"]["ok"] is False
    bad = result["channels"][0]
    assert bad["ok"] is False
    assert bad["problem"] == "recorded 1 messages, expected sent - received = 2"


def test_extra_message() -> None:
    channels = copy.deepcopy(CHANNELS)
    channels[1]["messages"].append({"seq": 2, "amount": 0})  # amount 0: money still adds up
    result = verify(channels=channels)
    assert result["conservation"]["ok"] is True
    assert result["ok"] is False
    assert result["channels"][1]["problem"] == "recorded 1 messages, expected sent - received = 0"


@pytest.mark.parametrize(
    "seqs",
    [[4, 3], [2, 3], [3, 3], [4, 5], [1, 2]],
    ids=["reordered", "early", "dup", "late", "old"],
)
def test_wrong_sequence_numbers(seqs: list[int]) -> None:
    channels = copy.deepcopy(CHANNELS)
    for message, seq in zip(channels[0]["messages"], seqs, strict=True):
        message["seq"] = seq
    result = verify(channels=channels)
    assert result["ok"] is False
    assert result["conservation"]["ok"] is True
    assert result["channels"][0]["problem"] == (f"recorded sequence numbers {seqs} are not 3..4")


def test_counters_that_cannot_be_a_cut() -> None:
    # n2 claims to have received more than n1 had sent: a message from the future
    nodes = copy.deepcopy(NODES)
    nodes["n2"]["received"]["n1"] = 5
    channels = copy.deepcopy(CHANNELS)
    channels[0]["messages"] = []
    result = verify(nodes, channels)
    assert result["ok"] is False
    assert result["channels"][0]["problem"] == "recorded 0 messages, expected sent - received = -1"


def test_channel_counters_default_to_zero() -> None:
    nodes = {
        "a": {"balance": 5, "sent": {}, "received": {}},
        "b": {"balance": 0, "sent": {}, "received": {}},
    }
    channels = [{"from": "a", "to": "b", "messages": []}, {"from": "b", "to": "a", "messages": []}]
    assert verify(nodes, channels, total=5)["ok"] is True
