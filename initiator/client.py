"""Trigger a snapshot and wait for it: the calls the initiator CLI and the demo share.

    take_snapshot(config, collector_address, ["n1"], snapshot_id) -> SnapshotOutcome

First `Collector.BeginSnapshot` (so the collector times the snapshot out even
if no node ever reports), then `Node.StartSnapshot` at every chosen node
concurrently, then `Collector.WaitSnapshot` until the collector decides.

`tls`: the operator's certificate (mutual TLS, the default of the CLI); None
only for a cluster run explicitly in plaintext.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from common.config import ClusterConfig
from common.net import CHANNEL_OPTIONS, describe_rpc_error
from common.tls import TlsFiles, open_channel
from initiator.summary import EXIT_ERROR, EXIT_NO_INITIATOR, EXIT_USAGE, exit_code
from node.core import InvalidSnapshotId, validate_snapshot_id
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

RPC_TIMEOUT = 5.0
# Trailing metadata of Collector.ListSnapshots (collector/server.py).
PRUNED_METADATA = "cl-pruned"

ProgressCallback = Callable[[str, Sequence[str], Sequence[str], float], None]


class InitiatorError(Exception):
    """Something the user must know about; `exit_code` says how the CLI ends."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def validated_id(snapshot_id: str) -> str:
    try:
        return validate_snapshot_id(snapshot_id)
    except InvalidSnapshotId as error:
        raise InitiatorError(str(error), exit_code=EXIT_USAGE) from error


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


def begin_snapshot(
    collector_address: str,
    snapshot_id: str,
    initiators: Sequence[str],
    timeout: float = RPC_TIMEOUT,
    *,
    tls: TlsFiles | None = None,
) -> None:
    _collector_call(
        collector_address,
        tls,
        lambda stub: stub.BeginSnapshot(
            pb.BeginSnapshotRequest(snapshot_id=snapshot_id, initiators=list(initiators)),
            timeout=timeout,
            wait_for_ready=True,
        ),
    )


def start_on_node(
    node_id: str,
    address: str,
    snapshot_id: str,
    timeout: float = RPC_TIMEOUT,
    *,
    tls: TlsFiles | None = None,
) -> StartResult:
    with open_channel(address, tls, "node", node_id, CHANNEL_OPTIONS) as channel:
        try:
            reply = pb_grpc.NodeStub(channel).StartSnapshot(
                pb.StartSnapshotRequest(snapshot_id=snapshot_id), timeout=timeout
            )
        except grpc.RpcError as error:
            return StartResult(node_id, address, ok=False, error=describe_rpc_error(error))
    return StartResult(node_id, address, ok=True, already_recorded=reply.already_recorded)


def start_on_nodes(
    config: ClusterConfig,
    node_ids: Sequence[str],
    snapshot_id: str,
    timeout: float = RPC_TIMEOUT,
    *,
    tls: TlsFiles | None = None,
) -> list[StartResult]:
    """Node.StartSnapshot at every node at once (same id); one result per node, in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(node_ids))) as pool:
        jobs = [
            pool.submit(
                start_on_node, node_id, config.node(node_id).address, snapshot_id, timeout, tls=tls
            )
            for node_id in node_ids
        ]
        return [job.result() for job in jobs]


def wait_snapshot(
    collector_address: str,
    snapshot_id: str,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    *,
    tls: TlsFiles | None = None,
) -> dict[str, Any]:
    """Block until the collector finishes `snapshot_id`; returns its JSON document.

    Progress goes to `on_progress(id, reported, missing, elapsed)` as it arrives.
    A broken stream (collector restarting) is reopened until `timeout` runs out.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    last_error = ""
    while deadline is None or time.monotonic() < deadline:
        remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
        try:
            with _collector_channel(collector_address, tls) as channel:
                stream = pb_grpc.CollectorStub(channel).WaitSnapshot(
                    pb.WaitSnapshotRequest(snapshot_id=snapshot_id),
                    timeout=remaining,
                    wait_for_ready=True,
                )
                for progress in stream:
                    if on_progress is not None:
                        on_progress(
                            snapshot_id,
                            list(progress.reported),
                            list(progress.missing),
                            time.monotonic() - start,
                        )
                    if progress.json:
                        document: dict[str, Any] = json.loads(progress.json)
                        return document
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


def _collector_channel(collector_address: str, tls: TlsFiles | None) -> grpc.Channel:
    return open_channel(collector_address, tls, "collector", "collector", CHANNEL_OPTIONS)


def _collector_call(
    collector_address: str, tls: TlsFiles | None, call: Callable[[Any], Any]
) -> Any:
    """Run `call(stub)` against the collector; errors become one InitiatorError."""
    try:
        with _collector_channel(collector_address, tls) as channel:
            return call(pb_grpc.CollectorStub(channel))
    except grpc.RpcError as error:
        raise InitiatorError(
            f"collector at {collector_address} refused or unreachable: {describe_rpc_error(error)}"
        ) from error


def get_snapshot(
    collector_address: str, snapshot_id: str, *, tls: TlsFiles | None = None
) -> dict[str, Any]:
    """The stored document of a finished snapshot (`latest` for the newest one)."""
    if snapshot_id != "latest":
        validated_id(snapshot_id)
    reply = _collector_call(
        collector_address,
        tls,
        lambda stub: stub.GetSnapshot(
            pb.GetSnapshotRequest(snapshot_id=snapshot_id), timeout=RPC_TIMEOUT
        ),
    )
    if not reply.json:
        raise InitiatorError(f"snapshot {reply.snapshot_id} is still {reply.status}")
    document: dict[str, Any] = json.loads(reply.json)
    return document


def list_snapshots(collector_address: str, *, tls: TlsFiles | None = None) -> list[tuple[str, str]]:
    """(snapshot id, status) of every snapshot the collector knows, oldest first."""
    return list_snapshots_and_pruned(collector_address, tls=tls)[0]


def list_snapshots_and_pruned(
    collector_address: str, *, tls: TlsFiles | None = None
) -> tuple[list[tuple[str, str]], int]:
    """`list_snapshots`, and how many older snapshot files the collector's retention deleted."""
    reply, call = _collector_call(
        collector_address,
        tls,
        lambda stub: stub.ListSnapshots.with_call(pb.ListSnapshotsRequest(), timeout=RPC_TIMEOUT),
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
    tls: TlsFiles | None = None,
) -> SnapshotOutcome:
    """Begin, start at `node_ids`, and (unless `wait` is false) wait for the result."""
    validated_id(snapshot_id)
    for node_id in node_ids:
        config.node(node_id)  # ConfigError names an unknown node
    begin_snapshot(collector_address, snapshot_id, node_ids, tls=tls)
    outcome = SnapshotOutcome(snapshot_id, start_on_nodes(config, node_ids, snapshot_id, tls=tls))
    for failure in outcome.start_errors:
        if on_start_error is not None:
            on_start_error(failure)
    if len(outcome.start_errors) == len(outcome.starts):
        outcome.exit_code = EXIT_NO_INITIATOR
        return outcome
    if not wait:
        return outcome
    outcome.document = wait_snapshot(collector_address, snapshot_id, timeout, on_progress, tls=tls)
    outcome.exit_code = exit_code(outcome.document)
    return outcome
