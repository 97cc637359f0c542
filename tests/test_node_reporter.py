"""The reporter against a fake collector: retries what may succeed, drops what never will."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from common.config import load_cluster
from node import wire
from node.channels import Backoff
from node.core import Marker
from node.reporter import Reporter
from node.runtime import NodeRuntime
from node.storage import Store
from node.testing import free_port, wait_until, write_cluster
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc


class ScriptedCollector(pb_grpc.CollectorServicer):
    """Answers each report with the next status scripted for its snapshot id (then OK)."""

    def __init__(self, script: dict[str, list[grpc.StatusCode]]) -> None:
        self.script = script
        self.received: list[tuple[str, bool]] = []  # (snapshot id, complete)
        self.lock = threading.Lock()

    def ReportLocalSnapshot(self, request, context):  # noqa: N802
        with self.lock:
            self.received.append((request.snapshot_id, request.complete))
            answers = self.script.get(request.snapshot_id, [])
            code = answers.pop(0) if answers else grpc.StatusCode.OK
        if code is not grpc.StatusCode.OK:
            context.abort(code, f"scripted {code.name}")
        return pb.ReportReply()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[NodeRuntime]:
    write_cluster(tmp_path / "cluster.yaml", {"a": 100, "b": 100, "c": 100})
    store = Store(tmp_path / "a")
    running = NodeRuntime(load_cluster(tmp_path / "cluster.yaml"), "a", store)
    yield running
    running.close()
    store.close()


def finish(runtime: NodeRuntime, snapshot_id: str, seq: int) -> None:
    runtime.start_snapshot(snapshot_id)
    for peer in ("b", "c"):
        runtime.receive(wire.frame_for(peer, "a", seq, Marker(snapshot_id)))


def test_refused_reports_are_dropped_and_unavailable_ones_retried(runtime: NodeRuntime) -> None:
    collector = ScriptedCollector(
        {
            "invalid": [grpc.StatusCode.INVALID_ARGUMENT],
            "conflict": [grpc.StatusCode.ALREADY_EXISTS],
            "flaky": [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE],
        }
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_CollectorServicer_to_server(collector, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    for seq, snapshot_id in enumerate(["invalid", "conflict", "flaky", "fine"], start=1):
        finish(runtime, snapshot_id, seq)
    reporter = Reporter(runtime, f"127.0.0.1:{port}", Backoff(0.05, 0.1))
    reporter.start()
    try:
        wait_until(lambda: runtime.wait_reports(0) == [], 10, what="every report handled")
    finally:
        reporter.stop()
        reporter.join(5)
        server.stop(None)
    received = [sid for sid, complete in collector.received if complete]
    # Refused for good: sent once, then dropped; unavailable: retried until acked.
    assert received.count("invalid") == 1 and received.count("conflict") == 1
    assert received.count("flaky") == 3 and received.count("fine") == 1
