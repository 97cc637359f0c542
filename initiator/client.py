"""Trigger a snapshot and wait for it: the calls the initiator CLI and the demo share.

    take_snapshot(config, collector_address, ["n1"], snapshot_id) -> SnapshotOutcome

First `Collector.BeginSnapshot` (so the collector times the snapshot out even
if no node ever reports), then the `Collector.WaitSnapshot` stream is opened
and `Node.StartSnapshot` sent to every chosen node at once (non-blocking
futures, no threads), then the stream is read until the collector decides.

One gRPC channel per address for the whole process (`Connections`), so
`--count N` and the demo pay for connection set-up once. Imports are kept
to what a snapshot needs: this is on the path of every `cl-initiator` run.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from common.config import ClusterConfig
from common.net import CHANNEL_OPTIONS, describe_rpc_error
from common.tls import TlsFiles, open_channel
from initiator.summary import (
    EXIT_ERROR,
    EXIT_NO_INITIATOR,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Queued,
    exit_code,
)
from node.ids import snapshot_id_problem
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

RPC_TIMEOUT = 5.0
# How long the probe before a snapshot waits for a node's status: a node that
# cannot answer GetStatus in this time will not take part in the snapshot either.
PROBE_TIMEOUT = 2.0
# Trailing metadata of Collector.ListSnapshots (collector/server.py).
PRUNED_METADATA = "cl-pruned"

# (snapshot id, reported, missing, elapsed seconds, recorded): `missing` are the
# nodes whose local snapshot is not complete, `recorded` those of them that
# recorded their state and wait for markers.
ProgressCallback = Callable[[str, Sequence[str], Sequence[str], float, Sequence[str]], None]


class InitiatorError(Exception):
    """Something the user must know about; `exit_code` says how the CLI ends."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SnapshotNotFound(InitiatorError):
    """The collector knows no such snapshot (not an outage: exit EXIT_NOT_FOUND)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOT_FOUND)


class SnapshotIdTaken(InitiatorError):
    """The id names a snapshot that has finished already: a new one cannot have it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class NodeUnreachable(InitiatorError):
    """A chosen initiator did not answer the probe: the snapshot was not started."""

    def __init__(self, message: str, unreachable: Sequence[str]) -> None:
        super().__init__(message, EXIT_NO_INITIATOR)
        self.unreachable = tuple(unreachable)


def validated_id(snapshot_id: str) -> str:
    problem = snapshot_id_problem(snapshot_id)
    if problem is not None:
        raise InitiatorError(problem, exit_code=EXIT_USAGE)
    return snapshot_id


@dataclass(frozen=True)
class StartResult:
    node_id: str
    address: str
    ok: bool
    already_recorded: bool = False
    error: str = ""


@dataclass
class SnapshotOutcome:
    snapshot_id: str
    starts: list[StartResult] = field(default_factory=list)
    document: dict[str, Any] | None = None
    exit_code: int = 0

    @property
    def start_errors(self) -> list[StartResult]:
        return [s for s in self.starts if not s.ok]


class Connections:
    """One gRPC channel per peer, made on first use and reused until `close`.

    The one place the initiator makes channels. `tls`: the operator's
    certificate (mutual TLS, what the CLI uses); None only for a cluster run
    explicitly in plaintext. With TLS a channel accepts only the server whose
    certificate names the peer it was made for.
    """

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self._channels: dict[tuple[str, str, str], grpc.Channel] = {}
        self._lock = threading.Lock()

    def channel(
        self, address: str, role: str = "collector", name: str = "collector"
    ) -> grpc.Channel:
        with self._lock:
            key = (address, role, name)
            channel = self._channels.get(key)
            if channel is None:
                channel = self._channels[key] = open_channel(
                    address, self.tls, role, name, CHANNEL_OPTIONS
                )
            return channel

    def collector(self, address: str) -> pb_grpc.CollectorStub:
        return pb_grpc.CollectorStub(self.channel(address, "collector", "collector"))

    def node(self, address: str, node_id: str) -> pb_grpc.NodeStub:
        return pb_grpc.NodeStub(self.channel(address, "node", node_id))

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


# Shared by every call that is not given its own: one per TLS identity.
CONNECTIONS = Connections()
_SHARED: dict[TlsFiles | None, Connections] = {None: CONNECTIONS}


