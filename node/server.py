"""Wiring of one node process on one asyncio event loop; `serve()`.

Everything a node does runs as tasks on one event loop (grpc.aio): the gRPC
server and its handlers, one sender task per outgoing channel, the group
committer, the reporter and the workload. The only other thread the node
may add is the committer's writer thread, which runs SQLite commits under
`synchronous=full` (node/committer.py); gRPC's
C core keeps a few threads of its own. So the thread count does not grow
with the number of channels or streams, and a slow or hostile peer holds no
thread: health, status and StartSnapshot are always answered.

Servicers are adapters: they convert and call the runtime (through the
committer for anything that changes state). Two places meet gRPC's security:
`transport.add_port` (server credentials) and `RunningNode.channel_to`
(client credentials); servicer methods receive the context, so a peer's
identity can be read from it.

Shutdown (SIGTERM/SIGINT): health says NOT_SERVING, the workload stops,
outgoing streams are cancelled, the server stops with `grace` for in-flight
RPCs (then cancels them, whatever the peers do), queued events are
committed, the store is closed. A watchdog ends the process if all that has
not finished within STOP_DEADLINE seconds, inside Docker's 10 s stop grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from structlog.contextvars import bind_contextvars, bound_contextvars

from common.authz import NODE_POLICY, AioAuthorizingInterceptor, Policy
from common.config import ClusterConfig, port_of
from common.crash import crash_point
from common.metrics import MetricsServer, NodeMetrics, instrument_node
from common.timeutil import new_snapshot_id
from common.tls import RefusalLog, TlsFiles
from node.channels import ChannelService, PeerSender, StreamLimits
from node.committer import GroupCommitter
from node.core import InvalidSnapshotId, validate_snapshot_id
from node.reporter import Reporter
from node.restore import Acknowledge, Install, Phase, Refuse, RestoreTarget, Resume, Vote
from node.runtime import (
    AbortRestore,
    Batch,
    CommitRestore,
    MarkStale,
    NodeClosed,
    NodeRuntime,
    PrepareRestore,
    SetWorkload,
    StartSnapshot,
    Unavailable,
)
from node.storage import Store
from node.transport import SERVER_OPTIONS, PortUnavailable, add_port, open_channel
from node.workload import Workload
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

__all__ = ["NodeOptions", "NodeServer", "PortUnavailable", "RunningNode", "serve"]

_log = structlog.get_logger("node.server")

NODE_SERVICE = "chandy_lamport.Node"
DEFAULT_GRACE = 1.0
STOP_DEADLINE = 8.0  # seconds from SIGTERM to exit, whatever happens
REJOIN_WAIT = 15.0  # seconds --rejoin waits for the channel handshakes

T = TypeVar("T")


class NodeServicer(pb_grpc.NodeServicer):
    """With mutual TLS, who may call which method is decided by the interceptor
    (common/authz.py: StartSnapshot only operators, GetStatus operators and the
    collector, ...); a Channel stream is checked in ChannelService too: only
    from the certificate of the sender it claims."""

    def __init__(self, node: RunningNode) -> None:
        self.node = node
        self._log = _log.bind(node_id=node.node_id)

    async def Channel(  # noqa: N802 (gRPC method name)
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        assert self.node.channels is not None
        await self.node.channels.serve(context)

    async def StartSnapshot(  # noqa: N802
        self, request: pb.StartSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartSnapshotReply:
        snapshot_id = request.snapshot_id or new_snapshot_id()
        try:
            validate_snapshot_id(snapshot_id)
        except InvalidSnapshotId as error:
            self._log.warning("snapshot request rejected", reason=str(error))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        committer = self.node.committer
        assert committer is not None
        with bound_contextvars(snapshot_id=snapshot_id):
            try:
                already = bool(await committer.apply(StartSnapshot(snapshot_id)))
            except NodeClosed as error:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            except Unavailable as error:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            except Exception as error:
                self._log.error("snapshot start failed", error=repr(error))
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"could not start: {error}")
            if already:
                self._log.info("snapshot request for an id already recorded")
        return pb.StartSnapshotReply(snapshot_id=snapshot_id, already_recorded=already)

    async def GetStatus(  # noqa: N802
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeStatus:
        assert self.node.runtime is not None
        return self.node.runtime.status()

    # The restore protocol (node/restore.py): each message is an event through
    # the committer, so the answer goes out only once its state is on disk.

    async def _apply(self, event: object, context: grpc.aio.ServicerContext) -> object:
        committer = self.node.committer
        assert committer is not None
        try:
            return await committer.apply(event)  # type: ignore[arg-type]
        except NodeClosed as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            raise

    async def PrepareRestore(  # noqa: N802
        self, request: pb.PrepareRestoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareRestoreReply:
        t = request.target
        target = RestoreTarget(
            restore=int(t.restore),
            epoch=int(t.epoch),
            snapshot_id=t.snapshot_id,
            balance=int(t.balance),
            resend={ch.peer: tuple(int(a) for a in ch.amounts) for ch in t.resend},
        )
        if target.restore < 1 or target.epoch < 1:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a restore target needs restore >= 1, epoch >= 1"
            )
        crash_point("before-prepare", self.node.node_id)
        vote = await self._apply(PrepareRestore(target), context)
        assert isinstance(vote, Vote)
        crash_point("after-prepare", self.node.node_id)
        self._log.info(
            "restore prepare",
            restore=target.restore,
            epoch=target.epoch,
            snapshot_id=target.snapshot_id,
            vote=vote.ok,
            reason=vote.reason,
        )
        assert self.node.runtime is not None
        return pb.PrepareRestoreReply(ok=vote.ok, reason=vote.reason, epoch=self.node.runtime.epoch)

    async def CommitRestore(  # noqa: N802
        self, request: pb.CommitRestoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestoreAck:
        crash_point("before-commit", self.node.node_id)
        outcome = await self._apply(
            CommitRestore(int(request.restore), int(request.epoch)), context
        )
        if isinstance(outcome, Refuse):
            self._log.warning("restore commit refused", reason=outcome.reason)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, outcome.reason)
        crash_point("after-commit", self.node.node_id)
        if isinstance(outcome, Install):
            return pb.RestoreAck(
                detail=f"restore {request.restore} installed at epoch {request.epoch}"
            )
        assert isinstance(outcome, Acknowledge)
        return pb.RestoreAck(detail=outcome.detail)

    async def AbortRestore(  # noqa: N802
        self, request: pb.AbortRestoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestoreAck:
        outcome = await self._apply(AbortRestore(int(request.restore)), context)
        crash_point("after-abort", self.node.node_id)
        if isinstance(outcome, Resume):
            self._log.info("restore aborted", restore=request.restore)
            return pb.RestoreAck(detail=f"restore {request.restore} aborted")
        assert isinstance(outcome, Acknowledge)
        return pb.RestoreAck(detail=outcome.detail)

    async def SetWorkload(  # noqa: N802
        self, request: pb.SetWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeStatus:
        await self._apply(SetWorkload(request.running), context)
        self._log.info("workload " + ("resumed" if request.running else "paused"))
        assert self.node.runtime is not None
        return self.node.runtime.status()


@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path
    listen_host: str = "127.0.0.1"
    # Mutual TLS with these files; None: plaintext, nobody checked (explicit --plaintext).
    tls: TlsFiles | None = None
    port: int | None = None  # None: the port of the node's own address; 0: any free port
    max_transfers: int | None = None
    # NORMAL: a commit survives kill -9 (see node/storage.py and the README).
    db_synchronous: str = "NORMAL"
    metrics_port: int | None = None  # /metrics (common/metrics.py); None: none, 0: any free port
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    # --rejoin: if the channel handshakes find this node's data dir stale (empty
    # or an old copy), ask the collector to restore the latest complete snapshot.
    rejoin: bool = False


class RunningNode:
    """One node on the current event loop: `await start()`, then `await stop()`."""

    def __init__(self, config: ClusterConfig, node_id: str, options: NodeOptions) -> None:
        config.node(node_id)  # ConfigError now, before anything is created
        self.config = config
        self.node_id = node_id
        self.options = options
        self.port = 0
        self.runtime: NodeRuntime | None = None
        self.committer: GroupCommitter | None = None
        self.channels: ChannelService | None = None
        self.workload: Workload | None = None
        self.reporter: Reporter | None = None
        self.senders: dict[str, PeerSender] = {}
        self._store: Store | None = None
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []
        self._committer_task: asyncio.Task[None] | None = None
        self._client_channels: list[grpc.aio.Channel] = []
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._serving: bool | None = None
        self.metrics: NodeMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self._log = _log.bind(node_id=node_id)
        self.refusals = RefusalLog(self._log)

    def channel_to(self, role: str, name: str, address: str) -> grpc.aio.Channel:
        """The one place the node makes a client channel (`role` "node" or
        "collector", `name` its id): credentials and TLS target name go here."""
        channel = open_channel(address, self.options.tls, role, name)
        self._client_channels.append(channel)
        return channel

    async def start(self) -> int:
        """Load state, listen, start the tasks; returns the bound port."""
        config, options = self.config, self.options
        bind_contextvars(node_id=self.node_id)
        self._store = store = Store(options.data_dir, synchronous=options.db_synchronous)
        try:
            self.runtime = runtime = NodeRuntime(config, self.node_id, store)
        except BaseException:
            self._close_store()
            raise
        if options.metrics_port is not None:  # before anything uses the runtime
            self.metrics = NodeMetrics(runtime.outgoing)
            instrument_node(runtime, store, self.metrics)
        self.committer = committer = GroupCommitter(
            runtime,
            self._on_published,
            commit_on_loop=options.db_synchronous.upper() != "FULL",  # see node/committer.py
        )
        runtime.require_handshake = True
        self.channels = ChannelService(
            runtime,
            committer,
            options.stream_limits,
            authenticate=options.tls is not None,
            refusals=self.refusals,
            on_stale=self._on_stale,
        )
        self._server = server = grpc.aio.server(
            # Mutual TLS: who may call what (common/authz.py).
            interceptors=(
                [AioAuthorizingInterceptor(Policy(NODE_POLICY), self.refusals)]
                if options.tls is not None
                else []
            ),
            options=SERVER_OPTIONS,
        )
        pb_grpc.add_NodeServicer_to_server(NodeServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        own_port = port_of(config.node(self.node_id).address)
        port = own_port if options.port is None else options.port
        address = f"{options.listen_host}:{port}"
        try:
            self.port = add_port(server, address, options.tls)
        except PortUnavailable:
            self._close_store()
            raise
        self._committer_task = asyncio.create_task(committer.run(), name="committer")
        await server.start()
        if self.metrics is not None:
            try:
                self.metrics_server = MetricsServer(
                    self.metrics.registry, options.listen_host, options.metrics_port or 0
                )
            except OSError as error:
                await server.stop(0)
                self.committer.close()
                await self._committer_task
                self.committer.shutdown_writer()
                self._close_store()
                raise PortUnavailable(
                    f"cannot serve metrics on {options.listen_host}:{options.metrics_port}: "
                    f"{error.strerror or error}"
                ) from error
        for peer in runtime.outgoing:
            channel = self.channel_to("node", peer, config.node(peer).address)
            self.senders[peer] = PeerSender(
                runtime, peer, channel, config.link_delay, on_stale=self._on_stale
            )
        collector = self.channel_to("collector", "collector", config.collector_address)
        self.reporter = Reporter(runtime, committer, collector, config.collector_address)
        self.workload = Workload(
            runtime,
            committer,
            rate=config.workload.transfer_rate,
            max_amount=config.workload.max_amount,
            max_transfers=options.max_transfers,
        )
        for name, runner in (
            *((f"sender-{peer}", sender.run) for peer, sender in self.senders.items()),
            ("reporter", self.reporter.run),
            ("workload", self.workload.run),
            *((("rejoin", self._rejoin),) if options.rejoin else ()),
        ):
            self._tasks.append(asyncio.create_task(_logged(runner, name), name=name))
        await self._update_health()
        self._log.info(
            "node serving",
            listen=f"{options.listen_host}:{self.port}",
            metrics=self.metrics_server.port if self.metrics_server else None,
            incoming=list(runtime.incoming),
            outgoing=list(runtime.outgoing),
            collector=config.collector_address,
            mutual_tls=options.tls is not None,
        )
        return self.port

    async def _rejoin(self) -> None:
        """`--rejoin`: wait for the channel handshakes; if they found this node
        stale, ask the collector for a restore of the latest complete snapshot
        (retrying while the collector is unreachable). Refusals are logged and
        shown in the status: nothing else changes."""
        runtime = self.runtime
        assert runtime is not None
        channels = len(runtime.incoming) + len(runtime.outgoing)
        deadline = asyncio.get_running_loop().time() + REJOIN_WAIT
        while not runtime.participant.stale:
            connected = sum(1 for c in runtime.status().channels if c.connected)
            if connected >= channels or asyncio.get_running_loop().time() > deadline:
                self._log.info("rejoin: the channel handshakes found this node current")
                return
            await asyncio.sleep(0.2)
        self._log.warning("rejoin: asking for a restore", reason=runtime.participant.stale)
        stub = pb_grpc.CollectorStub(
            self.channel_to("collector", "collector", self.config.collector_address)
        )
        while runtime.participant.stale:
            try:
                reply = await stub.Restore(
                    pb.RestoreRequest(snapshot_id="latest", timeout_seconds=60), timeout=70
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    runtime.rejoin_note = f"rejoin refused: {error.details()}"
                    self._log.error("rejoin refused", reason=error.details())
                    return
                self._log.info("rejoin: collector not answering yet", code=error.code().name)
                await asyncio.sleep(2.0)
                continue
            self._log.info("rejoin: restore finished", record=reply.json[:400])
            await asyncio.sleep(1.0)

    def _on_stale(self, reason: str) -> None:
        """A channel handshake found this node's state stale: store it, stop serving."""
        if self.committer is not None and self.runtime is not None and not self.runtime.closed:
            self.committer.submit(MarkStale(reason))

    async def _update_health(self) -> None:
        """SERVING unless stale (a prepared node is paused, not broken)."""
        assert self.runtime is not None
        serving = self.runtime.participant.phase is not Phase.STALE
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if not serving:
            self._log.error("not serving", reason=self.runtime.participant.stale)
        for name in ("", NODE_SERVICE):
            await self._health.set(name, status)

    def _on_published(self, batch: Batch) -> None:
        if batch.reset:
            # A restore committed: every stream of the old epoch ends; the new
            # ones handshake in the new epoch (and resend from the new outbox).
            if self.channels is not None:
                self.channels.drop_all()
            for sender in self.senders.values():
                sender.restart()
        if batch.participant is not None and getattr(self, "_serving", None) is not None:
            task = asyncio.get_running_loop().create_task(self._update_health())
            self._health_tasks.add(task)
            task.add_done_callback(self._health_tasks.discard)
        for peer in {peer for peer, _ in batch.frames}:
            sender = self.senders.get(peer)
            if sender is not None:
                sender.ready.set()
        if batch.reports and self.reporter is not None:
            self.reporter.ready.set()

    async def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop the workload and streams, then the server (in-flight RPCs get
        `grace`), commit what is queued, close the DB."""
        with contextlib.suppress(Exception):
            await self._health.enter_graceful_shutdown()
        if self.workload is not None:
            self.workload.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.stop(grace), grace + 2.0)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        stuck = False
        if self.committer is not None and self._committer_task is not None:
            self.committer.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._committer_task), 3.0)
            except (TimeoutError, Exception):
                stuck = not self._committer_task.done()
        if self.runtime is not None and not stuck:
            self.runtime.close()  # flushes lazy acks; after this nothing touches the store
        if self.committer is not None and not stuck:
            self.committer.shutdown_writer()
        for channel in self._client_channels:
            with contextlib.suppress(Exception):
                await channel.close(None)
        if not stuck:
            self._close_store()
        self._log.info("node stopped", stats=vars(self.runtime.stats) if self.runtime else {})

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


async def _logged(runner: Callable[[], object], name: str) -> None:
    """Run a node task; a crash is logged (it would otherwise vanish)."""
    try:
        await runner()  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("node task crashed", task=name)
        raise


class NodeServer:
    """A `RunningNode` on its own event loop thread: for tests and benchmarks
    that run nodes in-process. `start()`, then `stop()`."""

    def __init__(self, config: ClusterConfig, node_id: str, options: NodeOptions) -> None:
        self.node = RunningNode(config, node_id, options)
        self.node_id = node_id
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"node-{node_id}", daemon=True
        )

    @property
    def runtime(self) -> NodeRuntime | None:
        return self.node.runtime

    @property
    def workload(self) -> Workload | None:
        return self.node.workload

    @property
    def metrics_server(self) -> MetricsServer | None:
        return self.node.metrics_server

    @property
    def metrics(self) -> NodeMetrics | None:
        return self.node.metrics

    def start(self) -> int:
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self.node.start(), self._loop).result(30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            raise
        return self.port

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the node's loop thread (state is not thread-safe)."""

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            await self.node.stop(grace)
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(STOP_DEADLINE + grace)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()


def serve(config: ClusterConfig, node_id: str, options: NodeOptions) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down gracefully."""
    asyncio.run(_serve(config, node_id, options))


async def _serve(config: ClusterConfig, node_id: str, options: NodeOptions) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    bind_contextvars(node_id=node_id)
    node = RunningNode(config, node_id, options)
    await node.start()
    _log.info("node ready", pid=os.getpid())
    await stop.wait()
    _log.info("shutdown requested", signal=received[0] if received else "")
    watchdog = threading.Timer(STOP_DEADLINE, _force_exit, args=(node_id,))
    watchdog.daemon = True
    watchdog.start()
    await node.stop()
    watchdog.cancel()


def _force_exit(node_id: str) -> None:  # pragma: no cover - the last resort
    _log.error("shutdown did not finish in time; exiting", deadline=STOP_DEADLINE)
    os._exit(1)
