"""Helpers for tests and benchmarks that run real nodes on loopback ports.

Nothing here is used by a running node; it exists so tests start clusters the
same way everywhere (`trio.testing` style).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml

from common.healthcheck import check
from common.net import free_ports
from node.channels import CLIENT_OPTIONS
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A `wait_*` helper gave up."""


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    return free_ports(1)[0]


def write_cluster(
    path: Path,
    balances: Mapping[str, int],
    *,
    channels: Iterable[tuple[str, str]] | None = None,
    topology: str = "complete",
    transfer_rate: float = 0.0,
    max_amount: int = 50,
    collector_port: int | None = None,
    ports: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Write a cluster YAML with every node on 127.0.0.1; returns id -> port."""
    ports = dict(ports) if ports else {node_id: free_port() for node_id in balances}
    doc: dict[str, Any] = {
        "nodes": [
            {"id": node_id, "address": f"127.0.0.1:{ports[node_id]}", "balance": balance}
            for node_id, balance in balances.items()
        ],
        "collector": f"127.0.0.1:{collector_port or free_port()}",
        "workload": {"transfer_rate": transfer_rate, "max_amount": max_amount},
    }
    if channels is None:
        doc["topology"] = topology
    else:
        doc["channels"] = [list(pair) for pair in channels]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return ports


def wait_until(
    probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call `probe` until it returns something truthy; WaitTimeout after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout}s waiting for {what or probe!r} (last: {last!r})")


def get_status(port: int, timeout: float = 2.0) -> pb.NodeStatus:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
        status: pb.NodeStatus = pb_grpc.NodeStub(channel).GetStatus(
            pb.GetStatusRequest(), timeout=timeout
        )
        return status


def wait_drained(ports: Mapping[str, int], timeout: float = 10.0) -> dict[str, pb.NodeStatus]:
    """Wait until no node has an unacknowledged frame; returns the statuses."""

    def probe() -> dict[str, pb.NodeStatus] | None:
        try:
            statuses = {node_id: get_status(port) for node_id, port in ports.items()}
        except grpc.RpcError:
            return None
        if any(s.unacknowledged_frames for s in statuses.values()):
            return None
        return statuses

    return wait_until(probe, timeout, interval=0.1, what="channels to drain")


class NodeProcess:
    """`python -m node` as a subprocess, with its stderr (logs) in a file."""

    def __init__(
        self,
        cluster: Path,
        node_id: str,
        data_dir: Path,
        port: int,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        """`tls_dir`: this node's certificate directory; None runs it in plaintext."""
        self.node_id = node_id
        self.port = port
        self.args = [
            sys.executable,
            "-m",
            "node",
            "--cluster",
            str(cluster),
            "--id",
            node_id,
            "--data-dir",
            str(data_dir),
            "--listen-host",
            "127.0.0.1",
            "--log-format",
            "json",
            *(["--tls-dir", str(tls_dir)] if tls_dir is not None else ["--plaintext"]),
            *extra_args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or data_dir.parent / f"{node_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.args, stdout=log_file, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def wait_healthy(self, timeout: float = 10.0) -> None:
        def probe() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise WaitTimeout(f"{self.node_id} exited with {self.process.returncode}")
            return check(f"127.0.0.1:{self.port}", timeout=0.5) is None

        wait_until(probe, timeout, interval=0.1, what=f"{self.node_id} to be healthy")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        self._signal(signal.SIGKILL)

    def terminate(self, timeout: float = 10.0) -> int:
        self._signal(signal.SIGTERM)
        assert self.process is not None
        return self.process.wait(timeout)

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            if signum == signal.SIGKILL:
                self.process.wait(10)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
