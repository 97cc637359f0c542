"""`make up` for real: scripts/stack.py with Compose v1 and v2 on this host.

What a new user meets, in order: `make up` brings the stack up healthy and
prints commands that work as printed (the snapshot, the JSON, a host-side
cl-initiator through build/host/cluster.yaml and the operator certificate);
`make down` keeps the volumes; starting another topology over them fails at
once, naming the nodes (exit 78) and `make down-v`, with bounded restarts; a
collector that refuses its configuration shows its error line; `make down-v`
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.conftest import REPO, compose_command

pytestmark = pytest.mark.docker

STACK = [sys.executable, str(REPO / "scripts" / "stack.py")]
NODES = ["n1", "n2", "n3", "n4", "n5"]


class Stack:
    def __init__(self, kind: str, host_dir: Path) -> None:
        compose_command(kind)  # fails in CI, skips elsewhere, when this Compose is missing
        self.kind = kind
        self.project = f"clstack{uuid.uuid4().hex[:8]}"
        # A free port for the dashboard, not 8080; build/host/ of the checkout untouched.
        self.env = dict(os.environ, PUBLISH_PORT_COLLECTOR_HTTP="", CL_HOST_DIR=str(host_dir))

    def stack(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*STACK, *args, "--compose", self.kind, "-p", self.project],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def shell(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, shell=True, cwd=REPO, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def containers(self) -> dict[str, dict]:  # type: ignore[type-arg]
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        if not ids:
            return {}
        items = json.loads(
            subprocess.run(["docker", "inspect", *ids], capture_output=True, check=True).stdout
        )
        return {i["Config"]["Labels"]["com.docker.compose.service"]: i for i in items}

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in ("container", "network", "volume"):
            listing = ["docker", kind, "ls", "-q", "--filter", label]
            if kind == "container":
                listing.insert(3, "-a")
            found += [f"{kind} {n}" for n in subprocess.run(
                listing, capture_output=True, text=True, check=True).stdout.split()]  # fmt: skip
        return found


def printed_command(output: str, label: str) -> str:
    for line in output.splitlines():
        if line.strip().startswith(label):
            return line.split(":", 1)[1].strip().split("   (")[0]
    raise AssertionError(f"`make up` printed no {label!r} line:\n{output}")


@pytest.fixture(params=["v1", "v2"])
def stack(request, tmp_path: Path, project_image: str) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    project = Stack(request.param, tmp_path / "host")
    try:
        yield project
    finally:
        project.stack("down", "-v", timeout=300)
        assert not project.leftovers(), f"`make down-v` left: {project.leftovers()}"


def test_make_up_prints_commands_that_work_then_another_topology_fails_clearly(
    stack: Stack, tmp_path: Path
) -> None:
    started = time.monotonic()
    up = stack.stack("up", "--no-build")
    assert up.returncode == 0, up.stdout + up.stderr[-3000:]
    print(f"\n[stack {stack.kind}] make up --no-build: {time.monotonic() - started:.1f}s")
    states = stack.containers()
    assert states["certs"]["State"]["ExitCode"] == 0
    for service in ["collector", *NODES]:
        assert states[service]["State"]["Health"]["Status"] == "healthy", service

    snapshot = printed_command(up.stdout, "take a snapshot:")
    assert f"-p {stack.project}" in snapshot
    taken = stack.shell(f"{snapshot} --snapshot-id stack-1")
    assert taken.returncode == 0 and "stack-1: COMPLETE" in taken.stdout, taken.stderr
    document = json.loads(stack.shell(printed_command(up.stdout, "read its JSON:")).stdout)
    assert document["snapshot_id"] == "stack-1" and document["verification"]["ok"] is True
    assert printed_command(up.stdout, "dashboard:").startswith("http://127.0.0.1:")

    host_cluster = tmp_path / "host" / "cluster.yaml"
    assert (tmp_path / "host" / "tls" / "operator-admin" / "tls.key").stat().st_mode & 0o077 == 0
    host = subprocess.run(  # the host-side initiator, through the published ports and mTLS
        [sys.executable, "-m", "initiator", "--cluster", str(host_cluster), "--snapshot-id",
         "from-host"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert host.returncode == 0 and "from-host: COMPLETE" in host.stdout, host.stderr

    down = stack.stack("down")
    assert down.returncode == 0, down.stderr
    assert not stack.containers() and any("volume" in x for x in stack.leftovers())

    # Another topology over the kept volumes: every node refuses its data dir.
    override = tmp_path / "ring.yml"
    override.write_text(
        "services:\n"
        + "".join(f"  {n}:\n    environment:\n      CL_TOPOLOGY: ring\n" for n in NODES)
        + "  collector:\n    environment:\n      CL_TOPOLOGY: ring\n"
    )
    started = time.monotonic()
    # The nodes exit at their first look at the data dir; the generous timeout is
    # for a 2-core host shared with other test runs (load ~80 seen here).
    refused = stack.stack("up", "--no-build", "-f", str(override), "--timeout", "400")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "exit 78" in refused.stderr and "`make down-v`" in refused.stderr, refused.stderr
    assert "was created for channels" in refused.stderr  # the node's own line
    print(f"[stack {stack.kind}] ring refused in {time.monotonic() - started:.1f}s")
    # Bounded restarts: the node ends up exited with 78, not restarting forever.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        n1 = stack.containers()["n1"]
        if n1["State"]["Status"] == "exited" and n1["RestartCount"] >= 3:
            break
        time.sleep(2)
    assert n1["State"]["Status"] == "exited" and n1["State"]["ExitCode"] == 78, n1["State"]
    assert n1["RestartCount"] == 3


def test_make_up_shows_the_collectors_config_error(tmp_path: Path, project_image: str) -> None:
    stack = Stack("v1", tmp_path / "host")
    override = tmp_path / "typo.yml"
    override.write_text("services:\n  collector:\n    environment:\n      CL_TOPOLOGY: rnig\n")
    try:
        up = stack.stack("up", "--no-build", "-f", str(override), "--timeout", "400")
        assert up.returncode == 1, up.stdout + up.stderr
        assert "collector: " in up.stderr and "rnig" in up.stderr, up.stderr
        assert "make down" in up.stderr
    finally:
        stack.stack("down", "-v", "-f", str(override), timeout=300)
    assert not stack.leftovers()


def test_make_down_v_of_nothing_is_fine(tmp_path: Path) -> None:
    stack = Stack("v1", tmp_path / "host")
    result = stack.stack("down", "-v")
    assert result.returncode == 0, result.stderr
