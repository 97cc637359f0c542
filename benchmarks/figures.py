"""The figures of issue 8, each beside the floor measured in the same run.

    python -m benchmarks.figures [--quick]

Floor (measured first, in this process):
  - one-way latency of one message on a loopback gRPC stream (grpc.aio,
    plaintext, and with mutual TLS as the clusters run, which the floors use;
    ping-pong on one Channel-like stream, half the round trip, p50);
  - one SQLite commit as the node makes it (WAL, synchronous=NORMAL, the
    nodes' default, and FULL, p50);
  - the CPU of one message on that stream (both ends, mean).
  One hop = one-way + one commit (a marker is forwarded only after the
  commit of the recording it follows). One report = one-way + one fsync
  at the collector, taken as one hop. Rows run with synchronous=full use
  the FULL commit.

Figures (real processes on loopback, link delay 0, light workload):
  - snapshot latency, start -> verified document at the initiator, p50, for
    N=3, 16, 32 complete graphs (marker depth 2: initiator -> k -> j) and
    an N=64 ring (depth 64: the marker goes round to the initiator), each
    with its ratio to floor = depth x hop + report, and the CPU all the
    processes spent per snapshot (the cost that grows as N x (N-1)) beside
    its own floor, one message per marker; then N=3, N=16 and the ring
    again with synchronous=full (an fsync per hop);
  - `cl-initiator` wall time at N=3 (the real CLI as a subprocess, p50);
  - transfers/s, 5 nodes, workload unbounded (summed `sent` counters of
    GetStatus over a window);
  - app throughput while snapshotting every 1 s, as a ratio of the same
    cluster's baseline measured just before;
  - threads and RSS per node (N=3 and N=32).

Every snapshot must be complete and verified, else the script fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from benchmarks._common import table
from certs import identity
from certs.store import CertDir, cluster_identities
from common.tls import TlsFiles, add_port, open_aio_channel
from demo.local_cluster import ClusterError, LocalCluster
from initiator.client import Connections, take_snapshot
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

LOAD_RATE = 1e6  # per node: as fast as it goes
LIGHT_RATE = 5.0  # per node, for the latency runs (the generated clusters' default)
CORES = os.cpu_count() or 1


# ------------------------------------------------------------------ floor


class _Echo(pb_grpc.NodeServicer):
    async def Channel(self, request_iterator, context):  # noqa: N802
        async for frame in request_iterator:
            yield pb.Ack(seq=frame.seq)


async def _one_way_seconds(samples: int, tls_dir: Path | None) -> tuple[float, float]:
    """`tls_dir`: mutual TLS with node certificates made there (as the
    clusters below run), else plaintext."""
    server_tls = client_tls = None
    if tls_dir is not None:
        certs = CertDir(tls_dir)
        certs.ensure(cluster_identities(["n1", "n2"]), dt.datetime.now(dt.UTC))
        server_tls = TlsFiles.in_dir(certs.identity_dir(identity.node("n1")))
        client_tls = TlsFiles.in_dir(certs.identity_dir(identity.node("n2")))
    server = grpc.aio.server()
    pb_grpc.add_NodeServicer_to_server(_Echo(), server)
    port = add_port(server, "127.0.0.1:0", server_tls)
    await server.start()
    try:
        async with open_aio_channel(
            f"127.0.0.1:{port}", client_tls, "node", "n1", options=[("grpc.enable_http_proxy", 0)]
        ) as channel:
            call = pb_grpc.NodeStub(channel).Channel()
            frame = pb.Frame(sender="a", receiver="b", seq=1, marker=pb.Marker(snapshot_id="s"))
            times = []
            cpu = 0.0
            for i in range(samples + 20):
                started, cpu_started = time.perf_counter(), time.process_time()
                await call.write(frame)
                await call.read()
                if i >= 20:  # warm-up
                    times.append((time.perf_counter() - started) / 2)
                    cpu += time.process_time() - cpu_started
            call.cancel()
            # Both ends run in this process: a round trip is two messages,
            # each written by one side and read by the other.
            return statistics.median(times), cpu / (2 * samples)
    finally:
        await server.stop(None)


def one_way_and_cpu(samples: int = 300, tls: bool = False) -> tuple[float, float]:
    """(one-way latency, CPU seconds per message both ends together), p50 / mean."""
    if not tls:
        return asyncio.run(_one_way_seconds(samples, None))
    tls_dir = Path(tempfile.mkdtemp(prefix="cl-bench-tls-"))
    try:
        return asyncio.run(_one_way_seconds(samples, tls_dir))
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)


def commit_seconds(samples: int = 100, synchronous: str = "FULL") -> float:
    directory = Path(tempfile.mkdtemp(prefix="cl-bench-commit-"))  # where the nodes' data is
    try:
        db = sqlite3.connect(directory / "x.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        times = []
        for i in range(samples + 5):
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 64))
            db.execute("COMMIT")
            if i >= 5:
                times.append(time.perf_counter() - started)
        db.close()
        return statistics.median(times)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- helpers


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory_mb(pid: int) -> dict[str, float]:
    """Rss, Pss (shared pages divided among the processes that map them) and
    Private (Private_Clean + Private_Dirty) of `pid`, MB (smaps_rollup)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            values[key] = int(rest.split()[0]) / 1024
    values["Private"] = values.pop("Private_Clean", 0.0) + values.pop("Private_Dirty", 0.0)
    return values


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def node_pids(cluster: LocalCluster) -> list[int]:
    return [cluster.processes[node].pid for node in cluster.node_ids]


