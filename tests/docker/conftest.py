"""Fixtures for the Docker end-to-end tests: a real compose project.

These tests never skip in CI: with CI=true a missing or broken Docker engine
is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = "chandy-lamport:latest"


def compose_command() -> list[str]:
    """`docker compose` (v2) when installed, else `docker-compose` (v1.29)."""
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if v2.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")


def docker_client():  # type: ignore[no-untyped-def]
    """A Docker SDK client, or a failure (CI) / skip (elsewhere) saying why not."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as error:  # any failure here means "no usable engine"
        message = f"Docker engine not usable: {error}"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message + " (CI=true: the end-to-end tests must run)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def docker_sdk():  # type: ignore[no-untyped-def]
    client = docker_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def project_image(docker_sdk) -> str:  # type: ignore[no-untyped-def]
    """The project image, built by the project's own script when missing."""
    subprocess.run(["bash", str(REPO / "scripts" / "build-image.sh")], check=True, cwd=REPO)
    docker_sdk.images.get(IMAGE)
    return IMAGE


class ComposeProject:
    """One throw-away compose project over the repository's compose.yml."""

    def __init__(self, docker_sdk, override: Path, name: str) -> None:  # type: ignore[no-untyped-def]
        self.sdk = docker_sdk
        self.name = name
        self.base = compose_command() + [
            "-p",
            name,
            "-f",
            str(REPO / "compose.yml"),
            "-f",
            str(override),
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        # PUBLISH_PORT_COLLECTOR_HTTP empty: the dashboard on a free port, not 8080.
        env = dict(os.environ, PUBLISH_ADDRESS="127.0.0.1", PUBLISH_PORT_COLLECTOR_HTTP="")
        result = subprocess.run(
            self.base + list(args),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result

    def container(self, service: str):  # type: ignore[no-untyped-def]
        found = self.sdk.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.name}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        assert found, f"no container for service {service}"
        return found[0]

    def wait_healthy(self, services: list[str], timeout: float = 120) -> float:
        start = time.monotonic()
        pending = set(services)
        while pending:
            for service in sorted(pending):
                container = self.container(service)
                container.reload()
                if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                    pending.discard(service)
            if time.monotonic() - start > timeout:
                raise AssertionError(f"not healthy after {timeout}s: {sorted(pending)}")
            time.sleep(0.5)
        return time.monotonic() - start

    def leftovers(self) -> list[str]:
        label = {"label": f"com.docker.compose.project={self.name}"}
        found = [f"container {c.name}" for c in self.sdk.containers.list(all=True, filters=label)]
        found += [f"network {n.name}" for n in self.sdk.networks.list(filters=label)]
        found += [f"volume {v.name}" for v in self.sdk.volumes.list(filters=label)]
        return found


@pytest.fixture(scope="module")
def compose_project(docker_sdk, project_image, tmp_path_factory) -> Iterator[ComposeProject]:  # type: ignore[no-untyped-def]
    override = tmp_path_factory.mktemp("compose") / "override.yml"
    # A short snapshot timeout so the "node down" case aborts quickly, and a
    # brisk workload so channels really carry money while snapshots run.
    override.write_text(
        "services:\n"
        "  collector:\n"
        "    environment:\n"
        "      CL_SNAPSHOT_TIMEOUT: '10'\n"
        + "".join(f"  n{i}:\n    environment:\n      CL_TRANSFER_RATE: '20'\n" for i in range(1, 6))
    )
    project = ComposeProject(docker_sdk, override, f"cle2e{uuid.uuid4().hex[:8]}")
    try:
        yield project
    finally:
        project.run("--profile", "tools", "down", "-v", "--remove-orphans", "-t", "5", check=False)
        leftovers = project.leftovers()
        assert not leftovers, f"`down -v` left these behind: {leftovers}"
