"""5 real nodes, complete graph, one of them down: the aborted snapshot names it.

Every node has a channel from the down node, so every other node records its
state and then waits, forever, for that node's marker. Their progress reports
let the document say exactly that, instead of listing every node as missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.local_cluster import LocalCluster
from initiator.client import take_snapshot
from initiator.summary import EXIT_ABORTED, format_summary
from tests.integration.conftest import assert_verified, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TIMEOUT = 3.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = Path(tmp_path_factory.mktemp("complete5-down"))
    with LocalCluster(
        workdir, nodes=5, topology="complete", transfer_rate=40, snapshot_timeout=TIMEOUT
    ) as running:
        running.start()
        time.sleep(0.5)
        yield running


def test_node_down_in_a_complete_graph_is_named_and_the_others_wait_for_it(
    cluster: LocalCluster,
) -> None:
    assert_verified(cluster, snapshot(cluster, ["n1"], "all-up"))
    assert cluster.stop_node("n5") == 0  # SIGTERM, graceful, and not restarted
    started = time.monotonic()
    outcome = take_snapshot(
        cluster.config,
        cluster.collector_address,
        ["n2"],
        "n5-down",
        timeout=30,
        tls=cluster.operator_tls,
    )
    elapsed = time.monotonic() - started
    assert TIMEOUT - 0.5 <= elapsed < TIMEOUT + 5
    assert outcome.exit_code == EXIT_ABORTED
    document = outcome.document
    assert document is not None
    assert document["status"] == "aborted"
    assert document["initiators"] == ["n2"]
    assert document["missing"] == ["n5"]
    assert document["waiting"] == {node: ["n5"] for node in ("n1", "n2", "n3", "n4")}
    assert sorted(document["nodes"]) == ["n1", "n2", "n3", "n4"]
    assert not any(state["complete"] for state in document["nodes"].values())
    assert all(state["completed_at"] == "" for state in document["nodes"].values())
    assert [node for node, state in document["nodes"].items() if state["initiated"]] == ["n2"]
    assert all(ch["messages"] is None for ch in document["channels"])
    assert document["verification"] == {
        "ok": False,
        "checked": False,
        "reason": "n5 never recorded its state; "
        "n1, n2, n3, n4 were still waiting for markers (from n5)",
    }
    assert json.loads((cluster.snapshot_dir / "n5-down.json").read_text()) == document
    summary = format_summary(document)
    assert "  missing: n5 (never recorded its state)" in summary
    assert "  still waiting for markers: n1, n2, n3, n4 from n5" in summary
