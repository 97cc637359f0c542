"""Delivers finished local snapshots to the collector, retrying until acked.

Reports are durable (the runtime stores each one in the transaction that
finished the snapshot) and are deleted only after the collector acked them,
so a collector that is away, or a node restart, delays a report but never
loses it. The collector may therefore see a report twice.
"""

from __future__ import annotations

import threading

import grpc
import structlog
from structlog.contextvars import bind_contextvars

from node.channels import CLIENT_OPTIONS, Backoff
from node.runtime import NodeClosed, NodeRuntime
from protos import chandy_lamport_pb2_grpc as pb_grpc

log = structlog.get_logger("node.reporter")

REPORT_TIMEOUT = 5.0


class Reporter(threading.Thread):
    def __init__(
        self, runtime: NodeRuntime, collector_address: str, backoff: Backoff | None = None
    ) -> None:
        super().__init__(name=f"reporter-{runtime.node_id}", daemon=True)
        self.runtime = runtime
        self.collector_address = collector_address
        self.backoff = backoff or Backoff(0.2, 5.0)
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        bind_contextvars(node_id=self.runtime.node_id)
        with grpc.insecure_channel(self.collector_address, options=CLIENT_OPTIONS) as channel:
            stub = pb_grpc.CollectorStub(channel)
            while not self._stopping.is_set():
                for report in self.runtime.wait_reports(timeout=0.5):
                    if self._stopping.is_set():
                        return
                    try:
                        stub.ReportLocalSnapshot(report, timeout=REPORT_TIMEOUT)
                    except grpc.RpcError as error:
                        delay = self.backoff.next()
                        log.warning(
                            "snapshot report failed, will retry",
                            snapshot_id=report.snapshot_id,
                            collector=self.collector_address,
                            code=error.code().name,
                            details=error.details(),
                            retry_in=delay,
                        )
                        self._stopping.wait(delay)
                        break
                    self.backoff.reset()
                    try:
                        self.runtime.report_delivered(report.snapshot_id)
                    except NodeClosed:
                        return  # the collector may get this report again after a restart
                    log.info("snapshot reported", snapshot_id=report.snapshot_id)
