"""The collector alone: one in-process `CollectorServer` (mutual TLS, dashboard on),
fed N reports per snapshot by a helper process over real gRPC.

    python -m benchmarks.collector [--nodes 3,16] [--snapshots 300]

The helper plays the initiator and the N nodes, snapshot after snapshot:
BeginSnapshot, WaitSnapshot opened, then every node's complete report sent at
once (each node on its own channel and certificate), and the verified
document read from the stream. The benchmark process holds only the
collector, so its CPU time (`time.process_time`, every thread, gRPC's own
included) is the collector's cost. Logs are JSON at info into a file, as
under Compose. Printed per N: the helper's p50 from the reports sent to the
document in hand and from BeginSnapshot to the document, the collector's CPU
per snapshot and per report, and reports/s over the timed window (after a
warm-up of WARMUP snapshots). Beside them, in the same run, the floor: N
health checks at once from the N nodes' channels (the same server, TLS and
authorization interceptor, a handler that does nothing), its CPU per call,
and the ratio of a report's CPU to it: what the collector's own work adds to
gRPC's cost of one call.

To compare with another checkout (same script, that checkout's collector):
`cd OTHER && /path/to/this/.venv/bin/python /path/to/this/benchmarks/collector.py`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs import identity
from certs.store import CertDir, cluster_identities
from collector.admission import Limits
from collector.server import CollectorServer
from collector.testing import consistent_reports, report_to_pb, small_cluster
from common.logging import configure_logging
from common.tls import TlsFiles, open_channel
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

WARMUP = 20
# Back-to-back snapshots: the admission limits must not be what is measured.
UNLIMITED = Limits(begin_rate=1e9, begin_burst=10**9)


def node_ids(count: int) -> tuple[str, ...]:
    return tuple(f"n{i}" for i in range(1, count + 1))


def drive(
    address: str,
    tls_root: str,
    count: int,
    snapshots: int,
    pipe: multiprocessing.connection.Connection,
) -> None:
    """The helper process: WARMUP snapshots, tell the parent, then `snapshots` timed ones."""
    ids = node_ids(count)
    config = small_cluster(ids)
    root = Path(tls_root)

    def channel_as(who: identity.Identity) -> object:
        files = TlsFiles.in_dir(root / who.directory)
        return open_channel(address, files, "collector", identity.collector().name)

    operator = pb_grpc.CollectorStub(channel_as(identity.operator()))
    nodes = {n: pb_grpc.CollectorStub(channel_as(identity.node(n))) for n in ids}
    total = WARMUP + snapshots
    reports = [
        {n: report_to_pb(r) for n, r in consistent_reports(config, f"s{i}").items()}
        for i in range(total)
    ]
    health = [health_pb2_grpc.HealthStub(channel_as(identity.node(n))) for n in ids]
    check = health_pb2.HealthCheckRequest()
    floor: list[float] = []
    for i in range(total):
        if i == WARMUP:
            pipe.send("warm")
            pipe.recv()
        started = time.perf_counter()
        for call in [stub.Check.future(check, timeout=10) for stub in health]:
            call.result()
        if i >= WARMUP:
            floor.append(time.perf_counter() - started)
    pipe.send(floor)
    from_reports, from_begin = [], []
    for i in range(total):
        if i == WARMUP:
            pipe.send("warm")
            pipe.recv()
        sid = f"s{i}"
        begun = time.perf_counter()
        operator.BeginSnapshot(
            pb.BeginSnapshotRequest(snapshot_id=sid, initiators=[ids[0]]), timeout=10
        )
        stream = operator.WaitSnapshot(
            pb.WaitSnapshotRequest(snapshot_id=sid, timeout_seconds=10), timeout=15
        )
        sent = time.perf_counter()
        calls = [nodes[n].ReportLocalSnapshot.future(reports[i][n], timeout=10) for n in ids]
        document = next(p for p in stream if p.status != "pending")
        done = time.perf_counter()
        for call in calls:
            call.result()
        if document.status != "complete" or '"ok": true' not in document.json:
            raise RuntimeError(f"{sid}: not a verified complete snapshot: {document.status}")
        if i >= WARMUP:
            from_reports.append(done - sent)
            from_begin.append(done - begun)
    pipe.send((from_reports, from_begin))


def measure(count: int, snapshots: int, workdir: Path) -> list[object]:
    ids = node_ids(count)
    tls_root = workdir / f"tls-{count}"
    CertDir(tls_root).ensure(cluster_identities(list(ids)), dt.datetime.now(dt.UTC))
    server = CollectorServer(
        small_cluster(ids),
        str(workdir / f"snapshots-{count}"),
        "127.0.0.1",
        0,
        http_port=0,
        tls=TlsFiles.in_dir(tls_root / identity.collector().directory),
        limits=UNLIMITED,
    )
    server.start()
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    helper = multiprocessing.get_context("spawn").Process(
        target=drive, args=(server.address, str(tls_root), count, snapshots, theirs)
    )
    try:
        helper.start()
        floor_cpu, floor_wall, floor = timed_phase(ours)
        cpu, wall, (from_reports, from_begin) = timed_phase(ours)
        helper.join(30)
    finally:
        if helper.is_alive():
            helper.kill()
        server.stop(grace=1.0)
    per_report = cpu / snapshots / count
    floor_per_call = floor_cpu / snapshots / count
    return [
        count,
        snapshots,
        f"{statistics.median(from_reports) * 1e3:.2f}",
        f"{statistics.median(from_begin) * 1e3:.2f}",
        f"{cpu / snapshots * 1e3:.2f}",
        f"{per_report * 1e3:.3f}",
        f"{count * snapshots / wall:,.0f}",
        f"{statistics.median(floor) * 1e3:.2f}",
        f"{floor_per_call * 1e3:.3f}",
        f"{per_report / floor_per_call:.2f}",
    ]


def timed_phase(pipe: multiprocessing.connection.Connection) -> tuple[float, float, Any]:
    """CPU and wall seconds of this process while the helper runs one timed phase, and
    what the helper measured."""
    if pipe.recv() != "warm":
        raise RuntimeError("the helper did not warm up")
    cpu, wall = time.process_time(), time.perf_counter()
    pipe.send("go")
    measured = pipe.recv()
    return time.process_time() - cpu, time.perf_counter() - wall, measured


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.collector", description=__doc__)
    parser.add_argument("--nodes", default="3,16", help="comma-separated N (default 3,16)")
    parser.add_argument("--snapshots", type=int, default=300, help="timed snapshots per N")
    args = parser.parse_args(argv)
    from benchmarks._common import table

    with tempfile.TemporaryDirectory(prefix="bench-collector-") as temp:
        workdir = Path(temp)
        # JSON at info into a file, as the collector logs under Compose.
        log_file = open(workdir / "collector.log", "w")  # noqa: SIM115 (closed below)
        stderr, sys.stderr = sys.stderr, log_file
        try:
            configure_logging("INFO", json=True)
            rows = [measure(int(n), args.snapshots, workdir) for n in args.nodes.split(",")]
        finally:
            sys.stderr = stderr
            log_file.close()
    table(
        "collector alone, in-process, mutual TLS (helper process: initiator + N nodes)",
        [
            "N",
            "snapshots",
            "reports -> document p50 ms",
            "begin -> document p50 ms",
            "collector CPU ms/snapshot",
            "CPU ms/report",
            "reports/s",
            "floor: N health checks p50 ms",
            "floor CPU ms/call",
            "report / floor CPU",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
