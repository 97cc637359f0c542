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


PRIVATE_DOCKER_CONFIG = REPO / "build" / "docker-config"  # scripts/install-compose-v2.sh


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(message: str) -> None:
    """A failure in CI (the Docker tests never skip there), a skip elsewhere."""
    if in_ci():
        pytest.fail(message + " (CI=true: the end-to-end tests must run)", pytrace=False)
    pytest.skip(message)


def _version(argv: list[str], env: dict[str, str]) -> str | None:
    try:
        result = subprocess.run(
            [*argv, "version", "--short"], capture_output=True, text=True, timeout=120,
            env=dict(os.environ, **env),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().lstrip("v") if result.returncode == 0 else None


def compose_command(kind: str = "auto") -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of Compose `kind`: "v2" (the `docker compose`
    plugin, system-wide or the private one under build/docker-config), "v1"
    (`docker-compose` 1.x), or "auto" (v2 if installed, else v1)."""
    if kind in ("v2", "auto"):
        if _version(["docker", "compose"], {}):
            return ["docker", "compose"], {}
        private = {"DOCKER_CONFIG": str(PRIVATE_DOCKER_CONFIG)}
        if (PRIVATE_DOCKER_CONFIG / "cli-plugins" / "docker-compose").exists() and _version(
            ["docker", "compose"], private
        ):
            return ["docker", "compose"], private
        if kind == "v2":
            unavailable("Compose v2 is not installed (`make compose-v2` installs it privately)")
    if shutil.which("docker-compose"):
        version = _version(["docker-compose"], {}) or ""
        if kind == "auto" or version.startswith("1."):
            return ["docker-compose"], {}
    unavailable(f"Compose {kind} is not installed")
    raise AssertionError("unreachable")


def docker_client():  # type: ignore[no-untyped-def]
    """A Docker SDK client, or a failure (CI) / skip (elsewhere) saying why not."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as error:  # any failure here means "no usable engine"
        unavailable(f"Docker engine not usable: {error}")


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

    def __init__(self, docker_sdk, override: Path, name: str, kind: str = "auto") -> None:  # type: ignore[no-untyped-def]
        self.sdk = docker_sdk
        self.name = name
        argv, self.compose_env = compose_command(kind)
        self.kind = "v1" if argv == ["docker-compose"] else "v2"
        self.base = argv + [
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
        env = dict(os.environ, **self.compose_env)
        env.update(PUBLISH_ADDRESS="127.0.0.1", PUBLISH_PORT_COLLECTOR_HTTP="")
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

    # 300 s: a 2-core host shared with other test runs (load ~80) took over 120 s.
    def wait_healthy(self, services: list[str], timeout: float = 300) -> float:
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
def compose_project(  # type: ignore[no-untyped-def]
    docker_sdk, project_image, tmp_path_factory, request
) -> Iterator[ComposeProject]:
    """A compose project; `indirect` parametrization with "v1" / "v2" picks the Compose."""
    kind = getattr(request, "param", "auto")
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
    project = ComposeProject(docker_sdk, override, f"cle2e{uuid.uuid4().hex[:8]}", kind)
    try:
        yield project
    finally:
        project.run("--profile", "tools", "down", "-v", "--remove-orphans", "-t", "5", check=False)
        leftovers = project.leftovers()
        assert not leftovers, f"`down -v` left these behind: {leftovers}"
