"""The reporter against a scripted collector: retries what may succeed, drops what never
will, and sends progress only on its slow timer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from common.config import load_cluster
from node import wire
from node.channels import Backoff
from node.committer import GroupCommitter
from node.core import Marker
from node.reporter import Reporter
from node.runtime import NodeRuntime
from node.storage import Store
from node.testing import free_port, write_cluster
from node.transport import open_channel
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


def run_reporter(runtime: NodeRuntime, port: int, until: Callable[[], bool], **kwargs) -> None:
    """The real reporter and group committer on an event loop, until `until()`."""

    async def main() -> None:
        committer = GroupCommitter(runtime)
        committer_task = asyncio.create_task(committer.run())
        channel = open_channel(f"127.0.0.1:{port}")
        reporter = Reporter(runtime, committer, channel, f"127.0.0.1:{port}", **kwargs)
        task = asyncio.create_task(reporter.run())
        try:
            deadline = time.monotonic() + 10
            while not until():
                assert time.monotonic() < deadline, "reporter did not get there in 10 s"
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            committer.close()
            await asyncio.gather(task, committer_task, return_exceptions=True)
            committer.shutdown_writer()
            await channel.close()

    asyncio.run(main())


def serve_collector(collector: ScriptedCollector) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_CollectorServicer_to_server(collector, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


def test_refused_reports_are_dropped_and_unavailable_ones_retried(runtime: NodeRuntime) -> None:
    collector = ScriptedCollector(
        {
            "invalid": [grpc.StatusCode.INVALID_ARGUMENT],
            "conflict": [grpc.StatusCode.ALREADY_EXISTS],
            "unbegun": [grpc.StatusCode.FAILED_PRECONDITION] * 2,
            "flaky": [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE],
        }
    )
    server, port = serve_collector(collector)
    for seq, snapshot_id in enumerate(["invalid", "conflict", "unbegun", "flaky", "fine"], 1):
        finish(runtime, snapshot_id, seq)
    try:
        run_reporter(
            runtime, port, lambda: runtime.reports() == [], backoff=Backoff(0.05, 0.1),
            unbegun_patience=0.5,
        )  # fmt: skip
    finally:
        server.stop(None)
    received = [sid for sid, complete in collector.received if complete]
    # Refused for good: sent once, then dropped; unavailable: retried until acked.
    assert received.count("invalid") == 1 and received.count("conflict") == 1
    # Not begun: retried (a collector that restarted is told again), then acked.
    assert received.count("unbegun") == 3
    assert received.count("flaky") == 3 and received.count("fine") == 1
    assert not any(not complete for _, complete in collector.received)  # no progress spam


def test_a_report_the_collector_never_begins_is_dropped_after_the_patience(
    runtime: NodeRuntime,
) -> None:
    collector = ScriptedCollector({"never": [grpc.StatusCode.FAILED_PRECONDITION] * 1000})
    server, port = serve_collector(collector)
    finish(runtime, "never", 1)
    started = time.monotonic()
    try:
        run_reporter(
            runtime, port, lambda: runtime.reports() == [], backoff=Backoff(0.05, 0.1),
            unbegun_patience=0.3,
        )  # fmt: skip
    finally:
        server.stop(None)
    assert time.monotonic() - started >= 0.3
    assert 2 <= len(collector.received) < 20


def test_progress_is_reported_on_a_slow_timer_once_per_change(runtime: NodeRuntime) -> None:
    collector = ScriptedCollector({})
    server, port = serve_collector(collector)
    runtime.start_snapshot("slow")  # waits for markers from b and c

    def progress() -> list[tuple[str, bool]]:
        with collector.lock:
            return [r for r in collector.received if not r[1]]

    try:
        started = time.monotonic()
        run_reporter(
            runtime, port, lambda: len(progress()) >= 1, progress_after=0.3, progress_interval=0.1
        )
        assert time.monotonic() - started >= 0.3  # not before `progress_after`
        runtime.receive(wire.frame_for("b", "a", 1, Marker("slow")))  # one channel closes
        run_reporter(
            runtime, port, lambda: len(progress()) >= 2, progress_after=0.0, progress_interval=0.1
        )
        # A new reporter sends the current progress once; five more ticks with
        # nothing changed send nothing.
        ticks = time.monotonic() + 0.5
        run_reporter(
            runtime, port, lambda: time.monotonic() > ticks, progress_after=0.0,
            progress_interval=0.1,
        )  # fmt: skip
    finally:
        server.stop(None)
    assert progress() == [("slow", False)] * 3
