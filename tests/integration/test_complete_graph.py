"""5 real nodes, complete graph, live traffic: snapshots of every kind verify."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo.local_cluster import COLLECTOR, LocalCluster
from initiator.client import begin_snapshot, start_on_nodes, wait_snapshot
from tests.integration.conftest import assert_verified, snapshot
from tests.snapshot_check import transfers_sent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = Path(tmp_path_factory.mktemp("complete5"))
    with LocalCluster(
        workdir,
        nodes=5,
        topology="complete",
        transfer_rate=40,
        snapshot_timeout=20,
        link_delay_ms=30,  # so that snapshots catch money in flight
    ) as running:
        running.start()
        time.sleep(1.0)  # let traffic build up
        yield running


def test_sequential_snapshots_verify(cluster: LocalCluster) -> None:
    sent, in_flight = [], 0
    for index, initiator in enumerate(["n1", "n3", "n5"]):
        document = snapshot(cluster, [initiator], f"seq-{index}")
        assert_verified(cluster, document)
        assert document["initiators"] == [initiator]
        sent.append(transfers_sent(document))
        in_flight += sum(len(channel["messages"]) for channel in document["channels"])
        time.sleep(0.3)
    assert sent[0] > 0 and sent[0] < sent[1] < sent[2], "the workload is not running"
    # With 30 ms of link latency and 200 transfers/s, a cut that records no
    # channel state at all would mean the channel recording is not working.
    assert in_flight > 0, "no snapshot recorded any money in flight"


def test_concurrent_snapshots_verify(cluster: LocalCluster) -> None:
    with ThreadPoolExecutor(3) as pool:
        jobs = [
            pool.submit(snapshot, cluster, ["n2"], "conc-a"),
            pool.submit(snapshot, cluster, ["n4"], "conc-b"),
            pool.submit(snapshot, cluster, ["n1"], "conc-c"),
        ]
        documents = [job.result() for job in jobs]
    for document in documents:
        assert_verified(cluster, document)


def test_snapshot_started_at_two_nodes_verifies(cluster: LocalCluster) -> None:
    document = snapshot(cluster, ["n3", "n5"], "two-initiators")
    assert_verified(cluster, document)
    assert document["initiators"] == ["n3", "n5"]


def test_node_killed_and_restarted_mid_traffic(cluster: LocalCluster) -> None:
    before = snapshot(cluster, ["n1"], "before-kill")
    assert_verified(cluster, before)
    cluster.kill_node("n3")  # SIGKILL: no goodbye, transfers to n3 stay unacknowledged
    time.sleep(1.5)
    cluster.start_node("n3")
    cluster.wait_healthy(["n3"])
    time.sleep(1.0)
    after = snapshot(cluster, ["n2"], "after-restart")
    assert_verified(cluster, after)  # includes: total == initial total
    assert transfers_sent(after) > transfers_sent(before)
    assert after["nodes"]["n3"]["received"]["n1"] >= before["nodes"]["n3"]["received"]["n1"]


def test_collector_killed_while_nodes_report(cluster: LocalCluster) -> None:
    """Reports retried by the nodes reach a restarted collector; nothing is lost.

    The collector stores reports only of snapshots it began, so the begin comes
    first (it is durable); then the collector dies and the nodes report into the void.
    """
    tls = cluster.operator_tls
    begin_snapshot(cluster.collector_address, "while-collector-down", ["n4"], tls=tls)
    cluster.kill_collector()
    results = start_on_nodes(cluster.config, ["n4"], "while-collector-down", tls=tls)
    assert results[0].ok, results
    time.sleep(1.0)  # the nodes finish recording and keep retrying their reports
    cluster.start_collector()
    cluster.wait_healthy([COLLECTOR])
    document = wait_snapshot(cluster.collector_address, "while-collector-down", timeout=30, tls=tls)
    assert_verified(cluster, document)
    assert document["initiators"] == ["n4"]
