"""Prometheus metrics of a node, by convention (base units, `_total`, `_seconds`,
labels only for bounded dimensions: the peer of a channel, never snapshot ids).

    cl_node_balance                              gauge, read on scrape
    cl_node_transfers_sent_total{peer}           counter, read on scrape (the node's counters)
    cl_node_transfers_received_total{peer}       counter, read on scrape
    cl_node_unacked_frames{peer}                 gauge, read on scrape (sender's backlog)
    cl_node_channel_connected{peer}              gauge 0/1, read on scrape
    cl_node_active_snapshots                     gauge, read on scrape
    cl_node_reconnects_total{peer}               counter, incremented by the channel sender
    cl_node_commit_seconds                       histogram, observed around each commit

Values the node already keeps are not counted twice: a custom collector asks
the node for a `NodeReading` when Prometheus scrapes. Only reconnects and
commit latency are recorded on the hot path (a counter increment, one
histogram observation per commit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Commits are group commits of SQLite transactions: sub-millisecond to a few 100 ms.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class NodeReading:
    balance: int
    sent: Mapping[str, int] = field(default_factory=dict)  # peer -> transfers sent to it
    received: Mapping[str, int] = field(default_factory=dict)  # peer -> transfers from it
    unacked: Mapping[str, int] = field(default_factory=dict)  # peer -> unacked frames to it
    connected: Mapping[str, bool] = field(default_factory=dict)  # peer -> outgoing stream up
    active_snapshots: int = 0


class _Reading(Collector):
    def __init__(self, read: Callable[[], NodeReading]) -> None:
        self.read = read

    def collect(self) -> Iterator[Any]:
        reading = self.read()
        yield GaugeMetricFamily("cl_node_balance", "The node's balance now.", value=reading.balance)
        for name, help_text, values in (
            ("cl_node_transfers_sent", "Transfers sent, per outgoing channel.", reading.sent),
            (
                "cl_node_transfers_received",
                "Transfers received, per incoming channel.",
                reading.received,
            ),
        ):
            family = CounterMetricFamily(name, help_text, labels=["peer"])
            for peer, count in sorted(values.items()):
                family.add_metric([peer], count)
            yield family
        unacked = GaugeMetricFamily(
            "cl_node_unacked_frames",
            "Frames sent and not yet acknowledged, per outgoing channel.",
            labels=["peer"],
        )
        for peer, count in sorted(reading.unacked.items()):
            unacked.add_metric([peer], count)
        yield unacked
        connected = GaugeMetricFamily(
            "cl_node_channel_connected",
            "1 when the outgoing stream to the peer is up.",
            labels=["peer"],
        )
        for peer, up in sorted(reading.connected.items()):
            connected.add_metric([peer], 1.0 if up else 0.0)
        yield connected
        yield GaugeMetricFamily(
            "cl_node_active_snapshots",
            "Snapshots this node is recording now.",
            value=reading.active_snapshots,
        )


class NodeMetrics:
    """One node's registry: hot-path instruments plus the scrape-time reading."""

    def __init__(self, peers: list[str] | tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconnects = Counter(
            "cl_node_reconnects",
            "Times the outgoing stream to a peer was re-established.",
            ["peer"],
            registry=self.registry,
        )
        for peer in peers:  # present from the start, at 0
            self.reconnects.labels(peer)
        self.commit_seconds = Histogram(
            "cl_node_commit_seconds",
            "Time to make a batch of state changes durable (one commit).",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._reading: _Reading | None = None
        self._lock = threading.Lock()

    def read_with(self, read: Callable[[], NodeReading]) -> None:
        """Expose what `read` returns on every scrape (set once, when the node is wired)."""
        with self._lock:
            if self._reading is not None:
                self.registry.unregister(self._reading)
            self._reading = _Reading(read)
            self.registry.register(self._reading)


class MetricsServer:
    """prometheus_client's HTTP server for one registry (`/metrics` on its own port)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        self.port = int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def parse_metrics_port(text: str | None) -> int | None:
    """CL_METRICS_PORT / --metrics-port: None (or "off") for no metrics server."""
    if text is None or text == "" or text.lower() == "off":
        return None
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise ValueError(f"{text!r} is not a port number or 'off' (CL_METRICS_PORT)")
    return int(text)


def instrument_node(runtime: Any, store: Any, metrics: NodeMetrics) -> None:
    """Wire a node's metrics without touching its hot path's code.

    Readings come from `runtime.status()` (the same numbers `Node.GetStatus`
    answers) at scrape time. Reconnects are counted where the transport tells
    the runtime that an outgoing stream opened again (`set_connected`), and
    commit latency around `store.commit`: both by wrapping those two methods
    on these instances, so node/ needs one call to this function and nothing
    else.
    """

    def read() -> NodeReading:
        status = runtime.status()
        out = [c for c in status.channels if c.direction == "out"]
        incoming = [c for c in status.channels if c.direction == "in"]
        return NodeReading(
            balance=int(status.balance),
            sent={c.peer: int(c.sent_or_received) for c in out},
            received={c.peer: int(c.sent_or_received) for c in incoming},
            unacked={c.peer: int(c.unacked) for c in out},
            connected={c.peer: bool(c.connected) for c in out},
            active_snapshots=len(status.active_snapshots),
        )

    metrics.read_with(read)
    set_connected = runtime.set_connected
    opened: set[str] = set()

    def counting_set_connected(peer: str, direction: str, connected: bool) -> Any:
        if direction == "out" and connected:
            if peer in opened:
                metrics.reconnects.labels(peer).inc()
            opened.add(peer)
        return set_connected(peer, direction, connected)

    runtime.set_connected = counting_set_connected
    commit = store.commit

    def timed_commit(*args: Any, **kwargs: Any) -> Any:
        with metrics.commit_seconds.time():
            return commit(*args, **kwargs)

    store.commit = timed_commit
