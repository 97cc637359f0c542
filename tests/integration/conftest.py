"""Helpers of the multi-process integration tests (real nodes and collector on loopback)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from demo.local_cluster import LocalCluster
from initiator.client import take_snapshot
from tests.snapshot_check import cut_problems


def snapshot(
    cluster: LocalCluster, initiators: Sequence[str], snapshot_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    outcome = take_snapshot(
        cluster.config,
        cluster.collector_address,
        initiators,
        snapshot_id,
        timeout=timeout,
        tls=cluster.operator_tls,
    )
    assert not outcome.start_errors, outcome.start_errors
    assert outcome.document is not None
    on_disk = json.loads((Path(cluster.snapshot_dir) / f"{snapshot_id}.json").read_text())
    assert on_disk == outcome.document
    return outcome.document


def assert_verified(cluster: LocalCluster, document: Mapping[str, Any]) -> None:
    config = cluster.config
    assert document["status"] == "complete", (document["snapshot_id"], document["missing"])
    problems = cut_problems(document, config.expected_total, config.node_ids, config.channels)
    assert problems == [], cluster.log_tail("collector")
    assert document["verification"]["ok"] is True