def verified(document: dict[str, Any] | None, snapshot_id: str) -> dict[str, Any]:
    if document is None or document["status"] != "complete":
        raise RuntimeError(f"snapshot {snapshot_id} did not complete: {document}")
    if not document["verification"]["ok"]:
        raise RuntimeError(f"snapshot {snapshot_id} failed verification")
    return document


def snapshot_latencies(cluster: LocalCluster, name: str, samples: int) -> list[float]:
    connections = Connections(tls=cluster.operator_tls)
    try:
        latencies = []
        for index in range(samples + 1):
            snapshot_id = f"{name}-{index}"
            started = time.perf_counter()
            outcome = take_snapshot(
                cluster.config,
                cluster.collector_address,
                [cluster.node_ids[0]],
                snapshot_id,
                timeout=60,
                connections=connections,
            )
            seconds = time.perf_counter() - started
            verified(outcome.document, snapshot_id)
            if index:  # the first one warms up the channels
                latencies.append(seconds)
        return latencies
    finally:
        connections.close()


def cluster(
    workdir: Path, name: str, nodes: int, topology: str, rate: float, sync: str = "normal"
) -> LocalCluster:
    return LocalCluster(
        workdir / name,
        nodes=nodes,
        topology=topology,
        transfer_rate=rate,
        link_delay_ms=0,
        snapshot_timeout=60,
        # Snapshots back to back, faster than the collector admits by default.
        env={"CL_DB_SYNCHRONOUS": sync, "CL_BEGIN_RATE": "1000"},
    )


def started(
    workdir: Path, name: str, nodes: int, topology: str, rate: float, sync: str, timeout: float
) -> LocalCluster:
    """`cluster(...)`, started. Its ports are picked free just before the start;
    on a shared machine another process may take one meanwhile (the node
    exits: cannot listen): then once more with new ports."""
    for attempt in (1, 2):
        running = cluster(workdir, name, nodes, topology, rate, sync)
        try:
            running.start(timeout=timeout)
            return running
        except ClusterError as error:
            running.stop()
            if attempt == 2:
                raise
            print(f"({name}: {str(error).splitlines()[0]}; again)", file=sys.stderr)
    raise AssertionError("unreachable")


def sent_total(cluster: LocalCluster) -> int:
    total = 0
    for node in cluster.node_ids:
        status = cluster.node_status(node, timeout=5)
        total += sum(c.sent_or_received for c in status.channels if c.direction == "out")
    return total


def transfers_per_second(cluster: LocalCluster, window: float) -> float:
    first, started = sent_total(cluster), time.monotonic()
    time.sleep(window)
    return (sent_total(cluster) - first) / (time.monotonic() - started)


