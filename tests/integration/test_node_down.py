"""5 real nodes, complete graph, one of them down: the aborted snapshot names it.

Every node has a channel from the down node, so every other node records its
state and then waits, forever, for that node's marker. Their progress reports
let the document say exactly that, instead of listing every node as missing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.local_cluster import LocalCluster
from initiator.__main__ import main
from initiator.client import take_snapshot
from initiator.summary import (
    EXIT_ABORTED,
    EXIT_NO_INITIATOR,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    format_summary,
)
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


def test_cli_with_a_node_down_fails_fast_names_it_alike_and_shows_the_money_queued_to_it(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real `cl-initiator` against the real cluster with n5 stopped."""
    cluster.stop_node("n5")  # already stopped by the test above, if it ran
    base = ["--cluster", str(cluster.config_path), "--timeout", "30"]

    # n5 chosen: refused before anything begins, naming it.
    code = main([*base, "--node", "n5", "--snapshot-id", "cli-n5"])
    _, err = capsys.readouterr()
    assert code == EXIT_NO_INITIATOR, err
    assert f"cannot reach n5 ({cluster.config.node('n5').address}): UNAVAILABLE" in err
    assert "snapshot cli-n5 not started" in err
    assert main([*base, "--show", "cli-n5"]) == EXIT_NOT_FOUND
    assert "no snapshot cli-n5 at the collector" in capsys.readouterr().err
    assert not (cluster.snapshot_dir / "cli-n5.json").exists()

    # n1 chosen: a warning, then the snapshot aborts; progress and summary agree.
    code = main([*base, "--node", "n1", "--snapshot-id", "cli-down"])
    out, err = capsys.readouterr()
    assert code == EXIT_ABORTED, err
    assert "warning: n5 (" in err
    progress = [line for line in err.splitlines() if line.startswith("waiting for cli-down: ")]
    assert "(waiting for markers: n1, n2, n3, n4; missing: n5)" in progress[-1], progress
    assert "  missing: n5 (never recorded its state)" in out.splitlines()
    queued = [line for line in out.splitlines() if line.startswith("  unreachable now: n5")]
    assert len(queued) == 1, out
    # The workload kept sending to n5: that money is held by n1..n4, unacknowledged.
    match = re.search(r"queued toward it: amount (\d+) in (\d+) unacknowledged frames", queued[0])
    assert match and int(match[1]) > 0, queued
    assert all(f"{n}->n5: " in queued[0] for n in ("n1", "n2", "n3", "n4"))

    # The same id again: refused, the stored document unchanged.
    before = (cluster.snapshot_dir / "cli-down.json").read_bytes()
    assert main([*base, "--node", "n1", "--snapshot-id", "cli-down"]) == EXIT_USAGE
    assert "snapshot cli-down exists already (aborted" in capsys.readouterr().err
    assert (cluster.snapshot_dir / "cli-down.json").read_bytes() == before
