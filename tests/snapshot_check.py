"""The tests' own check of a snapshot document: one copy, used by every test that reads one.

Deliberately independent of collector/verify.py and of the document's own
"verification" field: it recomputes, from the raw recorded numbers, that

* the document has exactly the cluster's nodes and channels;
* on every channel i -> j the recorded messages are exactly transfers
  received_j[i]+1 .. sent_i[j], in order, each of a positive amount;
* money is conserved: recorded balances + recorded in-flight == initial total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def cut_problems(
    document: Mapping[str, Any],
    expected_total: int,
    node_ids: Iterable[str],
    channels: Iterable[tuple[str, str]],
) -> list[str]:
    """What is wrong with the recorded cut of a complete `document` (empty when sound)."""
    problems: list[str] = []
    nodes = document["nodes"]
    if sorted(nodes) != sorted(node_ids):
        return [f"nodes {sorted(nodes)} != {sorted(node_ids)}"]
    recorded = {(ch["from"], ch["to"]): ch["messages"] for ch in document["channels"]}
    if sorted(recorded) != sorted(channels):
        return [f"channels {sorted(recorded)} != {sorted(channels)}"]
    total = sum(state["balance"] for state in nodes.values())
    for (src, dst), messages in sorted(recorded.items()):
        sent, received = nodes[src]["sent"][dst], nodes[dst]["received"][src]
        seqs = [m["seq"] for m in messages]
        if seqs != list(range(received + 1, sent + 1)):
            problems.append(f"{src}->{dst}: recorded {seqs}, sent {sent}, received {received}")
        if any(m["amount"] <= 0 for m in messages):
            problems.append(f"{src}->{dst}: non-positive amount in {messages}")
        total += sum(m["amount"] for m in messages)
    if total != expected_total:
        problems.append(f"recorded total {total} != initial total {expected_total}")
    return problems


def assert_verified_snapshot(
    document: Mapping[str, Any],
    expected_total: int,
    node_ids: Iterable[str],
    channels: Iterable[tuple[str, str]],
) -> None:
    """A complete snapshot whose cut is sound, and the collector agrees.

    (Plain asserts with messages: pytest does not rewrite this module's asserts.)"""
    assert document["status"] == "complete", (document["snapshot_id"], document.get("missing"))
    problems = cut_problems(document, expected_total, node_ids, channels)
    assert not problems, f"{document['snapshot_id']}: {problems}"
    assert document["verification"]["ok"] is True, document["verification"]


def transfers_sent(document: Mapping[str, Any]) -> int:
    """How many transfers all nodes had sent at their recording points."""
    return sum(sum(state["sent"].values()) for state in document["nodes"].values())
