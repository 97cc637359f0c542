"""Rejoin refusals on real processes: with no complete snapshot a wiped node
stays NOT_SERVING and says why; a serving node's certificate cannot restore."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from certs import identity
from demo.local_cluster import LocalCluster
from initiator import operations
from initiator.client import Connections, InitiatorError
from node.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = Path(tmp_path_factory.mktemp("rejoin3"))
    with LocalCluster(workdir, nodes=3, topology="complete", transfer_rate=30) as running:
        running.start()
        time.sleep(1.0)  # money moves: every channel has counters to compare
        yield running


def test_a_node_may_not_restore_unless_it_is_stale(cluster: LocalCluster) -> None:
    connections = Connections(tls=cluster.tls_files(identity.node("n1")))
    try:
        with pytest.raises(InitiatorError) as refused:
            operations.restore(cluster.collector_address, "latest", 5, connections=connections)
    finally:
        connections.close()
    assert "PERMISSION_DENIED" in str(refused.value)
    assert "n1 is serving, not stale: only an operator restores" in str(refused.value)


def test_rejoin_without_a_complete_snapshot_refuses_and_says_why(cluster: LocalCluster) -> None:
    cluster.stop_node("n2")
    shutil.rmtree(cluster.workdir / "data" / "n2")
    cluster.env["CL_REJOIN"] = "1"
    try:
        cluster.start_node("n2")
    finally:
        del cluster.env["CL_REJOIN"]

    def refused() -> str:
        try:
            reason = cluster.node_status("n2").not_serving_reason
        except grpc.RpcError:
            return ""
        return reason if "rejoin refused" in reason else ""

    reason = wait_until(refused, 30, interval=0.3, what="n2's rejoin to be refused")
    assert "stale" in reason
    assert reason.endswith("rejoin refused: no complete snapshot is stored: nothing to restore")
    assert operations.list_restores(cluster.collector_address, tls=cluster.operator_tls) == []
    answers = operations.cluster_status(cluster.config, tls=cluster.operator_tls)
    assert "not serving: " in operations.format_status(answers)