def cli_wall_seconds(cluster: LocalCluster, samples: int) -> list[float]:
    cli = Path(sys.executable).parent / "cl-initiator"
    argv = [str(cli)] if cli.exists() else [sys.executable, "-m", "initiator"]
    env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    times = []
    for index in range(samples + 1):
        started = time.perf_counter()
        result = subprocess.run(
            [*argv, "--cluster", str(cluster.config_path), "--snapshot-id", f"cli-{index}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"cl-initiator failed ({result.returncode}): {result.stderr}")
        if index:
            times.append(seconds)
    return times


def resource_row(name: str, pids: list[int]) -> list[object]:
    memory = [memory_mb(p) for p in pids]
    return [
        name, f"{statistics.mean(threads(p) for p in pids):.0f}", max(threads(p) for p in pids),
        f"{statistics.mean(rss_mb(p) for p in pids):.1f}", f"{max(rss_mb(p) for p in pids):.1f}",
        f"{statistics.mean(m['Pss'] for m in memory):.1f}",
        f"{statistics.mean(m['Private'] for m in memory):.1f}",
    ]  # fmt: skip


def import_rss_mb() -> dict[str, float]:
    """VmRSS of a fresh interpreter after importing only what stands below a
    node: nothing, asyncio, grpc.aio, and the node's own modules."""
    script = (
        "import sys, importlib\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024\n"
        "print(rss())\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name); print(rss())\n"
    )
    steps = ["asyncio", "grpc.aio", "node.__main__"]
    out = subprocess.run(
        [sys.executable, "-c", script, *steps], capture_output=True, text=True, check=True
    ).stdout.split()
    labels = ["python", "+ asyncio", "+ grpc.aio", "+ node's imports"]
    return dict(zip(labels, map(float, out), strict=True))


# ------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.figures")
    parser.add_argument("--quick", action="store_true", help="fewer samples, no N=64")
    args = parser.parse_args()
    samples = 5 if args.quick else 15
    began = time.monotonic()
    print("# benchmarks.figures: issue 8's table, each figure beside its floor (same run)")
    plain_one_way, plain_message_cpu = one_way_and_cpu()
    # The clusters run mutual TLS: their floors are measured the same way.
    one_way, message_cpu = one_way_and_cpu(tls=True)
    commit = {"full": commit_seconds(), "normal": commit_seconds(synchronous="NORMAL")}
    hop = {sync: one_way + seconds for sync, seconds in commit.items()}
    table(
        "Floor",
        ["what", "p50 ms"],
        [
            [
                "one-way latency, one message on a loopback gRPC stream, plaintext",
                f"{plain_one_way * 1e3:.3f}",
            ],
            [
                "the same with mutual TLS (as the clusters run; the floors below use it)",
                f"{one_way * 1e3:.3f}",
            ],
            [
                "one SQLite commit (WAL, synchronous=NORMAL, the default)",
                f"{commit['normal'] * 1e3:.3f}",
            ],
            ["one SQLite commit (WAL, synchronous=FULL)", f"{commit['full'] * 1e3:.3f}"],
            ["one hop = one-way + one commit (NORMAL)", f"{hop['normal'] * 1e3:.3f}"],
            ["one hop = one-way + one commit (FULL)", f"{hop['full'] * 1e3:.3f}"],
            [
                "CPU of one message on that stream, both ends (mean, not p50), plaintext",
                f"{plain_message_cpu * 1e3:.3f}",
            ],
            ["the same with mutual TLS (the CPU floor below)", f"{message_cpu * 1e3:.3f}"],
        ],
    )

    workdir = Path(tempfile.mkdtemp(prefix="cl-bench-figures-"))
    latency_rows: list[list[object]] = []
    resources: list[list[object]] = []
    extra: list[list[object]] = []
    # (name, nodes, topology, marker depth, SQLite synchronous)
    runs: list[tuple[str, int, str, int, str]] = [
        ("N=3 complete", 3, "complete", 2, "normal"),
        ("N=16 complete", 16, "complete", 2, "normal"),
        ("N=32 complete", 32, "complete", 2, "normal"),
    ]
    if not args.quick:
        runs += [
            ("N=64 ring", 64, "ring", 64, "normal"),
            # The same with an fsync per commit: how much of the figure is the disk.
            ("N=3 complete, synchronous=full", 3, "complete", 2, "full"),
            ("N=16 complete, synchronous=full", 16, "complete", 2, "full"),
            ("N=64 ring, synchronous=full", 64, "ring", 64, "full"),
        ]

    def measure(
        name: str, nodes: int, topology: str, depth: int, sync: str, also: Callable[..., None]
    ) -> None:
        slug = name.split(",")[0].replace(" ", "-").replace("=", "") + f"-{sync}"
        running = started(workdir, slug, nodes, topology, LIGHT_RATE, sync, 120)
        try:
            time.sleep(1.0)
            pids = node_pids(running)
            cpu_before = sum(cpu_seconds(p) for p in [*pids, running.processes["collector"].pid])
            latencies = snapshot_latencies(running, slug.lower(), samples)
            cpu = (
                sum(cpu_seconds(p) for p in [*pids, running.processes["collector"].pid])
                - cpu_before
            ) / (len(latencies) + 1)
            p50 = statistics.median(latencies)
            floor = (depth + 1) * hop[sync]  # depth hops + one report
            # The messages a snapshot cannot do without: one marker per channel.
            markers = nodes * (nodes - 1) if topology == "complete" else nodes
            cpu_floor = markers * message_cpu
            print(f"({name}: p50 {p50 * 1e3:.1f} ms, CPU {cpu * 1e3:.0f} ms)", file=sys.stderr)
            latency_rows.append([
                name, depth, len(latencies), f"{p50 * 1e3:.1f}",
                f"{min(latencies) * 1e3:.1f}-{max(latencies) * 1e3:.1f}",
                f"{floor * 1e3:.1f}", f"{p50 / floor:.1f}", f"{cpu * 1e3:.0f}",
                f"{cpu_floor * 1e3:.0f} ({markers} markers)", f"{cpu / cpu_floor:.1f}",
                f"{max(floor, cpu_floor / CORES) * 1e3:.1f}",
            ])  # fmt: skip
            if nodes in (3, 32) and sync == "normal":
                resources.append(resource_row(name, pids))
            also(running)
        finally:
            running.stop()

    def cli(running: LocalCluster) -> None:
        if len(running.node_ids) == 3 and not extra:
            p50 = statistics.median(cli_wall_seconds(running, samples))
            extra.append(["`cl-initiator` wall time, N=3, p50", f"{p50 * 1e3:.0f} ms", "<= 80 ms"])

    try:
        for name, nodes, topology, depth, sync in runs:
            try:
                measure(name, nodes, topology, depth, sync, cli)
            except Exception as error:  # one row lost, not the run (shared machine)
                print(f"({name}: FAILED: {error})", file=sys.stderr)
                latency_rows.append([name, depth, 0, f"FAILED: {str(error)[:80]}"] + [""] * 7)
        # Throughput: 5 nodes, unbounded workload; then with a snapshot every second.
        loaded = started(workdir, "load5", 5, "complete", LOAD_RATE, "normal", 60)
        try:
            time.sleep(3.0)
            window = 5.0 if args.quick else 10.0
            baseline = transfers_per_second(loaded, window)
            stop = threading.Event()
            taken: list[float] = []

            def snapshots() -> None:
                connections = Connections(tls=loaded.operator_tls)
                index = 0
                while not stop.is_set():
                    started = time.monotonic()
                    sid = f"every-1s-{index}"
                    outcome = take_snapshot(
                        loaded.config, loaded.collector_address, ["n1"], sid, timeout=60,
                        connections=connections,
                    )  # fmt: skip
                    verified(outcome.document, sid)
                    taken.append(time.monotonic() - started)
                    index += 1
                    stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
                connections.close()

            worker = threading.Thread(target=snapshots, daemon=True)
            worker.start()
            time.sleep(1.0)
            during = transfers_per_second(loaded, window)
            stop.set()
            worker.join(60)
            pids = node_pids(loaded)
            extra += [
                ["transfers/s, 5 nodes, unbounded workload", f"{baseline:,.0f}", ">= 10,000"],
                ["app throughput while snapshotting every 1 s (ratio of baseline)",
                 f"{during / baseline:.2f} ({during:,.0f}/s, {len(taken)} snapshots, "
                 f"p50 {statistics.median(taken) * 1e3:.0f} ms)", ">= 0.98"],
            ]  # fmt: skip
            resources.append(resource_row("5 nodes, unbounded load", pids))
        finally:
            loaded.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table(
        "Snapshot latency, start -> verified document at the initiator (link delay 0)",
        [
            "cluster",
            "marker depth",
            "samples",
            "p50 ms",
            "range ms",
            "floor ms",
            "ratio to floor",
            "CPU ms per snapshot, all processes",
            "CPU floor ms (one message per marker)",
            "CPU / CPU floor",
            f"wall floor ms, max(floor, CPU floor / {CORES} cores)",
        ],
        latency_rows,
    )
    table("Initiator and throughput", ["figure", "measured", "goal"], extra)
    table(
        "Threads and RSS per node (goal: <= 16 threads, flat in N; <= 40 MB)",
        [
            "cluster",
            "threads, mean",
            "threads, max",
            "RSS MB, mean",
            "RSS MB, max",
            "PSS MB, mean",
            "private MB, mean",
        ],  # fmt: skip
        resources,
    )
    floor_rss = import_rss_mb()
    print(
        "\nRSS floor, same interpreter: "
        + ", ".join(f"{what} {mb:.1f} MB" for what, mb in floor_rss.items())
    )
    print(
        "\nfloor = depth x hop + one report (one more hop); hop = one-way + one commit "
        f"= {hop['full'] * 1e3:.2f} ms (FULL), {hop['normal'] * 1e3:.2f} ms (NORMAL)"
    )
    print(f"(total {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
