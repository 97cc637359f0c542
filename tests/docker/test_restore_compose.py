"""Restore end to end in compose (real containers, the project image, mutual TLS):
snapshot, pause, restore, exact balances, the next snapshot in the new epoch;
then a node container whose volume is deleted finds itself stale and rejoins
by a restore (CL_REJOIN=1). Never skipped in CI (tests/docker/conftest.py).

Run it under the shared Docker lock: flock /tmp/cl-docker.lock pytest -m docker ...
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.docker.conftest import ComposeProject
from tests.snapshot_check import assert_verified_snapshot

pytestmark = pytest.mark.docker

NODES = ["n1", "n2", "n3", "n4", "n5"]


def initiator(project: ComposeProject, *options: str) -> Any:
    # --no-deps: a stale node is unhealthy, and depends_on would wait for it.
    return project.run("run", "--rm", "--no-deps", "initiator", *options, check=False, timeout=180)


def status(project: ComposeProject) -> dict[str, Any]:
    result = initiator(project, "--status", "--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_drained(project: ComposeProject, timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = status(project)
        if all(isinstance(s, dict) for s in last.values()) and not any(
            int(s.get("unacknowledgedFrames", 0)) for s in last.values()
        ):
            return {node: int(s.get("balance", 0)) for node, s in last.items()}
        time.sleep(1)
    raise AssertionError(f"channels did not drain: {last}")


def read_json(project: ComposeProject, path: str) -> dict[str, Any]:
    result = project.run("exec", "-T", "collector", "cat", path)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def expected_after(document: dict[str, Any]) -> dict[str, int]:
    balances = {node: int(state["balance"]) for node, state in document["nodes"].items()}
    for channel in document["channels"]:
        balances[channel["to"]] += sum(int(m["amount"]) for m in channel["messages"])
    return balances


@pytest.fixture(scope="module")
def cluster(docker_sdk, project_image, tmp_path_factory) -> Iterator[ComposeProject]:  # type: ignore[no-untyped-def]
    override = tmp_path_factory.mktemp("compose-restore") / "override.yml"
    override.write_text(
        "services:\n"
        + "".join(
            f"  n{i}:\n    environment:\n      CL_TRANSFER_RATE: '20'\n      CL_REJOIN: '1'\n"
            for i in range(1, 6)
        )
    )
    project = ComposeProject(docker_sdk, override, f"clrestore{uuid.uuid4().hex[:8]}")
    try:
        project.run("up", "-d")
        project.wait_healthy(["collector", *NODES])
        time.sleep(2)
        yield project
    finally:
        project.run("--profile", "tools", "down", "-v", "--remove-orphans", "-t", "5", check=False)
        leftovers = project.leftovers()
        assert not leftovers, f"`down -v` left these behind: {leftovers}"


def test_restore_in_compose_gives_the_exact_balances(cluster: ComposeProject) -> None:
    taken = initiator(cluster, "--snapshot-id", "r-s1")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    s1 = read_json(cluster, "/snapshots/r-s1.json")
    total = sum(int(state["balance"]) for state in s1["nodes"].values()) + sum(
        int(m["amount"]) for ch in s1["channels"] for m in ch["messages"]
    )
    time.sleep(2)
    paused = initiator(cluster, "--pause-workload")
    assert paused.returncode == 0 and "workload paused on n1, n2, n3, n4, n5" in paused.stdout
    wait_drained(cluster)
    restored = initiator(cluster, "--restore", "r-s1")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restore 1: snapshot r-s1 -> epoch 1 (from 0): complete" in restored.stdout
    assert wait_drained(cluster) == expected_after(s1)
    record = read_json(cluster, "/snapshots/restores/1.json")
    assert (record["outcome"], record["epoch"]) == ("complete", 1)
    taken = initiator(cluster, "--snapshot-id", "r-s2")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "epoch 1" in taken.stdout.splitlines()[0]
    s2 = read_json(cluster, "/snapshots/r-s2.json")
    assert_verified_snapshot(s2, total, NODES, {(a, b) for a in NODES for b in NODES if a != b})
    assert s2["epoch"] == 1
    assert {n: int(s["balance"]) for n, s in s2["nodes"].items()} == expected_after(s1)


def test_a_node_whose_volume_is_deleted_rejoins_by_restore(cluster: ComposeProject) -> None:
    cluster.run("stop", "-t", "5", "n3")
    cluster.run("rm", "-f", "n3")
    cluster.sdk.volumes.get(f"{cluster.name}_n3-data").remove()
    cluster.run("up", "-d", "--no-deps", "n3")
    cluster.wait_healthy(["n3"], timeout=120)  # stale first, then restored (CL_REJOIN=1)
    deadline = time.monotonic() + 60
    while True:
        listed = initiator(cluster, "--restores", "--json")
        records = json.loads(listed.stdout) if listed.returncode == 0 else []
        if len(records) >= 2 and records[-1]["outcome"] != "pending":
            break
        assert time.monotonic() < deadline, listed.stdout + listed.stderr
        time.sleep(1)
    record = records[-1]
    assert (record["snapshot_id"], record["outcome"]) == ("r-s2", "complete"), record
    logs = cluster.run("logs", "n3").stdout
    assert "this node's data dir is stale" in logs
    s2 = read_json(cluster, "/snapshots/r-s2.json")
    assert record["expected_balances"] == expected_after(s2)
    # The rejoined node runs its workload again (it had not paused itself); freeze it.
    initiator(cluster, "--pause-workload")
    balances = wait_drained(cluster)
    assert sum(balances.values()) == sum(expected_after(s2).values())
    taken = initiator(cluster, "--snapshot-id", "r-s3", "--node", "n3")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    s3 = read_json(cluster, "/snapshots/r-s3.json")
    assert s3["epoch"] == record["epoch"]
    assert s3["verification"]["ok"] is True
