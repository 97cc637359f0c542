"""collector/verify.py finds every kind of wrong snapshot."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from collector.verify import verify_snapshot

# n1 -> n2 -> n3 -> n1 with 600 in total: 20 in flight on n1 -> n2 (seqs 3, 4),
# nothing on n2 -> n3, 5 in flight on n3 -> n1 (seq 1).
# n1 initiated it (and was asked to).
NODES: dict[str, dict[str, Any]] = {
    "n1": {"balance": 250, "sent": {"n2": 4}, "received": {"n3": 0}, "initiated": True},
    "n2": {"balance": 225, "sent": {"n3": 1}, "received": {"n1": 2}, "initiated": False},
    "n3": {"balance": 100, "sent": {"n1": 1}, "received": {"n2": 1}, "initiated": False},
}
CHANNELS: list[dict[str, Any]] = [
    {"from": "n1", "to": "n2", "messages": [{"seq": 3, "amount": 15}, {"seq": 4, "amount": 5}]},
    {"from": "n2", "to": "n3", "messages": []},
    {"from": "n3", "to": "n1", "messages": [{"seq": 1, "amount": 5}]},
]


def verify(nodes: dict[str, Any] = NODES, channels: list[dict[str, Any]] = CHANNELS,
           total: int = 600, initiators: tuple[str, ...] = ("n1",)) -> dict[str, Any]:
    return verify_snapshot(total, nodes, channels, initiators=initiators)


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
    assert result["initiators"] == {"ok": True, "initiators": ["n1"], "initiated": ["n1"]}
    assert result["channels"][0] == {
        "from": "n1", "to": "n2", "sent": 4, "received": 2, "recorded": 2, "ok": True,
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
    assert result["channels"][0]["problem"] == (
        f"recorded sequence numbers {seqs} are not 3..4"
    )


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
    nodes = {"a": {"balance": 5, "sent": {}, "received": {}, "initiated": True},
             "b": {"balance": 0, "sent": {}, "received": {}, "initiated": False}}
    channels = [{"from": "a", "to": "b", "messages": []}, {"from": "b", "to": "a", "messages": []}]
    assert verify(nodes, channels, total=5, initiators=("a",))["ok"] is True


def with_initiated(*initiated: str) -> dict[str, Any]:
    nodes = copy.deepcopy(NODES)
    for node, state in nodes.items():
        state["initiated"] = node in initiated
    return nodes


def test_several_initiators_some_of_which_recorded_on_a_marker() -> None:
    # n1 and n3 were asked; n3 had already recorded on n1's marker when asked
    result = verify(with_initiated("n1"), initiators=("n3", "n1"))
    assert result["ok"] is True
    assert result["initiators"] == {"ok": True, "initiators": ["n1", "n3"], "initiated": ["n1"]}
    assert verify(with_initiated("n1", "n3"), initiators=("n1", "n3"))["ok"] is True


def test_no_node_initiated() -> None:
    result = verify(with_initiated())
    assert result["ok"] is False
    assert result["conservation"]["ok"] is True and all(c["ok"] for c in result["channels"])
    assert result["initiators"] == {
        "ok": False,
        "initiators": ["n1"],
        "initiated": [],
        "problem": "no node initiated the snapshot: every node claims it recorded on a "
        "marker, but the first one to record cannot have had one",
    }


@pytest.mark.parametrize(
    ("initiated", "problem"),
    [
        (("n1", "n2"), "n2 claims to have initiated the snapshot but is not among its "
                       "initiators (n1)"),
        (("n1", "n2", "n3"), "n2, n3 claim to have initiated the snapshot but are not among "
                             "its initiators (n1)"),
    ],
    ids=["one-stranger", "all-initiated"],
)
def test_a_node_that_initiated_without_being_asked(
    initiated: tuple[str, ...], problem: str
) -> None:
    result = verify(with_initiated(*initiated))
    assert result["ok"] is False
    assert result["initiators"]["ok"] is False
    assert result["initiators"]["problem"] == problem


def test_no_initiators_at_all() -> None:
    result = verify(initiators=())
    assert result["ok"] is False
    assert result["initiators"]["problem"] == (
        "n1 claims to have initiated the snapshot but is not among its initiators (none)"
    )


def test_a_missing_initiated_field_counts_as_not_initiated() -> None:
    nodes = copy.deepcopy(NODES)
    del nodes["n1"]["initiated"]
    assert verify(nodes)["initiators"]["ok"] is False


def test_the_document_carries_the_initiator_check() -> None:
    """build_document verifies with the document's own initiators."""
    from collector.document import NodeReport, build_document
    from node.core import LocalSnapshot, RecordedMessage

    def report(node: str, initiated: bool) -> NodeReport:
        state = NODES[node]
        channels = {
            ch["from"]: tuple(RecordedMessage(m["seq"], m["amount"]) for m in ch["messages"])
            for ch in CHANNELS if ch["to"] == node
        }
        return NodeReport(LocalSnapshot("s1", node, state["balance"], state["sent"],
                                        state["received"], channels, initiated))

    def document(initiators: list[str], initiated: str) -> dict[str, Any]:
        return build_document(
            snapshot_id="s1", initiators=initiators, started_at="", completed_at="",
            expected_total=600, node_ids=["n1", "n2", "n3"],
            channels=[(c["from"], c["to"]) for c in CHANNELS],
            reports={n: report(n, n == initiated) for n in NODES},
        )

    good = document(["n1"], "n1")
    assert good["verification"]["ok"] is True
    assert good["verification"]["initiators"]["ok"] is True
    bad = document(["n1"], "n2")
    assert bad["verification"]["ok"] is False
    assert bad["verification"]["initiators"]["problem"] == (
        "n2 claims to have initiated the snapshot but is not among its initiators (n1)"
    )


def test_a_restore_refuses_a_snapshot_whose_initiators_do_not_verify() -> None:
    """collector/restore.py verifies before restoring, the initiator check included."""
    from collector.restore import RestoreRefused, plan_restore
    from simulator.engine import Simulation

    ring = [("n1", "n2"), ("n2", "n3"), ("n3", "n1")]
    sim = Simulation({"n1": 100, "n2": 50, "n3": 10}, ring, seed=1)
    sim.transfer("n1", "n2", 30)
    sim.snapshot("n1", "s1")
    sim.run_until_quiet()
    (document,) = sim.completed_snapshots
    assert plan_restore(document, ["n1", "n2", "n3"], ring, 160, 1, 1)
    stranger = copy.deepcopy(document)
    stranger["nodes"]["n2"]["initiated"] = True  # the stored verdict still says ok
    with pytest.raises(RestoreRefused, match="n2 claims to have initiated the snapshot"):
        plan_restore(stranger, ["n1", "n2", "n3"], ring, 160, 1, 1)
