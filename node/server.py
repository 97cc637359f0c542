"""Wiring of one node process: store, runtime, gRPC server, threads; `serve()`.

Servicers are adapters: they convert and call the runtime.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from structlog.contextvars import bind_contextvars, bound_contextvars

from common.authz import NODE_POLICY, AuthorizingInterceptor, Policy
from common.cli import ShutdownSignal
from common.config import ClusterConfig, port_of
from common.metrics import MetricsServer, NodeMetrics, instrument_node
from common.timeutil import new_snapshot_id
from common.tls import RefusalLog, TlsFiles, add_port
from node.channels import SERVER_OPTIONS, PeerSender, serve_channel
from node.core import InvalidSnapshotId, validate_snapshot_id
from node.reporter import Reporter
from node.runtime import NodeRuntime
from node.storage import Store
from node.workload import Workload
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

_log = structlog.get_logger("node.server")

NODE_SERVICE = "chandy_lamport.Node"
DEFAULT_GRACE = 1.0


class PortUnavailable(OSError):
    """The gRPC server could not bind its listen address."""


class NodeServicer(pb_grpc.NodeServicer):
    """`authenticate` (mutual TLS): who may call which method is decided by the
    interceptor (common/authz.py: StartSnapshot only operators, GetStatus
    operators and the collector, ...); a Channel stream is checked here too:
    only from the certificate of the sender it claims."""

    def __init__(self, runtime: NodeRuntime, authenticate: bool = False) -> None:
        self.runtime = runtime
        self.authenticate = authenticate
        self._log = _log.bind(node_id=runtime.node_id)
        self.refusals = RefusalLog(self._log)

    def Channel(  # noqa: N802 (gRPC method name)
        self, request_iterator: Iterator[pb.Frame], context: grpc.ServicerContext
    ) -> Iterator[pb.Ack]:
        return serve_channel(
            self.runtime,
            request_iterator,
            context,
            authenticate=self.authenticate,
            refusals=self.refusals,
        )

    def StartSnapshot(  # noqa: N802
        self, request: pb.StartSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.StartSnapshotReply:
        bind_contextvars(node_id=self.runtime.node_id)
        snapshot_id = request.snapshot_id or new_snapshot_id()
        try:
            validate_snapshot_id(snapshot_id)
        except InvalidSnapshotId as error:
            self._log.warning("snapshot request rejected", reason=str(error))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        with bound_contextvars(snapshot_id=snapshot_id):
            already = self.runtime.start_snapshot(snapshot_id)
            if already:
                self._log.info("snapshot request for an id already recorded")
        return pb.StartSnapshotReply(snapshot_id=snapshot_id, already_recorded=already)

    def GetStatus(  # noqa: N802
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext
    ) -> pb.NodeStatus:
        return self.runtime.status()


@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path
    listen_host: str = "127.0.0.1"
    # Mutual TLS with these files; None: plaintext, nobody checked (explicit --plaintext).
    tls: TlsFiles | None = None
    port: int | None = None  # None: the port of the node's own address; 0: any free port
    max_transfers: int | None = None
    db_synchronous: str = "FULL"
    metrics_port: int | None = None  # /metrics (common/metrics.py); None: none, 0: any free port


class NodeServer:
    """One running node. `start()`, then `stop()`; usable in-process by tests."""

    def __init__(self, config: ClusterConfig, node_id: str, options: NodeOptions) -> None:
        config.node(node_id)  # ConfigError now, before anything is created
        self.config = config
        self.node_id = node_id
        self.options = options
        self.port = 0
        self.runtime: NodeRuntime | None = None
        self.metrics: NodeMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self._store: Store | None = None
        self._server: grpc.Server | None = None
        self._log = _log.bind(node_id=node_id)
        self._health = health.HealthServicer()
        self._senders: list[PeerSender] = []
        self._reporter: Reporter | None = None
        self.workload: Workload | None = None

    def start(self) -> int:
        """Load state, listen, start the threads; returns the bound port."""
        config, options = self.config, self.options
        self._store = Store(options.data_dir, synchronous=options.db_synchronous)
        try:
            self.runtime = runtime = NodeRuntime(config, self.node_id, self._store)
        except BaseException:
            self._store.close()
            raise
        if options.metrics_port is not None:  # before any thread uses the runtime
            self.metrics = NodeMetrics(runtime.outgoing)
            instrument_node(runtime, self._store, self.metrics)
        workers = 2 * len(runtime.incoming) + 8  # every incoming stream holds a thread
        servicer = NodeServicer(runtime, authenticate=options.tls is not None)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"grpc-{self.node_id}"
            ),
            # Mutual TLS: who may call what (common/authz.py).
            interceptors=(
                [AuthorizingInterceptor(Policy(NODE_POLICY), servicer.refusals)]
                if options.tls is not None
                else []
            ),
            options=SERVER_OPTIONS,
        )
        pb_grpc.add_NodeServicer_to_server(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        own_port = port_of(config.node(self.node_id).address)
        port = own_port if options.port is None else options.port
        address = f"{options.listen_host}:{port}"
        try:
            self.port = add_port(self._server, address, options.tls)
        except RuntimeError as error:
            self._close_store()
            raise PortUnavailable(f"cannot listen on {address}: {error}") from error
        self._server.start()
        if self.metrics is not None:
            try:
                self.metrics_server = MetricsServer(
                    self.metrics.registry, options.listen_host, options.metrics_port or 0
                )
            except OSError as error:
                self._server.stop(0)
                self._close_store()
                raise PortUnavailable(
                    f"cannot serve metrics on {options.listen_host}:{options.metrics_port}: "
                    f"{error.strerror or error}"
                ) from error
        for peer in runtime.outgoing:
            self._senders.append(
                PeerSender(runtime, peer, config.node(peer).address, config.link_delay, options.tls)
            )
        self._reporter = Reporter(runtime, config.collector_address, tls=options.tls)
        self.workload = Workload(
            runtime,
            rate=config.workload.transfer_rate,
            max_amount=config.workload.max_amount,
            max_transfers=options.max_transfers,
        )
        for thread in (*self._senders, self._reporter, self.workload):
            thread.start()
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._health.set(NODE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
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

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop the workload, then the server (in-flight RPCs get `grace`), then the DB."""
        self._health.enter_graceful_shutdown()
        threads = [t for t in (self.workload, self._reporter, *self._senders) if t is not None]
        for thread in threads:
            thread.stop()
        if self._server is not None:
            self._server.stop(grace).wait()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.runtime is not None:
            self.runtime.close()  # after this no thread touches the store
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=grace)
        self._close_store()
        self._log.info("node stopped")

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def serve(config: ClusterConfig, node_id: str, options: NodeOptions) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down gracefully."""
    shutdown = ShutdownSignal()
    bind_contextvars(node_id=node_id)
    node = NodeServer(config, node_id, options)
    node.start()
    _log.info("node ready", pid=os.getpid())
    _log.info("shutdown requested", signal=shutdown.wait())
    node.stop()
