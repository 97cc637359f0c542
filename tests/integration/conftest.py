"""Helpers of the multi-process integration tests (real nodes and collector on loopback)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.config import ClusterConfig
from demo.local_cluster import LocalCluster
from initiator.client import take_snapshot


def independent_check(config: ClusterConfig, document: Mapping[str, Any]) -> list[str]:
    """Problems with a complete snapshot, recomputed from the raw recorded numbers.

    Deliberately does not read the document's "verification" field: money is
    conserved, and on every channel i -> j the recorded messages are exactly
    transfers received_j[i]+1 .. sent_i[j].
    """
    problems = []
    nodes = document["nodes"]
    if sorted(nodes) != sorted(config.node_ids):
        problems.append(f"nodes {sorted(nodes)} != {sorted(config.node_ids)}")
        return problems
    channels = {(ch["from"], ch["to"]): ch["messages"] for ch in document["channels"]}
    if sorted(channels) != sorted(config.channels):
        problems.append("channels of the document do not match the topology")
    total = sum(state["balance"] for state in nodes.values())
    for (src, dst), messages in channels.items():
        total += sum(m["amount"] for m in messages)
        sent, received = nodes[src]["sent"][dst], nodes[dst]["received"][src]
        if len(messages) != sent - received:
            problems.append(
                f"{src}->{dst}: {len(messages)} recorded, sent-received={sent - received}"
            )
        if [m["seq"] for m in messages] != list(range(received + 1, sent + 1)):
            problems.append(f"{src}->{dst}: recorded seqs {[m['seq'] for m in messages]}")
        if any(m["amount"] <= 0 for m in messages):
            problems.append(f"{src}->{dst}: non-positive amount")
    if total != config.expected_total:
        problems.append(f"recorded total {total} != initial total {config.expected_total}")
    return problems


def snapshot(
    cluster: LocalCluster, initiators: Sequence[str], snapshot_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    outcome = take_snapshot(
        cluster.config, cluster.collector_address, initiators, snapshot_id, timeout=timeout
    )
    assert not outcome.start_errors, outcome.start_errors
    assert outcome.document is not None
    on_disk = json.loads((Path(cluster.snapshot_dir) / f"{snapshot_id}.json").read_text())
    assert on_disk == outcome.document
    return outcome.document


def assert_verified(cluster: LocalCluster, document: Mapping[str, Any]) -> None:
    assert document["status"] == "complete", (document["snapshot_id"], document["missing"])
    assert independent_check(cluster.config, document) == [], cluster.log_tail("collector")
    assert document["verification"]["ok"] is True


def transfers_sent(document: Mapping[str, Any]) -> int:
    return sum(sum(state["sent"].values()) for state in document["nodes"].values())
