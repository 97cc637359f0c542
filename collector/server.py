"""The Collector gRPC service: a thin adapter around `Assembly` and `SnapshotStore`.

Threads: gRPC runs the handlers on a pool; one lock (a Condition) guards the
assembly and the store, and is notified whenever a snapshot changes so that
`WaitSnapshot` streams can report progress. A ticker thread finishes the
snapshots whose deadline has passed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, NoReturn

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from collector.admission import Admission, Limits
from collector.assembly import (
    Assembly,
    InvalidReport,
    Progress,
    ReportOutcome,
    check_snapshot_id,
    validate_report,
)
from collector.document import NodeReport
from collector.restore import RestoreRefused
from collector.retention import Retention
from collector.store import SnapshotStore
from common.authz import COLLECTOR_POLICY, AuthorizingInterceptor, Policy
from common.config import ClusterConfig
from common.net import CHANNEL_OPTIONS
from common.tls import RefusalLog, TlsFiles, add_port, open_channel, peer_identity, refusal
from node.core import LocalSnapshot, RecordedMessage
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

log = structlog.get_logger("collector")

SERVICE_NAME = "chandy_lamport.Collector"
TICK_SECONDS = 0.2
# How often a WaitSnapshot stream repeats its progress when nothing changes.
HEARTBEAT_SECONDS = 2.0
# The shortest time between two progress messages of one WaitSnapshot stream.
PROGRESS_SECONDS = 0.1
# Trailing metadata of ListSnapshots: how many snapshot files retention deleted.
PRUNED_METADATA = "cl-pruned"
# Finished documents kept in memory for WaitSnapshot streams.
RECENT_DOCUMENTS = 64


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the RPC with an error status (context.abort raises; this tells the type checker)."""
    context.abort(code, details)
    raise AssertionError("unreachable")


def report_from_pb(message: pb.LocalSnapshot) -> NodeReport:
    """Convert the wire form; fields are checked later by `validate_report`."""
    channels: dict[str, tuple[RecordedMessage, ...]] = {}
    for state in message.channels:
        if state.sender in channels:
            raise InvalidReport(
                f"{message.node_id}: the channel from {state.sender!r} is reported twice"
            )
        channels[state.sender] = tuple(
            RecordedMessage(int(m.transfer_seq), int(m.amount)) for m in state.messages
        )
    snapshot = LocalSnapshot(
        snapshot_id=message.snapshot_id,
        node_id=message.node_id,
        balance=int(message.balance),
        sent={peer: int(count) for peer, count in message.sent.items()},
        received={peer: int(count) for peer, count in message.received.items()},
        channels=channels,
        initiated=message.initiated,
        epoch=int(message.epoch),
    )
    return NodeReport(
        snapshot,
        message.recorded_at,
        message.completed_at,
        complete=message.complete,
        open_channels=tuple(message.open_channels),
        timeline=tuple(
            {
                "kind": event.kind,
                "peer": event.peer,
                "seq": int(event.seq),
                "amount": int(event.amount),
                "snapshot_id": event.snapshot_id,
                "at": event.at,
                "lamport": int(event.lamport),
            }
            for event in message.timeline
        ),
        lamport_recorded=int(message.lamport_recorded),
    )


def fill_zero_counters(config: ClusterConfig, report: NodeReport) -> NodeReport:
    """The report's counters for exactly this node's channels, missing ones as 0, so
    the document lists every channel's counter whatever the sender left out."""
    snap = report.snapshot
    sent = {peer: int(snap.sent.get(peer, 0)) for peer in config.outgoing(snap.node_id)}
    received = {peer: int(snap.received.get(peer, 0)) for peer in config.incoming(snap.node_id)}
    return dataclasses.replace(
        report, snapshot=dataclasses.replace(snap, sent=sent, received=received)
    )


NODE = frozenset({"node"})


