"""Delivers local snapshot reports to the collector (asyncio), retrying until acked.

One final report per node per snapshot: it is stored in the transaction of
the event that finished the local snapshot and deleted only after the
collector acked it (in the node's next transaction, without one of its
own), so a collector that is away, or a node restart, delays a report but
never loses it. The collector may therefore see a report twice, and
deduplicates.

Progress reports (complete=false, naming the channels still open) exist only
so that an aborted snapshot can say who was waiting for whom. They are not
sent per marker: every `progress_interval` seconds the reporter sends one
for each snapshot that has been recording here for `progress_after` seconds
or more, and only when its open channels changed since the last one sent.
They are built from committed state and are never stored: after a restart
the next tick rebuilds them from the recording.

A report the collector refuses for good -- invalid (INVALID_ARGUMENT),
contradicting what this node reported before (ALREADY_EXISTS) or too big
(RESOURCE_EXHAUSTED) -- is logged as an error and dropped, not retried
forever. A report for a snapshot the
collector has not begun (FAILED_PRECONDITION) may be a race with a
collector that restarted and is being told again by its initiator: it is
retried for `unbegun_patience` seconds, then dropped. Anything else is
retried after a jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import structlog

from node.channels import Backoff
from node.committer import GroupCommitter
from node.runtime import NodeRuntime
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

log = structlog.get_logger("node.reporter")

REPORT_TIMEOUT = 5.0
PROGRESS_AFTER = 1.0
PROGRESS_INTERVAL = 1.0
# Answers after which sending the same report again cannot succeed.
REFUSED_FOR_GOOD = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # too big for the collector: it never will be smaller
    }
)
NOT_BEGUN = grpc.StatusCode.FAILED_PRECONDITION
UNBEGUN_PATIENCE = 60.0


class Reporter:
    def __init__(
        self,
        runtime: NodeRuntime,
        committer: GroupCommitter,
        channel: grpc.aio.Channel,
        collector_address: str,
        backoff: Backoff | None = None,
        progress_after: float = PROGRESS_AFTER,
        progress_interval: float = PROGRESS_INTERVAL,
        unbegun_patience: float = UNBEGUN_PATIENCE,
    ) -> None:
        self.runtime = runtime
        self.committer = committer
        self.channel = channel
        self.collector_address = collector_address
        self.backoff = backoff or Backoff(0.2, 5.0)
        self.progress_after = progress_after
        self.progress_interval = progress_interval
        self.unbegun_patience = unbegun_patience
        self._unbegun_since: dict[str, float] = {}
        self.ready = asyncio.Event()  # set when the runtime published a final report
        self._progress_sent: dict[str, tuple[str, ...]] = {}
        self._log = log.bind(node_id=runtime.node_id)

    async def run(self) -> None:
        stub = pb_grpc.CollectorStub(self.channel)
        next_progress = time.monotonic() + self.progress_interval
        while True:
            self.ready.clear()
            delivered_all = await self._send_finals(stub)
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + self.progress_interval
                await self._send_progress(stub)
            if not delivered_all:
                await asyncio.sleep(self.backoff.next())
                continue
            timeout = max(0.0, next_progress - time.monotonic())
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                pass

    async def _send_finals(self, stub: pb_grpc.CollectorStub) -> bool:
        """Send every undelivered final report; False if one must be retried later."""
        retry_later = False
        for report in self.runtime.reports():
            sid = report.snapshot_id
            code, details = await self._send(stub, report)
            if code == NOT_BEGUN:
                since = self._unbegun_since.setdefault(sid, time.monotonic())
                if time.monotonic() - since < self.unbegun_patience:
                    self._log.warning(
                        "collector has not begun this snapshot yet, will retry",
                        snapshot_id=sid,
                        details=details,
                    )
                    retry_later = True
                    continue
            self._unbegun_since.pop(sid, None)
            if code is None:
                self.backoff.reset()
                self._log.info("snapshot reported", snapshot_id=report.snapshot_id)
            elif code in REFUSED_FOR_GOOD or code == NOT_BEGUN:
                self._log.error(
                    "snapshot report refused by the collector, dropped",
                    snapshot_id=report.snapshot_id,
                    collector=self.collector_address,
                    code=code.name,
                    details=details,
                )
            else:
                self._log.warning(
                    "snapshot report failed, will retry",
                    snapshot_id=report.snapshot_id,
                    collector=self.collector_address,
                    code=code.name,
                    details=details,
                )
                return False
            self._progress_sent.pop(report.snapshot_id, None)
            # No commit of its own (one fewer fsync per node per snapshot, off
            # the other nodes' critical path): the row goes with the next one.
            self.runtime.report_delivered_lazily(report)
        return not retry_later

    async def _send_progress(self, stub: pb_grpc.CollectorStub) -> None:
        active = set(self.runtime.active_snapshots)
        for sid in list(self._progress_sent):
            if sid not in active:
                del self._progress_sent[sid]
        # Built between two batches: from committed state only.
        reports = await self.committer.between_batches(
            lambda: self.runtime.progress_reports(older_than=self.progress_after)
        )
        for report in reports:
            open_channels = tuple(report.open_channels)
            if self._progress_sent.get(report.snapshot_id) == open_channels:
                continue
            code, details = await self._send(stub, report)
            if code is None or code in REFUSED_FOR_GOOD or code == NOT_BEGUN:
                self._progress_sent[report.snapshot_id] = open_channels
            if code is None:
                self._log.info(
                    "snapshot progress reported",
                    snapshot_id=report.snapshot_id,
                    open_channels=list(open_channels),
                )
            else:
                self._log.debug(
                    "progress report not delivered",
                    snapshot_id=report.snapshot_id,
                    code=code.name,
                    details=details,
                )

    async def _send(
        self, stub: pb_grpc.CollectorStub, report: pb.LocalSnapshot
    ) -> tuple[grpc.StatusCode | None, str]:
        try:
            await stub.ReportLocalSnapshot(report, timeout=REPORT_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
        return None, ""
