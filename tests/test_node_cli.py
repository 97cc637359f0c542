"""`python -m node`: refusals with one clear line and exit 2 (78 for a data dir
made for another node or other channels); graceful SIGTERM."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from node.testing import NodeProcess, get_status, write_cluster


def run_node(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # These tests are about the CLI, not TLS (tests/test_security.py is): plaintext.
    return subprocess.run(
        [sys.executable, "-m", "node", "--log-format", "json", "--plaintext", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_unreadable_cluster_file_is_one_line_and_exit_2(tmp_path: Path):
    result = run_node("--cluster", str(tmp_path / "missing.yaml"), "--id", "a")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "missing.yaml" in result.stderr and "cannot read" in result.stderr


def test_unknown_node_id_is_one_line_and_exit_2(tmp_path: Path):
    write_cluster(tmp_path / "c.yaml", {"a": 1, "b": 1})
    result = run_node("--cluster", str(tmp_path / "c.yaml"), "--id", "zz")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'zz' is not in the cluster" in result.stderr


def test_missing_node_id_exit_2(tmp_path: Path):
    write_cluster(tmp_path / "c.yaml", {"a": 1, "b": 1})
    result = run_node("--cluster", str(tmp_path / "c.yaml"))
    assert result.returncode == 2 and "CL_NODE_ID" in result.stderr


def test_sigterm_stops_gracefully_and_data_dir_refuses_another_node(tmp_path: Path):
    cluster = tmp_path / "c.yaml"
    ports = write_cluster(cluster, {"a": 10, "b": 10})
    node = NodeProcess(cluster, "a", tmp_path / "data", ports["a"]).start()
    try:
        node.wait_healthy()
        assert get_status(ports["a"]).balance == 10
        assert node.terminate() == 0
    finally:
        node.kill()
    events = [json.loads(line)["event"] for line in node.log_path.read_text().splitlines()]
    assert "shutdown requested" in events and events[-1] == "node stopped"

    result = run_node("--cluster", str(cluster), "--id", "b", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 78  # EX_CONFIG: compose's bounded restarts cannot fix this
    assert result.stderr.strip().splitlines()[-1] == (
        f"cl-node: data dir {tmp_path / 'data'} belongs to node 'a', not 'b'"
    )


def test_data_dir_made_for_other_channels_exits_78_with_one_line(tmp_path: Path):
    """The "another topology over the old volumes" case: a distinct status, one line."""
    cluster = tmp_path / "c.yaml"
    ports = write_cluster(cluster, {"a": 10, "b": 10, "c": 10})
    node = NodeProcess(cluster, "a", tmp_path / "data", ports["a"]).start()
    try:
        node.wait_healthy()
        assert node.terminate() == 0
    finally:
        node.kill()
    write_cluster(cluster, {"a": 10, "b": 10, "c": 10}, topology="ring", ports=ports)
    result = run_node("--cluster", str(cluster), "--id", "a", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 78, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cl-node: data dir {tmp_path / 'data'} was created for channels")
    assert "down -v" in last  # what to do about it under compose


def test_port_in_use_is_one_line_and_exit_2(tmp_path: Path):
    ports = write_cluster(tmp_path / "c.yaml", {"a": 1, "b": 1})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["a"]))
        busy.listen()
        result = run_node(
            "--cluster",
            str(tmp_path / "c.yaml"),
            "--id",
            "a",
            "--listen-host",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path / "a"),
        )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"cl-node: cannot listen on 127.0.0.1:{ports['a']}")
    )


def test_bad_metrics_port_is_one_error_and_exit_2(tmp_path: Path):
    write_cluster(tmp_path / "c.yaml", {"a": 1, "b": 1})
    result = run_node(
        "--cluster", str(tmp_path / "c.yaml"), "--id", "a", "--data-dir", str(tmp_path / "a"),
        env={"PATH": "/usr/bin:/bin", "CL_METRICS_PORT": "ninety"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "'ninety' is not a port number or 'off' (CL_METRICS_PORT)" in result.stderr
    assert not (tmp_path / "a").exists()  # nothing was created


def test_metrics_port_in_use_is_one_line_and_exit_2(tmp_path: Path):
    write_cluster(tmp_path / "c.yaml", {"a": 1, "b": 1})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_node(
            "--cluster", str(tmp_path / "c.yaml"), "--id", "a", "--listen-host", "127.0.0.1",
            "--data-dir", str(tmp_path / "a"), "--metrics-port", str(port),
        )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cl-node: cannot serve metrics on 127.0.0.1:{port}"), result.stderr