class CollectorService(pb_grpc.CollectorServicer):
    def __init__(
        self,
        config: ClusterConfig,
        store: SnapshotStore,
        clock: Callable[[], float] = time.time,
        *,
        authenticate: bool = False,
        limits: Limits | None = None,
    ) -> None:
        """`authenticate`: the server runs mutual TLS, so every call is checked
        against the caller's certificate (False only for an explicit plaintext run)."""
        self.config = config
        self.store = store
        self.clock = clock
        self.authenticate = authenticate
        self.admission = Admission(limits)
        self.retention = Retention(
            store.directory, self.admission.limits.keep, (s.snapshot_id for s in store.finished())
        )
        self.refusals = RefusalLog(log)
        self._cond = threading.Condition()
        self._finished_since_compact = False
        # The last documents finished: text, reported, missing, recorded (what a
        # WaitSnapshot stream sends), so that waiters neither read the file
        # back nor parse it again.
        self._recent: OrderedDict[str, tuple[str, list[str], list[str], list[str]]] = OrderedDict()
        # Read by the dashboard and /metrics (collector/web): called with the lock
        # held for every finished document, and a tally of report outcomes.
        self.on_document: list[Callable[[dict[str, Any]], object]] = []
        self.report_outcomes: Counter[str] = Counter()
        self.assembly = Assembly(
            config,
            {s.snapshot_id: (s.status, s.completed_at) for s in store.finished()},
            require_begin=True,
        )
        self._reload_pending()
        self._stopping = threading.Event()
        # The restore service (collector/restoring.py), set by CollectorServer.
        self.restores: Any = None
        self._ticker = threading.Thread(
            target=self._tick_loop, name="collector-ticker", daemon=True
        )

    @property
    def lock(self) -> threading.Condition:
        """The lock that guards the assembly (the dashboard reads under it)."""
        return self._cond

    # ------------------------------------------------------------ lifecycle

    def _reload_pending(self) -> None:
        for pending in self.store.load_pending():
            bound = log.bind(snapshot_id=pending.snapshot_id)
            if self.assembly.is_finished(pending.snapshot_id):
                bound.info("pending reports of a finished snapshot dropped")
                continue
            for node_id, report in list(pending.reports.items()):
                try:
                    validate_report(self.config, report)
                except InvalidReport as error:
                    bound.error(
                        "stored report no longer valid, ignored", node_id=node_id, error=str(error)
                    )
                    del pending.reports[node_id]
            pending.initiators &= set(self.config.node_ids)
            self.assembly.restore(pending)
            bound.info(
                "pending snapshot reloaded",
                reported=sorted(pending.reports),
                initiators=sorted(pending.initiators),
            )
        # Everything may already be there (a crash just before writing the file),
        # or the deadline may have passed while the collector was down.
        with self._cond:
            for document in self.assembly.complete_ready(self.clock()):
                self._store_document(document)
            self._expire()
            self.store.compact(self.assembly.pending_snapshots)

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    def _tick_loop(self) -> None:
        while not self._stopping.wait(TICK_SECONDS):
            with self._cond:
                self._expire()
                if self._finished_since_compact:
                    # Off the reports' path: the log lines of finished snapshots go here.
                    self._finished_since_compact = False
                    self.store.compact(self.assembly.pending_snapshots)

    def _expire(self) -> None:
        for document in self.assembly.expire(self.clock()):
            self._store_document(document)

    def _store_document(self, document: dict[str, Any]) -> None:
        """Called with the lock held, for every snapshot that just finished:
        its document is written (once, durably) before anyone is told."""
        path, text = self.store.write_document_text(document)
        sid = document["snapshot_id"]
        self._recent[sid] = (text, *_reported_missing_of(document, self.config.node_ids))
        while len(self._recent) > RECENT_DOCUMENTS:
            self._recent.popitem(last=False)
        pruned = self.retention.written(sid)
        if pruned:
            self.assembly.forget_finished(pruned)
            for gone in pruned:
                self._recent.pop(gone, None)
        self._finished_since_compact = True
        for hook in self.on_document:
            hook(document)
        log.bind(snapshot_id=document["snapshot_id"]).info(
            "snapshot finished",
            status=document["status"],
            missing=document["missing"],
            waiting=document.get("waiting", {}),
            verified=document["verification"].get("ok"),
            duration_seconds=document["duration_seconds"],
            path=str(path),
        )
        self._cond.notify_all()

    # ------------------------------------------------------------- handlers

    def _authorize(
        self,
        context: grpc.ServicerContext,
        method: str,
        roles: frozenset[str],
        name: str | None = None,
    ) -> None:
        """Refuse the call unless the caller's certificate is one of `roles` (named `name`)."""
        peer = peer_identity(context)
        refused = refusal(peer, roles, name, tls=self.authenticate)
        if refused is not None:
            self._refuse(context, peer, method, *refused)

    def _refuse(
        self,
        context: grpc.ServicerContext,
        peer: Any,
        method: str,
        code: grpc.StatusCode,
        message: str,
        **fields: Any,
    ) -> NoReturn:
        self.refusals.refused(peer, method, code, message, **fields)
        _abort(context, code, message)

    def BeginSnapshot(
        self, request: pb.BeginSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.BeginSnapshotReply:
        bound = log.bind(snapshot_id=request.snapshot_id)
        ticket = 0
        try:
            with self._cond:
                sid = check_snapshot_id(request.snapshot_id)
                known = self.assembly.pending(sid) is not None or self.assembly.is_finished(sid)
                limited = self.admission.begin(
                    self.clock(), known=known, pending=len(self.assembly.pending_ids)
                )
                if limited is not None:
                    self._refuse(
                        context,
                        peer_identity(context),
                        "BeginSnapshot",
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        limited,
                        snapshot_id=sid,
                    )
                changed = self.assembly.begin(request.snapshot_id, request.initiators, self.clock())
                if changed:
                    pending = self.assembly.pending(request.snapshot_id)
                    assert pending is not None
                    ticket = self.store.append_begin(pending)
                    self._cond.notify_all()
        except InvalidReport as error:
            bound.warning("begin refused", error=str(error))
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if ticket:
            self.store.sync(ticket)  # durable before the initiator starts the snapshot
        bound.info(
            "snapshot begun" if changed else "begin for a known snapshot",
            initiators=list(request.initiators),
            finished=self.assembly.is_finished(request.snapshot_id),
        )
        return pb.BeginSnapshotReply()

    def ReportLocalSnapshot(
        self, request: pb.LocalSnapshot, context: grpc.ServicerContext
    ) -> pb.ReportReply:
        self._authorize(context, "ReportLocalSnapshot", NODE, request.node_id)
        sid, node_id = request.snapshot_id, request.node_id
        too_large = self.admission.report_size(request.ByteSize())
        if too_large is not None:
            self._refuse(
                context, peer_identity(context), "ReportLocalSnapshot",
                grpc.StatusCode.RESOURCE_EXHAUSTED, too_large, snapshot_id=sid,
            )  # fmt: skip
        try:
            report = report_from_pb(request)
            validate_report(self.config, report)
        except InvalidReport as error:
            self.report_outcomes["invalid"] += 1
            log.warning("report refused", snapshot_id=sid, node_id=node_id, error=str(error))
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid report: {error}")
        report = fill_zero_counters(self.config, report)
        ticket = 0
        with self._cond:
            not_begun = self.admission.report_begun(
                sid, begun=self.assembly.pending(sid) is not None,
                finished=self.assembly.is_finished(sid),
            )  # fmt: skip
            if not_begun is not None:
                self._refuse(
                    context, peer_identity(context), "ReportLocalSnapshot",
                    grpc.StatusCode.FAILED_PRECONDITION, not_begun, snapshot_id=sid,
                )  # fmt: skip
            outcome = self.assembly.classify(report)
            if outcome is ReportOutcome.ACCEPTED:
                # The last report is not logged: the document it finishes is
                # written (durably) before it is acknowledged.
                last = self.assembly.would_finish(report)
                if not last:
                    ticket = self.store.append_report(report)
                outcome, document = self.assembly.add_report(report, self.clock())
                if document is not None:
                    self._store_document(document)
                    ticket = 0
                elif last:  # not expected; never acknowledge a report not on disk
                    ticket = self.store.append_report(report)
                self._cond.notify_all()
        if ticket:
            # Durable before it is acknowledged (a restart keeps it); reports
            # arriving together share one fsync.
            self.store.sync(ticket)
        self.report_outcomes[outcome.value] += 1
        # Accepted reports and retries are the normal path: debug only (the
        # snapshot's one info line is "snapshot finished"); what is refused or
        # ignored is a warning.
        if outcome is ReportOutcome.ACCEPTED:
            log.debug(
                "report accepted" if report.complete else "progress report accepted",
                snapshot_id=sid,
                node_id=node_id,
                balance=report.snapshot.balance,
                open_channels=report.open_channels,
            )
        elif outcome is ReportOutcome.DUPLICATE:
            log.debug(
                "duplicate report acknowledged",
                snapshot_id=sid,
                node_id=node_id,
                complete=report.complete,
            )
        elif outcome is ReportOutcome.ALREADY_FINISHED:
            log.warning(
                "report for a finished snapshot acknowledged and ignored",
                snapshot_id=sid,
                node_id=node_id,
            )
        elif outcome is ReportOutcome.NOT_BEGUN:
            log.warning(
                "report for a snapshot nobody began refused", snapshot_id=sid, node_id=node_id
            )
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"snapshot {sid} was never begun at this collector: an "
                "initiator calls Collector.BeginSnapshot before starting a snapshot",
            )
        else:
            log.error(
                "conflicting report refused: this node reported a different state before",
                snapshot_id=sid,
                node_id=node_id,
            )
            _abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"{node_id} already reported a different state for {sid}",
            )
        return pb.ReportReply()

    def GetSnapshot(
        self, request: pb.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.SnapshotDocument:
        snapshot_id = request.snapshot_id or "latest"
        if snapshot_id != "latest":
            try:
                check_snapshot_id(snapshot_id)
            except InvalidReport as error:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        with self._cond:
            if snapshot_id != "latest" and self.assembly.pending(snapshot_id) is not None:
                return pb.SnapshotDocument(snapshot_id=snapshot_id, status="pending")
            text = self.store.read_text(snapshot_id)
        if text is None:
            what = (
                "no snapshot has finished yet"
                if snapshot_id == "latest"
                else f"unknown snapshot {snapshot_id}"
            )
            _abort(context, grpc.StatusCode.NOT_FOUND, what)
        document = json.loads(text)
        return pb.SnapshotDocument(
            snapshot_id=document["snapshot_id"], status=document["status"], json=text
        )

    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.SnapshotList:
        with self._cond:
            finished = self.assembly.finished_ids
            pending = self.assembly.pending_ids
        # How many old files retention deleted (no proto field for it yet).
        context.set_trailing_metadata(((PRUNED_METADATA, str(self.retention.pruned)),))
        snapshots = [
            pb.SnapshotDocument(snapshot_id=sid, status=status) for sid, status in finished
        ]
        snapshots += [pb.SnapshotDocument(snapshot_id=sid, status="pending") for sid in pending]
        return pb.SnapshotList(snapshots=snapshots)

    def WaitSnapshot(
        self, request: pb.WaitSnapshotRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.SnapshotProgress]:
        snapshot_id = request.snapshot_id
        try:
            check_snapshot_id(snapshot_id)
        except InvalidReport as error:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        give_up = (
            time.monotonic() + request.timeout_seconds if request.timeout_seconds > 0 else None
        )
        last: Progress | None = None
        last_sent = -math.inf
        while context.is_active() and not self._stopping.is_set():
            message = None
            with self._cond:
                progress = self.assembly.progress(snapshot_id)
                if progress is None:
                    _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown snapshot {snapshot_id}")
                if progress.status != "pending":
                    final = self._finished_progress(snapshot_id, progress.status)
                else:
                    final = None
                    # A change is sent at most every PROGRESS_SECONDS (the reports
                    # of one snapshot arrive together: one message, not one per
                    # report), the same state again every HEARTBEAT_SECONDS.
                    wait = PROGRESS_SECONDS if progress != last else HEARTBEAT_SECONDS
                    now = time.monotonic()
                    if now - last_sent >= wait:
                        last, last_sent = progress, now
                        message = pb.SnapshotProgress(
                            snapshot_id=snapshot_id,
                            status="pending",
                            reported=progress.reported,
                            missing=progress.missing,
                            recorded=progress.recorded,
                        )
                    else:
                        self._cond.wait(min(last_sent + wait - now, 0.5))
            # Sent without the lock: reports go on while the initiator reads.
            if final is not None:
                yield final
                return
            if message is not None:
                yield message
            if give_up is not None and time.monotonic() >= give_up:
                _abort(
                    context,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"snapshot {snapshot_id} still pending after {request.timeout_seconds:g}s",
                )
        if self._stopping.is_set():
            _abort(context, grpc.StatusCode.UNAVAILABLE, "collector is shutting down")

    def _finished_progress(self, snapshot_id: str, status: str) -> pb.SnapshotProgress:
        """The last message of a WaitSnapshot stream: the finished document. Called with
        the lock held."""
        recent = self._recent.get(snapshot_id)
        if recent is not None:
            text, reported, missing, recorded = recent
        else:
            text = self.store.read_text(snapshot_id) or ""
            reported, missing, recorded = _reported_missing(text, self.config.node_ids)
        return pb.SnapshotProgress(
            snapshot_id=snapshot_id,
            status=status,
            reported=reported,
            missing=missing,
            recorded=recorded,
            json=text,
        )

    def Restore(self, request: pb.RestoreRequest, context: grpc.ServicerContext) -> pb.RestoreReply:
        if self.restores is None:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this collector does not restore")
        snapshot_id = request.snapshot_id or "latest"
        peer = peer_identity(context)
        if self.authenticate and peer is not None and peer.role == "node":
            # A node may only ask to rejoin: the latest snapshot, while it is stale.
            why = self.restores.rejoin_refusal(peer.name, snapshot_id)
            if why is not None:
                self._refuse(context, peer, "Restore", grpc.StatusCode.PERMISSION_DENIED, why)
            log.info("rejoin restore requested", node_id=peer.name)
        if snapshot_id != "latest":
            try:
                check_snapshot_id(snapshot_id)
            except InvalidReport as error:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        timeout = request.timeout_seconds if request.timeout_seconds > 0 else 60.0
        if not timeout <= 3600:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds must be <= 3600")
        from collector.restoring import NoSuchSnapshot

        try:
            record = self.restores.request(snapshot_id, timeout)
        except NoSuchSnapshot as error:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(error))
        except RestoreRefused as error:
            log.warning("restore refused", snapshot_id=snapshot_id, reason=str(error))
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return pb.RestoreReply(json=json.dumps(record.to_dict(), indent=2))

    def ListRestores(
        self, request: pb.ListRestoresRequest, context: grpc.ServicerContext
    ) -> pb.RestoreList:
        if self.restores is None:
            return pb.RestoreList()
        return pb.RestoreList(json=[json.dumps(r.to_dict()) for r in self.restores.records()])


