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
    """n4 down: the document names it, and says who was still waiting for whom.

    Started at n5, right after n4: every other node records and completes,
    except n5, whose only incoming channel is n4 -> n5. Started at n1, the
    markers stop at n4, so n5 and n6 never record either: n1 waits for n6.
    """
    assert cluster.stop_node("n4") == 0  # SIGTERM, graceful, and not restarted
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        jobs = {
            initiator: pool.submit(
                take_snapshot,
                cluster.config,
                cluster.collector_address,
                [initiator],
                f"ring-down-{initiator}",
                timeout=30,
                tls=cluster.operator_tls,
            )
            for initiator in ("n5", "n1")
        }
        outcomes = {initiator: job.result() for initiator, job in jobs.items()}
    elapsed = time.monotonic() - started
    assert TIMEOUT - 0.5 <= elapsed < TIMEOUT + 5
    documents = {}
    for initiator, outcome in outcomes.items():
        assert outcome.exit_code == EXIT_ABORTED
        document = outcome.document
        assert document is not None
        assert document["status"] == "aborted"
        assert document["verification"]["ok"] is False
        assert document["verification"]["checked"] is False
        assert "n4" not in document["nodes"]
        stored = json.loads((cluster.snapshot_dir / f"ring-down-{initiator}.json").read_text())
        assert stored == document
        documents[initiator] = document

    document = documents["n5"]
    assert document["missing"] == ["n4"]
    assert document["waiting"] == {"n5": ["n4"]}
    complete = {node: state["complete"] for node, state in document["nodes"].items()}
    assert complete == {"n1": True, "n2": True, "n3": True, "n5": False, "n6": True}
    messages = {(ch["from"], ch["to"]): ch["messages"] for ch in document["channels"]}
    assert messages[("n4", "n5")] is None and messages[("n3", "n4")] is None
    assert all(messages[(f"n{i}", f"n{i % 6 + 1}")] is not None for i in (5, 6, 1, 2))
    assert document["verification"]["reason"] == (
        "n4 never recorded its state; n5 was still waiting for a marker (from n4)"
    )

    document = documents["n1"]
    assert document["missing"] == ["n4", "n5", "n6"]
    assert document["waiting"] == {"n1": ["n6"]}
    complete = {node: state["complete"] for node, state in document["nodes"].items()}
    assert complete == {"n1": False, "n2": True, "n3": True}

    latest = json.loads((cluster.snapshot_dir / "latest.json").read_text())
    assert latest["snapshot_id"] in ("ring-down-n1", "ring-down-n5")
