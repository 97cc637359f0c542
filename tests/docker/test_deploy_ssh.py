"""`cl-deploy up | snapshot | fetch | status | down` against real ssh hosts.

Two containers built from tests/docker/sshd-host/ stand in for EC2 hosts:
sshd, the Docker CLI and Compose v1 (Debian packages), the Docker engine's
socket mounted. The deploy tool logs in with a throw-away key and drives
compose there exactly as on EC2; the compose projects it starts therefore
run on the real engine, next to each other.

Two details make one engine look like several hosts:

* Each host's home directory is a host temp dir mounted at the *same* path,
  so the relative --remote-dir (``chandy-lamport``) is a path the engine can
  bind-mount ``./cluster.yaml`` from.
* Each host's "private IP" is the bridge network's gateway: every published
  port lands on the engine's host, so a container on one project's network
  reaches the other project's services there, as on EC2 a host reaches
  another's private IP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml

from tests.snapshot_check import assert_verified_snapshot, transfers_sent

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
RECIPE = Path(__file__).resolve().parent / "sshd-host"
NODES = ["n1", "n2", "n3", "n4", "n5"]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
EXPECTED_TOTAL = sum(node["balance"] for node in CLUSTER["nodes"])
ALL_CHANNELS = [(a, b) for a in NODES for b in NODES if a != b]


def base_image() -> str:
    """The project's Python base image (built from Debian packages when none can be pulled)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh"), "--base-only"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def sshd_host_image(docker_sdk) -> str:  # type: ignore[no-untyped-def]
    """tests/docker/sshd-host built once per recipe version (the tag is its hash)."""
    digest = hashlib.sha256()
    for path in sorted(RECIPE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tag = f"chandy-lamport/test-sshd-host:{digest.hexdigest()[:12]}"
    try:
        docker_sdk.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    started = time.monotonic()
    result = subprocess.run(
        [
            "docker",
            "build",
            "-q",
            "--build-arg",
            f"BASE_IMAGE={base_image()}",
            "-t",
            tag,
            str(RECIPE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"building {tag} failed:\n{result.stderr[-4000:]}"
    print(f"\n[deploy-ssh] built {tag} in {time.monotonic() - started:.1f}s")
    return tag


def bridge_gateway(docker_sdk) -> str:  # type: ignore[no-untyped-def]
    """The default bridge's gateway: an address of the engine's host seen from containers."""
    network = docker_sdk.networks.get("bridge")
    for config in network.attrs["IPAM"]["Config"]:
        if config.get("Gateway"):
            return str(config["Gateway"])
        if config.get("Subnet") and ":" not in config["Subnet"]:
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    raise AssertionError(f"no IPv4 gateway for the bridge network: {network.attrs['IPAM']}")


@dataclass
class SshHosts:
    hosts_file: Path
    known_hosts: Path
    ports: dict[str, int]
    prefix: str
    homes: dict[str, Path]

    def args(self, hosts_file: Path | None = None, **ports: int) -> list[str]:
        """cl-deploy's host and ssh options (and project prefix) for these hosts."""
        args = [
            "--hosts",
            str(hosts_file or self.hosts_file),
            "--known-hosts",
            str(self.known_hosts),
            "--project-prefix",
            self.prefix,
        ]
        overrides = {name.replace("_", "-"): port for name, port in ports.items()}
        for name, port in {**self.ports, **overrides}.items():
            args += ["--ssh-port", f"{name}={port}"]
        return args

    def projects(self) -> list[str]:
        return [f"{self.prefix}-{name}" for name in self.homes]


@pytest.fixture
def ssh_hosts(docker_sdk, project_image, sshd_host_image, tmp_path) -> Iterator[SshHosts]:  # type: ignore[no-untyped-def]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public_key = (tmp_path / "id_ed25519.pub").read_text().strip()
    gateway = bridge_gateway(docker_sdk)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"cldeploy{run_id}"
    containers = []
    homes: dict[str, Path] = {}
    ports: dict[str, int] = {}
    hosts = []
    try:
        for index in range(2):
            name = f"host-{index}"
            home = tmp_path / f"home-{name}"
            home.mkdir(mode=0o755)
            homes[name] = home
            container = docker_sdk.containers.run(
                sshd_host_image,
                name=f"{prefix}-sshd-{index}",
                detach=True,
                environment={"AUTHORIZED_KEY": public_key, "HOME_DIR": str(home)},
                volumes={
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                    str(home): {"bind": str(home), "mode": "rw"},
                },
                ports={"22/tcp": ("127.0.0.1", None)},
                labels={"chandy-lamport.test": prefix},
            )
            containers.append(container)
            container.reload()
            ports[name] = int(container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
            hosts.append({"name": name, "public_ip": "127.0.0.1", "private_ip": gateway})
        wait_for_sshd(containers)
        # Recorded "at provision time", as `cl-deploy provision` reads them from the
        # EC2 console: the keys sshd really has. ssh then accepts only these.
        for host, container in zip(hosts, containers, strict=True):
            result = container.exec_run(["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"])
            assert result.exit_code == 0, result.output
            host["host_keys"] = [
                " ".join(line.split()[:2]) for line in result.output.decode().splitlines()
            ]
        hosts_file = tmp_path / "hosts.json"
        hosts_file.write_text(
            json.dumps(
                {
                    "schema_version": 1,
                    "ssh_user": "root",
                    "key_path": str(key),
                    "hosts": hosts,
                }
            )
        )
        yield SshHosts(hosts_file, tmp_path / "known_hosts", ports, prefix, homes)
    finally:
        # Everything, even when the test failed half-way (the test checks that
        # `down --volumes` alone left nothing; this is the safety net).
        remove_projects(docker_sdk, [f"{prefix}-{name}" for name in homes])
        for container in containers:
            container.remove(force=True, v=True)


def wait_for_sshd(containers: list[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for container in containers:
        while True:
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            result = container.exec_run(
                ["sh", "-c", "test -s /etc/ssh/ssh_host_ed25519_key.pub && pgrep -x sshd"]
            )
            if result.exit_code == 0:
                break
            assert time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.3)


def remove_projects(docker_sdk, projects: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Remove whatever the projects still have; return what there was (should be nothing)."""
    found = []
    for project in projects:
        label = {"label": f"com.docker.compose.project={project}"}
        for container in docker_sdk.containers.list(all=True, filters=label):
            found.append(f"container {container.name}")
            container.remove(force=True, v=True)
        for network in docker_sdk.networks.list(filters=label):
            found.append(f"network {network.name}")
            network.remove()
        for volume in docker_sdk.volumes.list(filters=label):
            found.append(f"volume {volume.name}")
            volume.remove(force=True)
    return found


def cl_deploy(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    print(
        f"\n$ cl-deploy {args[0]} ... -> exit {result.returncode} "
        f"in {time.monotonic() - started:.1f}s\n{result.stdout}{result.stderr}"
    )
    return result


def test_up_snapshot_fetch_status_down_over_ssh(  # type: ignore[no-untyped-def]
    ssh_hosts: SshHosts, docker_sdk, tmp_path
) -> None:
    common = ssh_hosts.args()

    up = cl_deploy("up", *common, "--always-ship-image", "--health-timeout", "120")
    assert up.returncode == 0, up.stderr
    for step in ("host-0: loading image", "host-1: loading image", "all 6 services healthy"):
        assert step in up.stderr
    placed = {}
    for project in ssh_hosts.projects():
        label = {"label": f"com.docker.compose.project={project}"}
        placed[project] = sorted(
            c.labels["com.docker.compose.service"]
            for c in docker_sdk.containers.list(filters=label)
        )
    assert placed == {
        f"{ssh_hosts.prefix}-host-0": ["collector", "n1", "n3", "n5"],
        f"{ssh_hosts.prefix}-host-1": ["n2", "n4"],
    }
    rendered = yaml.safe_load(
        (ssh_hosts.homes["host-1"] / "chandy-lamport" / "cluster.yaml").read_text()
    )
    assert rendered["collector"].endswith(":50050") and not rendered["collector"].startswith("c")

    time.sleep(2)  # money on the wire, across hosts
    snap = cl_deploy("snapshot", *common, "--snapshot-id", "deploy-e2e", timeout=180)
    assert snap.returncode == 0, snap.stdout + snap.stderr
    assert "deploy-e2e: COMPLETE" in snap.stdout

    out = tmp_path / "fetched"
    fetch = cl_deploy("fetch", *common, "--out", str(out))
    assert fetch.returncode == 0, fetch.stderr
    assert sorted(p.name for p in out.iterdir()) == ["deploy-e2e.json", "latest.json"]
    document = json.loads((out / "deploy-e2e.json").read_text())
    assert_verified_snapshot(document, EXPECTED_TOTAL, NODES, ALL_CHANNELS)
    assert transfers_sent(document) > 0, "the workload is not running"
    assert json.loads((out / "latest.json").read_text())["snapshot_id"] == "deploy-e2e"

    status = cl_deploy("status", *common)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = [line.split() for line in status.stdout.splitlines()[1:] if line.startswith("host-")]
    assert sorted((row[0], row[1], row[2], row[3]) for row in rows) == sorted(
        [("host-0", s, "running", "healthy") for s in ("collector", "n1", "n3", "n5")]
        + [("host-1", s, "running", "healthy") for s in ("n2", "n4")]
    )

    again = cl_deploy("up", *common)  # idempotent: same image, same files
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("image chandy-lamport:latest already present") == 2
    assert "recreating" not in again.stderr

    moved = cl_deploy("up", *common, "--assign", "n2=host-0")
    assert moved.returncode == 1
    assert "moving n2 from host-1 to host-0 would lose its state" in moved.stderr

    down = cl_deploy("down", *common, "--volumes")
    assert down.returncode == 0, down.stderr
    leftovers = remove_projects(docker_sdk, ssh_hosts.projects())
    assert leftovers == [], f"`cl-deploy down --volumes` left these behind: {leftovers}"


def test_unreachable_host_is_named_in_the_error(ssh_hosts: SshHosts) -> None:
    # Port 1 on 127.0.0.1: nothing listens there, so ssh to host-1 fails.
    result = cl_deploy("up", *ssh_hosts.args(host_1=1), "--ready-timeout", "3", timeout=120)
    assert result.returncode == 1
    error = result.stderr.split("error:", 1)[-1]
    assert "host-1: checking Docker: cannot reach the host over ssh" in error
    assert "host-0" not in error


def test_host_keys_are_pinned_not_trusted_on_first_use(ssh_hosts: SshHosts, tmp_path: Path) -> None:
    hosts = json.loads(ssh_hosts.hosts_file.read_text())
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    wrong = json.loads(json.dumps(hosts))
    wrong["hosts"][1]["host_keys"] = [
        " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    ]
    wrong_file = tmp_path / "wrong-hosts.json"
    wrong_file.write_text(json.dumps(wrong))
    result = cl_deploy("status", *ssh_hosts.args(hosts_file=wrong_file), timeout=120)
    assert result.returncode == 1
    assert "host-1" in result.stderr and "not the one recorded in the hosts file" in result.stderr

    unknown = json.loads(json.dumps(hosts))
    for host in unknown["hosts"]:
        host.pop("host_keys")
    unknown_file = tmp_path / "unknown-hosts.json"
    unknown_file.write_text(json.dumps(unknown))
    result = cl_deploy("status", *ssh_hosts.args(hosts_file=unknown_file), timeout=120)
    assert result.returncode == 1
    assert (
        "its ssh host key is unknown" in result.stderr and "--trust-on-first-use" in result.stderr
    )
    assert not ssh_hosts.known_hosts.exists()  # nothing was trusted on first use
