"""Restore on a real 5-node cluster (processes, mutual TLS): the balances after a
restore are exactly the snapshot's plus its in-flight money, and the next
snapshot verifies in the new epoch."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.healthcheck import check
from demo.local_cluster import COLLECTOR, LocalCluster
from initiator import operations
from initiator.client import take_snapshot
from initiator.summary import format_summary
from node.testing import wait_until
from tests.integration.conftest import assert_verified, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def expected_after_restore(document: Mapping[str, Any]) -> dict[str, int]:
    """S's recorded balance of each node plus what S recorded in flight toward it."""
    balances = {node: int(state["balance"]) for node, state in document["nodes"].items()}
    for channel in document["channels"]:
        balances[channel["to"]] += sum(int(m["amount"]) for m in channel["messages"])
    return balances


def in_flight(document: Mapping[str, Any]) -> int:
    return sum(len(ch["messages"]) for ch in document["channels"])


def drained(cluster: LocalCluster) -> dict[str, int]:
    def probe() -> dict[str, int] | None:
        statuses = {node: cluster.node_status(node) for node in cluster.node_ids}
        if any(s.unacknowledged_frames for s in statuses.values()):
            return None
        return {node: int(s.balance) for node, s in statuses.items()}

    return wait_until(probe, 30, interval=0.2, what="channels to drain")


def pause(cluster: LocalCluster, running: bool = False) -> None:
    answers = operations.set_workload(cluster.config, running, tls=cluster.operator_tls)
    assert all(a.status is not None for a in answers), answers


def snapshot_with_money_in_flight(cluster: LocalCluster, prefix: str) -> dict[str, Any]:
    """A verified snapshot that recorded at least one transfer in flight."""
    for attempt in range(20):
        document = snapshot(cluster, ["n1"], f"{prefix}-{attempt}")
        assert_verified(cluster, document)
        if in_flight(document):
            return document
    raise AssertionError("no snapshot recorded money in flight")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = Path(tmp_path_factory.mktemp("restore5"))
    with LocalCluster(
        workdir, nodes=5, topology="complete", transfer_rate=30, link_delay_ms=50
    ) as running:
        running.start()
        yield running


def test_restore_gives_back_the_snapshot_balances_plus_its_in_flight_money(
    cluster: LocalCluster,
) -> None:
    pause(cluster, True)
    s = snapshot_with_money_in_flight(cluster, "s")
    time.sleep(1.0)  # money keeps moving after the cut
    pause(cluster)
    moved = drained(cluster)
    expected = expected_after_restore(s)
    assert moved != expected  # the restore has something to undo
    record = operations.restore(
        cluster.collector_address, s["snapshot_id"], 30, tls=cluster.operator_tls
    )
    assert record["outcome"] == "complete", record
    assert record["expected_balances"] == expected
    assert sum(expected.values()) == cluster.config.expected_total
    assert drained(cluster) == expected
    statuses = {node: cluster.node_status(node) for node in cluster.node_ids}
    assert {s.epoch for s in statuses.values()} == {record["epoch"]}
    assert not any(s.workload_running for s in statuses.values())  # it was paused
    on_disk = json.loads(
        (cluster.snapshot_dir / "restores" / f"{record['restore']}.json").read_text()
    )
    assert on_disk == record
    t = snapshot(cluster, ["n2"], "after-restore")
    assert_verified(cluster, t)
    assert t["epoch"] == record["epoch"]
    assert format_summary(t).splitlines()[0].endswith(f", epoch {record['epoch']}")
    assert {node: state["balance"] for node, state in t["nodes"].items()} == expected
    # Resumed, money moves again in the new epoch and snapshots keep verifying.
    pause(cluster, True)
    time.sleep(1.0)
    u = snapshot(cluster, ["n3"], "after-resume")
    assert_verified(cluster, u)
    assert u["epoch"] == record["epoch"]
    listed = operations.list_restores(cluster.collector_address, tls=cluster.operator_tls)
    assert [r["restore"] for r in listed] == [record["restore"]]


# ------------------------------------------------------- crash at each step