def _reported_missing(text: str, node_ids: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """`_reported_missing_of` a finished document's text."""
    try:
        return _reported_missing_of(json.loads(text), node_ids)
    except ValueError:
        return [], [], []


def _reported_missing_of(
    document: dict[str, Any], node_ids: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    """(nodes with a complete local snapshot, the others, those of the others
    that recorded their state) of a finished document: the same split as a
    pending snapshot's progress, so the initiator's last progress line and its
    summary name the same nodes."""
    try:
        nodes = document["nodes"]
        complete = {n for n, state in nodes.items() if state.get("complete", True)}
    except (KeyError, TypeError, AttributeError):
        return [], [], []
    missing = [n for n in node_ids if n not in complete]
    return (
        [n for n in node_ids if n in complete],
        missing,
        [n for n in missing if n in nodes],
    )


class CollectorServer:
    """The running collector: gRPC server, health service and ticker.

    `tls`: mutual TLS with these files, every call checked against the caller's
    certificate; None runs plaintext with no checks (explicit `--plaintext` only).
    """

    def __init__(
        self,
        config: ClusterConfig,
        snapshot_dir: str,
        host: str,
        port: int,
        http_port: int | None = None,
        *,
        tls: TlsFiles | None = None,
        limits: Limits | None = None,
    ) -> None:
        """`http_port` None: no dashboard; 0: any free port (see `web.port`)."""
        limits = limits or Limits()
        self.service = CollectorService(
            config, SnapshotStore(snapshot_dir), authenticate=tls is not None, limits=limits
        )
        self.health = health.HealthServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="collector"),
            # Mutual TLS: who may call what (common/authz.py); the handlers check the rest.
            interceptors=(
                [AuthorizingInterceptor(Policy(COLLECTOR_POLICY), self.service.refusals)]
                if tls is not None
                else []
            ),
            options=[
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                # A report over the limit is refused by gRPC before it is even parsed;
                # the margin lets the handler name the limit for reports just above it.
                ("grpc.max_receive_message_length", limits.max_report_bytes + 64 * 1024),
                ("grpc.max_metadata_size", 8 * 1024),
            ],
        )
        pb_grpc.add_CollectorServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.tls = tls
        self.port = add_port(self.server, f"{host}:{port}", tls)
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        self.address = f"{host}:{self.port}"
        self.web = None
        if http_port is not None:
            from collector.web.server import WebServer

            def dial_node(node_id: str, address: str) -> grpc.Channel:
                return open_channel(address, tls, "node", node_id, CHANNEL_OPTIONS)

            self.web = WebServer(self.service, host, http_port, channel_factory=dial_node)

        from collector.restore_client import GrpcParticipants
        from collector.restoring import RestoreService

        def dial(node_id: str, address: str) -> grpc.Channel:
            return open_channel(address, tls, "node", node_id, CHANNEL_OPTIONS)

        self.participants = GrpcParticipants({node.id: node.address for node in config.nodes}, dial)
        self.service.restores = RestoreService(config, self.service.store, self.participants)

    def start(self) -> None:
        self.service.start()
        self.server.start()
        self.service.restores.recover()
        if self.web is not None:
            self.web.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "collector listening",
            address=self.address,
            snapshot_dir=str(self.service.store.directory),
            mutual_tls=self.tls is not None,
            keep_snapshots=self.service.admission.limits.keep,
        )

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.service.stop()
        self.service.restores.stop()
        if self.web is not None:
            self.web.stop()
        self.server.stop(grace).wait()
        self.participants.close()
        self.service.store.close()
        log.info("collector stopped")
