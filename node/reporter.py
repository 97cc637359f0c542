"""Delivers local snapshot reports to the collector, retrying until acked.

Reports are durable (the runtime stores each one in the transaction that
produced it) and are deleted only after the collector acked them, so a
collector that is away, or a node restart, delays a report but never loses
it. The collector may therefore see a report twice.

Per snapshot a node keeps one report: a progress report (complete=false,
naming the channels still open) from when it records, renewed whenever a
marker closes a channel, and finally the final report. Each replaces the
previous one under the same snapshot id, so only the newest is sent; if the
replacement happens while the older one is on its way, acking the older one
deletes nothing and the newer one follows.

A report the collector refuses as invalid (INVALID_ARGUMENT) or as
contradicting what this node reported before (ALREADY_EXISTS) can never be
accepted: it is logged as an error and dropped, not retried forever.
"""

from __future__ import annotations

import threading

import grpc
import structlog
from structlog.contextvars import bind_contextvars

from common.tls import TlsFiles, open_channel
from node.channels import CLIENT_OPTIONS, Backoff
from node.runtime import NodeClosed, NodeRuntime
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

log = structlog.get_logger("node.reporter")

REPORT_TIMEOUT = 5.0
# Answers after which sending the same report again cannot succeed: invalid,
# contradicting an earlier one, for a snapshot the collector never began (or
# has pruned), or over the collector's size limit.
REFUSED_FOR_GOOD = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class Reporter(threading.Thread):
    def __init__(
        self,
        runtime: NodeRuntime,
        collector_address: str,
        backoff: Backoff | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(name=f"reporter-{runtime.node_id}", daemon=True)
        self.runtime = runtime
        self.collector_address = collector_address
        self.tls = tls
        self.backoff = backoff or Backoff(0.2, 5.0)
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        bind_contextvars(node_id=self.runtime.node_id)
        with open_channel(
            self.collector_address, self.tls, "collector", "collector", CLIENT_OPTIONS
        ) as channel:
            stub = pb_grpc.CollectorStub(channel)
            while not self._stopping.is_set():
                for report in self.runtime.wait_reports(timeout=0.5):
                    if self._stopping.is_set():
                        return
                    try:
                        stub.ReportLocalSnapshot(report, timeout=REPORT_TIMEOUT)
                    except grpc.RpcError as error:
                        call = error if isinstance(error, grpc.Call) else None
                        code = call.code() if call is not None else None
                        details = call.details() if call is not None else str(error)
                        if code is not None and code in REFUSED_FOR_GOOD:
                            log.error(
                                "snapshot report refused by the collector, dropped",
                                snapshot_id=report.snapshot_id,
                                complete=report.complete,
                                collector=self.collector_address,
                                code=code.name,
                                details=details,
                            )
                            if not self._forget(report):
                                return
                            continue
                        delay = self.backoff.next()
                        log.warning(
                            "snapshot report failed, will retry",
                            snapshot_id=report.snapshot_id,
                            collector=self.collector_address,
                            code=code.name if code is not None else "UNKNOWN",
                            details=details,
                            retry_in=delay,
                        )
                        self._stopping.wait(delay)
                        break
                    self.backoff.reset()
                    if not self._forget(report):
                        return
                    log.info(
                        "snapshot reported" if report.complete else "snapshot progress reported",
                        snapshot_id=report.snapshot_id,
                    )

    def _forget(self, report: pb.LocalSnapshot) -> bool:
        """Stop sending `report`; False if the node is closing."""
        try:
            self.runtime.report_delivered(report)
        except NodeClosed:
            return False  # the collector may get this report again after a restart
        return True