def connections_for(
    tls: TlsFiles | None = None, connections: Connections | None = None
) -> Connections:
    """`connections` if given, else the process's shared ones for `tls`."""
    if connections is not None:
        return connections
    shared = _SHARED.get(tls)
    if shared is None:
        shared = _SHARED[tls] = Connections(tls)
    return shared


@atexit.register
def _close_shared() -> None:
    for shared in _SHARED.values():
        shared.close()


def begin_snapshot(
    collector_address: str,
    snapshot_id: str,
    initiators: Sequence[str],
    timeout: float = RPC_TIMEOUT,
    connections: Connections | None = None,
    tls: TlsFiles | None = None,
) -> None:
    connections = connections_for(tls, connections)
    _collector_call(
        collector_address,
        lambda stub: stub.BeginSnapshot(
            pb.BeginSnapshotRequest(snapshot_id=snapshot_id, initiators=list(initiators)),
            timeout=timeout,
            wait_for_ready=True,
        ),
        connections,
    )


def start_on_node(
    node_id: str,
    address: str,
    snapshot_id: str,
    timeout: float = RPC_TIMEOUT,
    connections: Connections | None = None,
    tls: TlsFiles | None = None,
) -> StartResult:
    connections = connections_for(tls, connections)
    (result,) = _start_all([(node_id, address)], snapshot_id, timeout, connections)
    return result


def start_on_nodes(
    config: ClusterConfig,
    node_ids: Sequence[str],
    snapshot_id: str,
    timeout: float = RPC_TIMEOUT,
    connections: Connections | None = None,
    tls: TlsFiles | None = None,
) -> list[StartResult]:
    """Node.StartSnapshot at every node at once (same id); one result per node, in order."""
    connections = connections_for(tls, connections)
    targets = [(node_id, config.node(node_id).address) for node_id in node_ids]
    return _start_all(targets, snapshot_id, timeout, connections)


def _start_all(
    targets: Sequence[tuple[str, str]],
    snapshot_id: str,
    timeout: float,
    connections: Connections,
) -> list[StartResult]:
    request = pb.StartSnapshotRequest(snapshot_id=snapshot_id)
    calls = [
        (
            node_id,
            address,
            connections.node(address, node_id).StartSnapshot.future(request, timeout=timeout),
        )
        for node_id, address in targets
    ]
    results = []
    for node_id, address, call in calls:
        try:
            reply = call.result()
        except grpc.RpcError as error:
            results.append(StartResult(node_id, address, ok=False, error=describe_rpc_error(error)))
            continue
        results.append(
            StartResult(node_id, address, ok=True, already_recorded=reply.already_recorded)
        )
    return results


def wait_snapshot(
    collector_address: str,
    snapshot_id: str,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    connections: Connections | None = None,
    tls: TlsFiles | None = None,
    stream: Any = None,
) -> dict[str, Any]:
    """Block until the collector finishes `snapshot_id`; returns its JSON document.

    Progress goes to `on_progress(id, reported, missing, elapsed)` as it arrives.
    A broken stream (collector restarting) is reopened until `timeout` runs out.
    `stream`: a WaitSnapshot call already opened (see `open_wait`).
    """
    connections = connections_for(tls, connections)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    last_error = ""
    while deadline is None or time.monotonic() < deadline:
        remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
        try:
            if stream is None:
                stream = open_wait(collector_address, snapshot_id, remaining, connections)
            try:
                for progress in stream:
                    if on_progress is not None:
                        on_progress(
                            snapshot_id,
                            list(progress.reported),
                            list(progress.missing),
                            time.monotonic() - start,
                            list(progress.recorded),
                        )
                    if progress.json:
                        document: dict[str, Any] = json.loads(progress.json)
                        return document
            finally:
                stream = None
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise InitiatorError(f"collector: {describe_rpc_error(error)}") from error
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                break
            last_error = describe_rpc_error(error)
        time.sleep(0.5)
    elapsed = time.monotonic() - start
    reason = f" (last error: {last_error})" if last_error else ""
    raise InitiatorError(f"gave up waiting for {snapshot_id} after {elapsed:.0f}s{reason}")


def open_wait(
    collector_address: str,
    snapshot_id: str,
    timeout: float | None,
    connections: Connections | None = None,
    tls: TlsFiles | None = None,
) -> Any:
    """Open the WaitSnapshot stream now (it is read later by `wait_snapshot`)."""
    connections = connections_for(tls, connections)
    return connections.collector(collector_address).WaitSnapshot(
        pb.WaitSnapshotRequest(snapshot_id=snapshot_id), timeout=timeout, wait_for_ready=True
    )


