"""Real node processes on loopback (demo.local_cluster.LocalCluster).

    python -m benchmarks.cluster

A 5-node complete graph, no link delay, the workload as fast as it goes
(transfer_rate 1e6 per node), run three times: idle (transfer_rate 0), under
load with SQLite synchronous=full (the default), and under load with
synchronous=normal. It measures

- sustained transfers/s: every node's `sent` counters and `recorded_at` in two
  snapshots WINDOW seconds apart give each node's send rate; summed;
- snapshot latency seen by the initiator (BeginSnapshot, StartSnapshot at n1,
  WaitSnapshot until the document), median of up to LATENCY_SAMPLES;
- node RSS (VmRSS) at start and after the load, and CPU used by the nodes;

and checks that every snapshot is complete and verified. Every process is
stopped in a `finally`.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._common import table
from demo.local_cluster import LocalCluster
from initiator.client import take_snapshot

NODES = 5
LOAD_RATE = 1e6  # per node: as fast as the node goes
WARMUP = 3.0  # seconds of load before the first measurement
WINDOW = 8.0  # seconds between the two throughput snapshots
LATENCY_SAMPLES = 10
LATENCY_BUDGET = 20.0  # seconds: fewer samples if snapshots are slower than this allows
CLOCK_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


@dataclass
class Result:
    name: str
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    transfers_per_s: float = 0.0
    cpu_cores: float = 0.0  # node CPU seconds per wall second over the window
    latencies: list[float] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)  # recorded messages per snapshot
    backlog: int = 0  # unacknowledged frames, all nodes, at the end

    @property
    def latency(self) -> float:
        return statistics.median(self.latencies)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def node_pids(cluster: LocalCluster) -> list[int]:
    return [cluster.processes[node].pid for node in cluster.node_ids]


def snapshot(cluster: LocalCluster, snapshot_id: str) -> tuple[float, dict[str, Any]]:
    """(seconds the initiator waited, the verified document)."""
    start = time.monotonic()
    outcome = take_snapshot(
        cluster.config,
        cluster.collector_address,
        ["n1"],
        snapshot_id,
        timeout=60,
        tls=cluster.operator_tls,
    )
    seconds = time.monotonic() - start
    document = outcome.document
    if document is None or document["status"] != "complete":
        raise RuntimeError(f"snapshot {snapshot_id} did not complete: {document}")
    if not document["verification"]["ok"]:
        raise RuntimeError(f"snapshot {snapshot_id} failed verification")
    return seconds, document


def send_rates(first: dict[str, Any], second: dict[str, Any]) -> float:
    """Sum over nodes of (sent in second - sent in first) / (time between their records)."""
    total = 0.0
    for node, late in second["nodes"].items():
        early = first["nodes"][node]
        sent = sum(late["sent"].values()) - sum(early["sent"].values())
        elapsed = (
            datetime.fromisoformat(late["recorded_at"])
            - datetime.fromisoformat(early["recorded_at"])
        ).total_seconds()
        total += sent / elapsed
    return total


def in_flight(document: dict[str, Any]) -> int:
    return sum(len(channel["messages"]) for channel in document["channels"])


def run(workdir: Path, name: str, rate: float, synchronous: str) -> Result:
    result = Result(name)
    cluster = LocalCluster(
        workdir / name,
        nodes=NODES,
        topology="complete",
        transfer_rate=rate,
        link_delay_ms=0,
        env={"CL_DB_SYNCHRONOUS": synchronous},
    )
    try:
        cluster.start()
        pids = node_pids(cluster)
        result.rss_start_mb = statistics.mean(rss_mb(pid) for pid in pids)
        time.sleep(WARMUP if rate else 0.5)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        wall_before = time.monotonic()
        _, first = snapshot(cluster, f"{name}-a")
        time.sleep(WINDOW)
        _, second = snapshot(cluster, f"{name}-b")
        result.cpu_cores = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / (
            time.monotonic() - wall_before
        )
        result.transfers_per_s = send_rates(first, second) if rate else 0.0
        deadline = time.monotonic() + LATENCY_BUDGET
        while len(result.latencies) < LATENCY_SAMPLES and time.monotonic() < deadline:
            seconds, document = snapshot(cluster, f"{name}-{len(result.latencies)}")
            result.latencies.append(seconds)
            result.in_flight.append(in_flight(document))
        result.rss_end_mb = statistics.mean(rss_mb(pid) for pid in pids)
        result.backlog = sum(
            cluster.node_status(node).unacknowledged_frames for node in cluster.node_ids
        )
    finally:
        cluster.stop()
    return result


def main() -> None:
    started = time.monotonic()
    print(f"# benchmarks.cluster: {NODES}-node complete graph of real processes on loopback")
    workdir = Path(tempfile.mkdtemp(prefix="cl-bench-"))
    try:
        idle = run(workdir, "idle", 0, "full")
        full = run(workdir, "load-full", LOAD_RATE, "full")
        normal = run(workdir, "load-normal", LOAD_RATE, "normal")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = (idle, full, normal)

    table(
        f"Throughput over a {WINDOW:g} s window (workload rate {LOAD_RATE:g}/s per node)",
        ["run", "transfers/s (all nodes)", "ratio vs full", "node CPU (cores)",
         "unacked frames at end"],
        [[r.name, f"{r.transfers_per_s:,.0f}",
          f"{r.transfers_per_s / full.transfers_per_s:.2f}" if r.transfers_per_s else "-",
          f"{r.cpu_cores:.2f}", r.backlog] for r in results],
    )  # fmt: skip
    table(
        "Snapshot latency seen by the initiator (start at n1 -> verified document)",
        ["run", "samples", "median s", "min s", "max s", "ratio vs idle",
         "median in-flight msgs recorded"],
        [[r.name, len(r.latencies), f"{r.latency:.3f}", f"{min(r.latencies):.3f}",
          f"{max(r.latencies):.3f}", f"{r.latency / idle.latency:.1f}",
          f"{statistics.median(r.in_flight):,.0f}"] for r in results],
    )  # fmt: skip
    table(
        "Node RSS (mean of the 5 nodes, VmRSS)",
        ["run", "MB at start", "MB after", "ratio after/start"],
        [[r.name, f"{r.rss_start_mb:.1f}", f"{r.rss_end_mb:.1f}",
          f"{r.rss_end_mb / r.rss_start_mb:.2f}"] for r in results],
    )  # fmt: skip
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