def wait_restore_finished(
    cluster: LocalCluster, number: int, timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        try:
            records = operations.list_restores(cluster.collector_address, tls=cluster.operator_tls)
        except Exception:  # the collector is restarting
            return None
        mine = [r for r in records if r["restore"] == number]
        return mine[0] if mine and mine[0]["outcome"] != "pending" else None

    return wait_until(probe, timeout, interval=0.3, what=f"restore {number} to finish")


def phase_of(cluster: LocalCluster, number: int) -> str:
    path = cluster.snapshot_dir / "restores" / f"{number}.json"
    try:
        return str(json.loads(path.read_text())["phase"])
    except (OSError, ValueError):
        return ""


def next_restore_number(cluster: LocalCluster) -> int:
    records = operations.list_restores(cluster.collector_address, tls=cluster.operator_tls)
    return len(records) + 1


def request_restore(cluster: LocalCluster, snapshot_id: str) -> None:
    """Ask for the restore; the process that crashes may take the RPC with it."""
    try:
        operations.restore(cluster.collector_address, snapshot_id, 2, tls=cluster.operator_tls)
    except operations.InitiatorError:
        pass


def check_outcome(
    cluster: LocalCluster,
    record: dict[str, Any],
    before: Mapping[str, int],
    s: Mapping[str, Any],
    epoch_before: int,
) -> None:
    balances = drained(cluster)
    assert sum(balances.values()) == cluster.config.expected_total
    epochs = {cluster.node_status(node).epoch for node in cluster.node_ids}
    if record["outcome"] == "complete":
        assert balances == expected_after_restore(s)
        assert epochs == {record["epoch"]}
    else:
        assert balances == dict(before)
        assert epochs == {epoch_before}
    t = snapshot(cluster, ["n1"], f"after-{record['restore']}")
    assert_verified(cluster, t)
    assert t["epoch"] == epochs.pop()


NODE_STEPS = {  # CL_CRASH_AT step of n3 -> the outcome (n3 restarted at once, except:)
    "before-prepare": {"aborted"},  # n3 restarted after the prepare deadline
    # n3 stored its yes vote and died: back within the prepare deadline it votes again
    "after-prepare": {"complete"},
    "before-commit": {"complete"},
    "after-commit": {"complete"},
}
COLLECTOR_STEPS = {
    "after-preparing": {"aborted"},
    "after-votes": {"aborted"},
    "after-commit-point": {"complete"},
    "after-first-ack": {"complete"},
}


def paused_verified_snapshot(
    cluster: LocalCluster, snapshot_id: str
) -> tuple[dict[str, Any], dict[str, int], int]:
    """Pause, take a verified snapshot at n1, drain: (its document, drained balances, epoch)."""
    pause(cluster)
    s = snapshot(cluster, ["n1"], snapshot_id)
    assert_verified(cluster, s)
    before = drained(cluster)
    return s, before, cluster.node_status("n1").epoch


def restart_armed(cluster: LocalCluster, name: str, step: str) -> None:
    """Restart `name` (a node or the collector) with CL_CRASH_AT set, so that
    it SIGKILLs itself at `step`."""
    cluster.stop_process(name)
    cluster.env["CL_CRASH_AT"] = f"{name}:{step}"
    try:
        if name == COLLECTOR:
            cluster.start_collector()
        else:
            cluster.start_node(name)
        cluster.wait_healthy([name])
    finally:
        del cluster.env["CL_CRASH_AT"]


@pytest.mark.parametrize("step", sorted(NODE_STEPS))
def test_a_node_killed_at_each_restore_step_completes_or_rolls_back(
    cluster: LocalCluster, step: str
) -> None:
    s, before, epoch_before = paused_verified_snapshot(cluster, f"s-node-{step}")
    restart_armed(cluster, "n3", step)
    number = next_restore_number(cluster)
    request_restore(cluster, s["snapshot_id"])
    process = cluster.processes["n3"]
    wait_until(lambda: process.poll() is not None, 30, what=f"n3 to crash at {step}")
    assert process.returncode == -9
    cluster.kill_node("n3")  # reaps it (closes its log)
    if step == "before-prepare":
        # back only after the prepare deadline: the coordinator has decided to abort
        wait_until(lambda: phase_of(cluster, number) == "aborting", 30, what="the abort")
    cluster.start_node("n3")
    record = wait_restore_finished(cluster, number)
    assert record["outcome"] in NODE_STEPS[step], record
    check_outcome(cluster, record, before, s, epoch_before)


@pytest.mark.parametrize("step", sorted(COLLECTOR_STEPS))
def test_the_collector_killed_at_each_restore_step_completes_or_rolls_back(
    cluster: LocalCluster, step: str
) -> None:
    s, before, epoch_before = paused_verified_snapshot(cluster, f"s-coll-{step}")
    restart_armed(cluster, COLLECTOR, step)
    number = next_restore_number(cluster)
    request_restore(cluster, s["snapshot_id"])
    process = cluster.processes["collector"]
    wait_until(lambda: process.poll() is not None, 30, what=f"collector to crash at {step}")
    assert process.returncode == -9
    cluster.kill_collector()  # reaps it (closes its log)
    cluster.start_collector()
    cluster.wait_healthy(["collector"])
    record = wait_restore_finished(cluster, number)
    assert record["outcome"] in COLLECTOR_STEPS[step], record
    check_outcome(cluster, record, before, s, epoch_before)


# ------------------------------------------------------------------- rejoin


def test_a_node_whose_data_dir_was_wiped_is_stale_then_rejoins_by_restore(
    cluster: LocalCluster,
) -> None:
    pause(cluster, True)
    time.sleep(0.5)
    pause(cluster)
    s = snapshot(cluster, ["n2"], "before-wipe")
    assert_verified(cluster, s)
    drained(cluster)
    cluster.stop_node("n4")
    shutil.rmtree(cluster.workdir / "data" / "n4")
    cluster.start_node("n4")

    def stale() -> Any:
        try:
            status = cluster.node_status("n4")
        except grpc.RpcError:
            return None
        return status if status.restore_phase == "stale" else None

    status = wait_until(stale, 20, interval=0.2, what="n4 to find itself stale")
    assert "stale" in status.not_serving_reason
    assert check(cluster.address("n4"), timeout=1.0, tls=cluster.operator_tls,
                 target=cluster.identity_of("n4")) is not None  # NOT_SERVING  # fmt: skip
    # A stale node originates nothing: no snapshot starts there.
    outcome = take_snapshot(
        cluster.config, cluster.collector_address, ["n4"], "from-a-stale-node",
        wait=False, tls=cluster.operator_tls,
    )  # fmt: skip
    (refused,) = outcome.start_errors
    assert refused.error.startswith("FAILED_PRECONDITION: n4 is not serving"), refused
    cluster.stop_node("n4")
    number = next_restore_number(cluster)
    # The restore resumes a stale node's workload (staleness is no pause it chose);
    # without transfers of its own the balances can be compared exactly.
    cluster.env.update(CL_REJOIN="1", CL_MAX_TRANSFERS="0")
    try:
        cluster.start_node("n4")
    finally:
        del cluster.env["CL_REJOIN"], cluster.env["CL_MAX_TRANSFERS"]
    cluster.wait_healthy(["n4"], timeout=60)
    record = wait_restore_finished(cluster, number)
    assert (record["snapshot_id"], record["outcome"]) == ("before-wipe", "complete"), record
    assert drained(cluster) == expected_after_restore(s)
    t = snapshot(cluster, ["n4"], "after-rejoin")
    assert_verified(cluster, t)
    assert t["epoch"] == record["epoch"]


def test_a_node_started_on_an_old_copy_of_its_data_dir_rejoins_exactly(
    cluster: LocalCluster,
) -> None:
    data = cluster.workdir / "data" / "n5"
    old = cluster.workdir / "n5-old-copy"
    cluster.stop_node("n5")
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(data, old)
    cluster.start_node("n5")
    cluster.wait_healthy(["n5"])
    pause(cluster, True)
    time.sleep(1.5)  # the copy falls behind: every channel of n5 moves on
    pause(cluster)
    drained(cluster)
    s = snapshot(cluster, ["n1"], "before-old-copy")
    assert_verified(cluster, s)
    cluster.stop_node("n5")
    shutil.rmtree(data)
    shutil.copytree(old, data)
    number = next_restore_number(cluster)
    cluster.env.update(CL_REJOIN="1", CL_MAX_TRANSFERS="0")
    try:
        cluster.start_node("n5")
    finally:
        del cluster.env["CL_REJOIN"], cluster.env["CL_MAX_TRANSFERS"]
    record = wait_restore_finished(cluster, number)
    assert (record["snapshot_id"], record["outcome"]) == ("before-old-copy", "complete"), record
    assert "this node's data dir is stale" in cluster.log_tail("n5", 400)
    cluster.wait_healthy(["n5"])
    assert drained(cluster) == expected_after_restore(s)
    t = snapshot(cluster, ["n5"], "after-old-copy")
    assert_verified(cluster, t)
    assert t["epoch"] == record["epoch"]