def _collector_call(
    collector_address: str, call: Callable[[Any], Any], connections: Connections
) -> Any:
    """Run `call(stub)` against the collector; errors become one InitiatorError."""
    try:
        return call(connections.collector(collector_address))
    except grpc.RpcError as error:
        raise InitiatorError(
            f"collector at {collector_address} refused or unreachable: {describe_rpc_error(error)}"
        ) from error


def get_snapshot(
    collector_address: str,
    snapshot_id: str,
    connections: Connections | None = None,
    *,
    tls: TlsFiles | None = None,
) -> dict[str, Any]:
    """The stored document of a finished snapshot (`latest` for the newest one)."""
    connections = connections_for(tls, connections)
    reply = _get_document(collector_address, snapshot_id, connections)
    if not reply.json:
        raise InitiatorError(f"snapshot {reply.snapshot_id} is still {reply.status}")
    document: dict[str, Any] = json.loads(reply.json)
    return document


def _get_document(
    collector_address: str, snapshot_id: str, connections: Connections
) -> pb.SnapshotDocument:
    """Collector.GetSnapshot; NOT_FOUND becomes SnapshotNotFound, other errors InitiatorError."""
    if snapshot_id != "latest":
        validated_id(snapshot_id)
    try:
        reply: pb.SnapshotDocument = connections.collector(collector_address).GetSnapshot(
            pb.GetSnapshotRequest(snapshot_id=snapshot_id), timeout=RPC_TIMEOUT
        )
    except grpc.RpcError as error:
        if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND:
            what = (
                "no snapshot has finished yet"
                if snapshot_id == "latest"
                else f"no snapshot {snapshot_id} at the collector ({collector_address})"
            )
            raise SnapshotNotFound(what) from error
        raise InitiatorError(
            f"collector at {collector_address} refused or unreachable: {describe_rpc_error(error)}"
        ) from error
    return reply


def check_new_id(
    collector_address: str,
    snapshot_id: str,
    connections: Connections | None = None,
    *,
    tls: TlsFiles | None = None,
) -> str | None:
    """Refuse (SnapshotIdTaken) an id whose snapshot has finished; the nodes
    remember they recorded it, so no new snapshot can be taken under it.

    Returns "pending" when the snapshot is in progress (a second initiator
    may join it: markers of one id are one snapshot), else None (a new id).
    """
    connections = connections_for(tls, connections)
    try:
        reply = _get_document(collector_address, snapshot_id, connections)
    except SnapshotNotFound:
        return None
    if not reply.json:
        return "pending"
    document = json.loads(reply.json)
    raise SnapshotIdTaken(
        f"snapshot {snapshot_id} exists already ({document.get('status')}, started "
        f"{document.get('started_at')}): a snapshot id is used once; choose another "
        f"--snapshot-id (or none for a fresh one), or read it with --show {snapshot_id}"
    )


@dataclass(frozen=True)
class Probe:
    """What GetStatus answered for each node, or why it did not."""

    statuses: dict[str, pb.NodeStatus]
    errors: dict[str, str]  # node id -> the RPC error, for the nodes that did not answer

    @property
    def unreachable(self) -> list[str]:
        return list(self.errors)


def probe_nodes(
    config: ClusterConfig,
    node_ids: Sequence[str] | None = None,
    timeout: float = PROBE_TIMEOUT,
    connections: Connections | None = None,
    *,
    tls: TlsFiles | None = None,
) -> Probe:
    """Node.GetStatus at `node_ids` (default every node) at once."""
    return start_probe(config, node_ids, timeout, connections, tls=tls).wait()


def start_probe(
    config: ClusterConfig,
    node_ids: Sequence[str] | None = None,
    timeout: float = PROBE_TIMEOUT,
    connections: Connections | None = None,
    *,
    tls: TlsFiles | None = None,
) -> ProbeInFlight:
    """`probe_nodes` without waiting: the calls are sent, `wait()` collects them."""
    connections = connections_for(tls, connections)
    ids = list(config.node_ids if node_ids is None else node_ids)
    return ProbeInFlight(
        [
            (
                node_id,
                connections.node(config.node(node_id).address, node_id).GetStatus.future(
                    pb.GetStatusRequest(), timeout=timeout
                ),
            )
            for node_id in ids
        ]
    )


