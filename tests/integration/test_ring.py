"""6 real nodes on a one-way ring: snapshots verify; a node down means aborted, named."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo.local_cluster import LocalCluster
from initiator.client import take_snapshot
from initiator.summary import EXIT_ABORTED
from tests.integration.conftest import assert_verified, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TIMEOUT = 3.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = Path(tmp_path_factory.mktemp("ring6"))
    with LocalCluster(
        workdir, nodes=6, topology="ring", transfer_rate=40, snapshot_timeout=TIMEOUT
    ) as running:
        assert sorted(running.config.channels) == sorted(
            (f"n{i}", f"n{i % 6 + 1}") for i in range(1, 7)
        )
        running.start()
        time.sleep(1.0)
        yield running


def test_ring_snapshots_verify(cluster: LocalCluster) -> None:
    for index, initiator in enumerate(["n1", "n4"]):
        assert_verified(cluster, snapshot(cluster, [initiator], f"ring-{index}"))
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(snapshot, cluster, ["n2"], "ring-conc-a"),
            pool.submit(snapshot, cluster, ["n5"], "ring-conc-b"),
        ]
        for job in jobs:
            assert_verified(cluster, job.result())
    document = snapshot(cluster, ["n1", "n4"], "ring-two")
    assert_verified(cluster, document)
    assert document["initiators"] == ["n1", "n4"]


def test_node_down_snapshot_is_aborted_and_names_it(cluster: LocalCluster) -> None:
    assert cluster.stop_node("n4") == 0  # SIGTERM, graceful, and not restarted
    started = time.monotonic()
    outcome = take_snapshot(
        cluster.config, cluster.collector_address, ["n1"], "ring-down", timeout=30
    )
    elapsed = time.monotonic() - started
    document = outcome.document
    assert document is not None
    assert outcome.exit_code == EXIT_ABORTED
    assert document["status"] == "aborted"
    assert "n4" in document["missing"]
    assert "n4" not in document["nodes"]
    assert document["verification"]["ok"] is False
    assert TIMEOUT - 0.5 <= elapsed < TIMEOUT + 5
    stored = json.loads((cluster.snapshot_dir / "ring-down.json").read_text())
    assert stored == document
    latest = json.loads((cluster.snapshot_dir / "latest.json").read_text())
    assert latest["snapshot_id"] == "ring-down"
