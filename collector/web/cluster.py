"""The cluster now: every node's `Node.GetStatus`, asked concurrently, cached briefly.

The dashboard polls; however many browsers are open, each node is asked at
most once per `ttl` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from common.config import ClusterConfig
from common.net import CHANNEL_OPTIONS, describe_rpc_error
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

STATUS_TIMEOUT = 1.0


@dataclass(frozen=True)
class ChannelLive:
    peer: str
    direction: str  # "out" | "in"
    count: int  # transfers sent (out) or received (in)
    unacked: int
    connected: bool


@dataclass(frozen=True)
class NodeLive:
    node_id: str
    address: str
    healthy: bool
    balance: int | None = None
    active_snapshots: tuple[str, ...] = ()
    unacked: int | None = None
    workload_running: bool | None = None
    channels: tuple[ChannelLive, ...] = field(default=())
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["active_snapshots"] = list(self.active_snapshots)
        data["channels"] = [asdict(c) for c in self.channels]
        return data


def node_live_from_pb(node_id: str, address: str, reply: pb.NodeStatus) -> NodeLive:
    """Reads the per-channel fields when the node sends them (older nodes do not)."""
    channels = tuple(
        ChannelLive(
            peer=str(c.peer),
            direction=str(c.direction),
            count=int(c.sent_or_received),
            unacked=int(c.unacked),
            connected=bool(c.connected),
        )
        for c in getattr(reply, "channels", ())
    )
    running = reply.workload_running if hasattr(reply, "workload_running") else None
    return NodeLive(
        node_id=node_id,
        address=address,
        healthy=True,
        balance=int(reply.balance),
        active_snapshots=tuple(reply.active_snapshots),
        unacked=int(reply.unacknowledged_frames),
        workload_running=running,
        channels=channels,
    )


ChannelFactory = Callable[[str, str], grpc.Channel]


def insecure_channel(node_id: str, address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


class ClusterProbe:
    def __init__(
        self,
        config: ClusterConfig,
        ttl: float = 1.0,
        channel_factory: ChannelFactory = insecure_channel,
    ) -> None:
        self.config = config
        self.ttl = ttl
        self._factory = channel_factory
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._cached: tuple[float, list[NodeLive]] | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=min(16, max(1, len(config.node_ids))), thread_name_prefix="probe"
        )

    def _channel(self, node_id: str, address: str) -> grpc.Channel:
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = self._factory(node_id, address)
        return channel

    def _ask(self, node_id: str) -> NodeLive:
        address = self.config.node(node_id).address
        try:
            stub = pb_grpc.NodeStub(self._channel(node_id, address))
            reply = stub.GetStatus(pb.GetStatusRequest(), timeout=STATUS_TIMEOUT)
        except grpc.RpcError as error:
            return NodeLive(node_id, address, healthy=False, error=describe_rpc_error(error))
        return node_live_from_pb(node_id, address, reply)

    def status(self) -> list[NodeLive]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            nodes = list(self._pool.map(self._ask, self.config.node_ids))
            self._cached = (time.monotonic(), nodes)
            return nodes

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for channel in self._channels.values():
            channel.close()
