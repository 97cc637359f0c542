"""The compose generator refuses to write a cluster over a project's old node volumes.

With a real Docker engine: a volume labelled as compose labels a project's
volumes is what `python -m common.generate` must find (no image needed).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.conftest import REPO, docker_client

pytestmark = pytest.mark.docker


@pytest.fixture
def project_with_node_volume() -> Iterator[str]:
    docker_client().close()  # fails in CI, skips elsewhere, without an engine
    project = f"clgen{uuid.uuid4().hex[:8]}"
    volume = f"{project}_n1-data"
    subprocess.run(
        ["docker", "volume", "create", "--label", f"com.docker.compose.project={project}",
         volume],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield project
    finally:
        subprocess.run(["docker", "volume", "rm", volume], check=True, capture_output=True)


def generate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.generate", "--nodes", "3", "--topology", "ring",
         "--cluster-out", str(tmp_path / "c.yaml"), "--compose-out", str(tmp_path / "d.yml"),
         *args],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip


def test_refuses_over_a_projects_node_volumes_and_writes_nothing(
    project_with_node_volume: str, tmp_path: Path
) -> None:
    project = project_with_node_volume
    refused = generate(tmp_path, "--project", project)
    assert refused.returncode == 2, refused.stderr
    assert f"{project}_n1-data" in refused.stderr and "down -v" in refused.stderr
    assert refused.stderr.count("\n") == 1  # one line
    assert not (tmp_path / "c.yaml").exists() and not (tmp_path / "d.yml").exists()

    other = generate(tmp_path, "--project", f"{project}x")  # another project: no volumes
    assert other.returncode == 0, other.stderr
    forced = generate(tmp_path, "--project", project, "--force")
    assert forced.returncode == 0, forced.stderr


def test_default_project_is_composes_directory_name(
    project_with_node_volume: str, tmp_path: Path
) -> None:
    """Without --project, the name compose itself would give the output's directory."""
    directory = tmp_path / project_with_node_volume.upper()  # compose lower-cases it
    directory.mkdir()
    refused = subprocess.run(
        [sys.executable, "-m", "common.generate", "--nodes", "3",
         "--cluster-out", str(directory / "c.yaml"), "--compose-out", str(directory / "d.yml")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert project_with_node_volume in refused.stderr
