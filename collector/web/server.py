"""Runs the dashboard next to the collector's gRPC server: uvicorn in its own
thread, on a socket bound up front (so a busy port fails the start, and port 0
gets a free one that `port` reports)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import structlog
import uvicorn

from collector.web.app import create_app
from collector.web.cluster import ChannelFactory, ClusterProbe, NodeLive
from collector.web.index import Restores, SnapshotIndex
from collector.web.metrics import CollectorMetrics, collector_registry

if TYPE_CHECKING:
    from collector.server import CollectorService

log = structlog.get_logger("collector.web")


class CollectorSource:
    """What the dashboard reads from the running collector."""

    def __init__(self, service: CollectorService, probe: ClusterProbe) -> None:
        self.service = service
        self.probe = probe
        self._index = SnapshotIndex()
        with service.lock:
            ids = [sid for sid, _ in service.assembly.finished_ids]
        loaded = self._index.load(ids, service.store.read_text)
        log.info("snapshot index loaded", snapshots=loaded)
        service.on_document.append(self._index.add)

    @property
    def index(self) -> SnapshotIndex:
        return self._index

    def pending(self) -> list[str]:
        with self.service.lock:
            return list(self.service.assembly.pending_ids)

    def read_text(self, snapshot_id: str) -> str | None:
        return self.service.store.read_text(snapshot_id)

    def cluster(self) -> list[NodeLive]:
        return self.probe.status()

    def restores(self) -> Restores:
        """How many restores the collector's restore log holds, and the latest one."""
        from collector.restores import RESTORES_DIR, RestoreLog, RestoreLogError

        if not (self.service.store.directory / RESTORES_DIR).is_dir():
            return Restores(0)
        log = RestoreLog(self.service.store.directory)
        numbers = log.numbers()
        if not numbers:
            return Restores(0)
        try:
            latest = log.read(numbers[-1])
        except (OSError, RestoreLogError):
            return Restores(len(numbers))
        return Restores(len(numbers), latest.snapshot_id, latest.phase.value)

    def report_outcomes(self) -> Counter[str]:
        return Counter(self.service.report_outcomes)


class WebServer:
    def __init__(
        self,
        service: CollectorService,
        host: str,
        port: int,
        channel_factory: ChannelFactory | None = None,
    ) -> None:
        """`channel_factory`: how the "cluster now" probe dials a node (mutual TLS
        with the collector's certificate in a TLS cluster)."""
        self.probe = (
            ClusterProbe(service.config)
            if channel_factory is None
            else ClusterProbe(service.config, channel_factory=channel_factory)
        )
        self.source = CollectorSource(service, self.probe)
        metrics = CollectorMetrics(
            self.source.index,
            lambda: len(self.source.pending()),
            self.source.report_outcomes,
        )
        self.registry = collector_registry(metrics)
        self.app = create_app(self.source, self.registry)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, reuse_port=False)
        self.port = int(self.socket.getsockname()[1])
        self.address = f"{host}:{self.port}"
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="http", daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.address}")
            time.sleep(0.02)
        log.info("dashboard listening", address=self.address, url=f"http://{self.address}/")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5.0)
        self.probe.close()
        self.socket.close()
