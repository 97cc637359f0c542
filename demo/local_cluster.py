"""A whole cluster as local processes on 127.0.0.1: the demo and the integration tests use it.

    with LocalCluster(Path(".demo"), nodes=5, topology="complete") as cluster:
        cluster.start()                # collector + every node, then wait_healthy()
        cluster.kill_node("n3")        # SIGKILL
        cluster.start_node("n3")       # same data dir: the node resumes its state
        cluster.balances()             # {"n1": 1000, ...} from Node.GetStatus

Mutual TLS by default: the cluster's CA and certificates are created (once,
`cl-certs ensure`) in `<workdir>/tls/`, next to the cluster file, where
every process finds its own; `operator_tls` is the operator certificate the
probes and the initiator use. `tls=False` runs everything in plaintext.

Every process gets its own log file under `<workdir>/logs/` (appended to
across restarts). Children run in their own session, so a Ctrl-C at the
terminal reaches only the orchestrating process, which stops them in order;
on Linux they also receive SIGTERM if the orchestrating process dies
(PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import grpc
import yaml

from certs import identity
from certs.store import CertDir, cluster_identities
from common.config import ClusterConfig, load_cluster
from common.generate import node_ids
from common.healthcheck import check
from common.net import CHANNEL_OPTIONS, free_ports
from common.tls import TlsFiles, open_channel
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

COLLECTOR = "collector"
STOP_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class ClusterError(Exception):
    """A process of the local cluster did not start or did not become healthy."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalCluster:
    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        nodes: int = 5,
        topology: str = "complete",
        balance: int = 1000,
        transfer_rate: float = 10.0,
        max_amount: int = 50,
        snapshot_timeout: float = 30.0,
        link_delay_ms: float = 0.0,
        snapshot_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        tls: bool = True,
    ) -> None:
        if nodes < 2:
            raise ValueError("a cluster needs at least 2 nodes")
        self.workdir = Path(workdir).resolve()
        for sub in ("data", "logs"):  # a fresh cluster: no state from an earlier run
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.snapshot_dir = Path(snapshot_dir or self.workdir / "snapshots").resolve()
        self.node_ids = node_ids(nodes)
        self.topology = topology
        self.balance = balance
        self.transfer_rate = transfer_rate
        self.max_amount = max_amount
        self.snapshot_timeout = snapshot_timeout
        self.link_delay_ms = link_delay_ms
        self.env = dict(env or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.config_path = self.workdir / "cluster.yaml"
        self.config: ClusterConfig = self.write_config()
        self.certs = CertDir(self.workdir / "tls")
        self.tls = tls
        if tls:
            self.certs.ensure(cluster_identities(self.node_ids), dt.datetime.now(dt.UTC))
        else:
            self.env.setdefault("CL_PLAINTEXT", "1")

    def tls_files(self, who: identity.Identity) -> TlsFiles | None:
        """The certificate directory of `who` (None when the cluster runs plaintext)."""
        return TlsFiles.in_dir(self.certs.identity_dir(who)) if self.tls else None

    @property
    def operator_tls(self) -> TlsFiles | None:
        """The operator certificate: what the initiator and the probes present."""
        return self.tls_files(identity.operator())

    def identity_of(self, name: str) -> identity.Identity:
        return identity.collector() if name == COLLECTOR else identity.node(name)

    # ------------------------------------------------------------ config

    def write_config(self) -> ClusterConfig:
        """Pick free ports and write `<workdir>/cluster.yaml`; returns the loaded config."""
        ports = free_ports(2 * len(self.node_ids) + 2)
        # The dashboard's port and one metrics port per node (after the gRPC ports).
        self.http_port = ports[len(self.node_ids) + 1]
        self.metrics_ports = dict(zip(self.node_ids, ports[len(self.node_ids) + 2 :], strict=True))
        raw: dict[str, Any] = {
            "nodes": [
                {"id": node, "address": f"127.0.0.1:{port}", "balance": self.balance}
                for node, port in zip(self.node_ids, ports[1 : len(self.node_ids) + 1], strict=True)
            ],
            "topology": self.topology,
            "collector": f"127.0.0.1:{ports[0]}",
            "workload": {"transfer_rate": self.transfer_rate, "max_amount": self.max_amount},
            "snapshot_timeout": self.snapshot_timeout,
            "link_delay_ms": self.link_delay_ms,
        }
        self.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.config = load_cluster(self.config_path, environ={})
        return self.config

    @property
    def collector_address(self) -> str:
        return self.config.collector_address

    def metrics_url(self, node_id: str) -> str:
        """A node's Prometheus /metrics."""
        return f"http://127.0.0.1:{self.metrics_ports[node_id]}/metrics"

    @property
    def http_url(self) -> str:
        """The collector's dashboard (and /metrics, /api/...)."""
        return f"http://127.0.0.1:{self.http_port}"

    def address(self, name: str) -> str:
        return self.collector_address if name == COLLECTOR else self.config.node(name).address

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # --------------------------------------------------------- processes

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CL_LOG_FORMAT": "json"}
        for key in (
            "CL_CLUSTER_FILE", "CL_COLLECTOR_ADDRESS", "CL_TOPOLOGY", "CL_PORT", "CL_TLS_DIR",
            "CL_PLAINTEXT",
        ):  # fmt: skip
            env.pop(key, None)  # the generated file is the whole truth
        for key in list(env):
            if key.startswith("CL_NODE_"):
                del env[key]
        no_proxy = ",".join(filter(None, [env.get("no_proxy", ""), "127.0.0.1", "localhost"]))
        env["no_proxy"] = env["NO_PROXY"] = no_proxy
        env.update(self.env)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        running = self.processes.get(name)
        if running is not None and running.poll() is None:
            raise ClusterError(f"{name} is already running (pid {running.pid})")
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - closed in _reap
        log.write(f"--- starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        self.processes[name] = process
        self._logs[name] = log
        return process

    def start_collector(self) -> None:
        self._spawn(
            COLLECTOR,
            [
                sys.executable, "-m", "collector",
                "--cluster", str(self.config_path),
                "--snapshot-dir", str(self.snapshot_dir),
                "--listen-host", "127.0.0.1",
                "--http-port", str(self.http_port),
            ],
        )  # fmt: skip

    def start_node(self, node_id: str) -> None:
        """Start (or restart, with the same data directory) one node."""
        self.config.node(node_id)
        self._spawn(
            node_id,
            [
                sys.executable, "-m", "node",
                "--cluster", str(self.config_path),
                "--id", node_id,
                "--data-dir", str(self.workdir / "data" / node_id),
                "--listen-host", "127.0.0.1",
                "--metrics-port", str(self.metrics_ports[node_id]),
            ],
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        """Start the collector and every node, and wait until all are healthy."""
        self.start_collector()
        for node_id in self.node_ids:
            self.start_node(node_id)
        self.wait_healthy(timeout=timeout)

    def stop_process(self, name: str, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status."""
        process = self.processes.get(name)
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return self._reap(name)

    def kill_process(self, name: str) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        process = self.processes.get(name)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._reap(name)

    def kill_node(self, node_id: str) -> None:
        self.kill_process(node_id)

    def kill_collector(self) -> None:
        self.kill_process(COLLECTOR)

    def stop_node(self, node_id: str) -> int | None:
        return self.stop_process(node_id)

    def stop(self) -> None:
        """Stop every process this cluster started: nodes first, then the collector."""
        names = [n for n in self.processes if n != COLLECTOR]
        for name in names:
            process = self.processes[name]
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for name in names:
            self.stop_process(name)
        self.stop_process(COLLECTOR)

    def _reap(self, name: str) -> int | None:
        process = self.processes.get(name)
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()
        return None if process is None else process.returncode

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- probes

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, names: Iterable[str] | None = None, timeout: float = 30.0) -> None:
        """Block until every named process (default all started) answers SERVING."""
        waiting = list(names if names is not None else self.processes)
        deadline = time.monotonic() + timeout
        while waiting:
            name = waiting[0]
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ClusterError(
                    f"{name} is not running (exit status {code}); log {self.log_path(name)}:\n"
                    + self.log_tail(name)
                )
            tls = self.operator_tls
            target = self.identity_of(name)
            if check(self.address(name), timeout=1.0, tls=tls, target=target) is None:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{name} at {self.address(name)} not healthy after {timeout:g}s; log:\n"
                    + self.log_tail(name)
                )
            time.sleep(0.1)

    def node_status(self, node_id: str, timeout: float = 2.0) -> pb.NodeStatus:
        with open_channel(
            self.address(node_id), self.operator_tls, "node", node_id, CHANNEL_OPTIONS
        ) as channel:
            status: pb.NodeStatus = pb_grpc.NodeStub(channel).GetStatus(
                pb.GetStatusRequest(), timeout=timeout
            )
            return status

    def balances(self, timeout: float = 2.0) -> dict[str, int | None]:
        """Current balance of every node (None for a node that does not answer)."""
        balances: dict[str, int | None] = {}
        for node_id in self.node_ids:
            try:
                balances[node_id] = int(self.node_status(node_id, timeout).balance)
            except grpc.RpcError:
                balances[node_id] = None
        return balances