class ProbeInFlight:
    """GetStatus calls sent by `start_probe`, answered or not yet."""

    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self._calls = calls

    def wait(self) -> Probe:
        statuses: dict[str, pb.NodeStatus] = {}
        errors: dict[str, str] = {}
        for node_id, call in self._calls:
            try:
                statuses[node_id] = call.result()
            except grpc.RpcError as error:
                errors[node_id] = describe_rpc_error(error)
        return Probe(statuses, errors)


def require_reachable(config: ClusterConfig, chosen: Sequence[str], probe: Probe) -> None:
    """NodeUnreachable naming every chosen initiator the probe could not reach."""
    down = [node_id for node_id in chosen if node_id in probe.errors]
    if down:
        named = "; ".join(
            f"{node_id} ({config.node(node_id).address}): {probe.errors[node_id]}"
            for node_id in down
        )
        raise NodeUnreachable(f"cannot reach {named}", down)


def queued_toward(probe: Probe, unreachable: Sequence[str] | None = None) -> list[Queued]:
    """Transfers the reachable nodes hold unacknowledged toward `unreachable`
    nodes (default: the ones the probe could not reach), from their statuses.

    This money has left the senders' balances and is in no receiver's yet
    (or was applied and not yet acknowledged when the peer went down): the
    sender resends it when the peer is back. A snapshot that aborted because
    of that peer recorded none of it.
    """
    targets = set(probe.unreachable if unreachable is None else unreachable)
    queued = []
    for sender, status in sorted(probe.statuses.items()):
        for channel in status.channels:
            if channel.direction == "out" and channel.peer in targets and channel.unacked:
                queued.append(
                    Queued(sender, channel.peer, channel.unacked, channel.unacked_amount)
                )
    return queued


def list_snapshots(
    collector_address: str, connections: Connections | None = None, *, tls: TlsFiles | None = None
) -> list[tuple[str, str]]:
    """(snapshot id, status) of every snapshot the collector knows, oldest first."""
    return list_snapshots_and_pruned(collector_address, connections, tls=tls)[0]


def list_snapshots_and_pruned(
    collector_address: str, connections: Connections | None = None, *, tls: TlsFiles | None = None
) -> tuple[list[tuple[str, str]], int]:
    """`list_snapshots`, and how many older snapshot files the collector's retention deleted."""
    connections = connections_for(tls, connections)
    reply, call = _collector_call(
        collector_address,
        lambda stub: stub.ListSnapshots.with_call(pb.ListSnapshotsRequest(), timeout=RPC_TIMEOUT),
        connections,
    )
    trailing = dict(call.trailing_metadata() or ())
    raw = trailing.get(PRUNED_METADATA, "0")
    pruned = int(raw) if isinstance(raw, str) and raw.isdigit() else 0
    return [(item.snapshot_id, item.status) for item in reply.snapshots], pruned


def take_snapshot(
    config: ClusterConfig,
    collector_address: str,
    node_ids: Sequence[str],
    snapshot_id: str,
    *,
    wait: bool = True,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    on_start_error: Callable[[StartResult], None] | None = None,
    connections: Connections | None = None,
    tls: TlsFiles | None = None,
) -> SnapshotOutcome:
    """Begin, start at `node_ids`, and (unless `wait` is false) wait for the result."""
    connections = connections_for(tls, connections)
    validated_id(snapshot_id)
    for node_id in node_ids:
        config.node(node_id)  # ConfigError names an unknown node
    begin_snapshot(collector_address, snapshot_id, node_ids, connections=connections)
    # Opened before the starts, so the collector's answer is not one more round trip away.
    stream = open_wait(collector_address, snapshot_id, timeout, connections) if wait else None
    starts = start_on_nodes(config, node_ids, snapshot_id, connections=connections)
    outcome = SnapshotOutcome(snapshot_id, starts)
    for failure in outcome.start_errors:
        if on_start_error is not None:
            on_start_error(failure)
    if len(outcome.start_errors) == len(outcome.starts):
        if stream is not None:
            stream.cancel()
        outcome.exit_code = EXIT_NO_INITIATOR
        return outcome
    if stream is None:
        return outcome
    outcome.document = wait_snapshot(
        collector_address, snapshot_id, timeout, on_progress, connections, stream=stream
    )
    outcome.exit_code = exit_code(outcome.document)
    return outcome
