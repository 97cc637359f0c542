"""Operator commands beyond snapshots: pause/resume the workload, live status,
restore a snapshot, list restores (`cl-initiator --pause-workload`, `--status`,
`--restore ID`, `--restores`).

Pausing and status talk to every node (Node.SetWorkload / Node.GetStatus);
a restore is asked of the collector, which coordinates it (collector/restoring.py)
and answers with the restore record once finished.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from common.config import ClusterConfig
from common.net import describe_rpc_error
from common.tls import TlsFiles
from initiator.client import RPC_TIMEOUT, Connections, InitiatorError, connections_for
from protos import chandy_lamport_pb2 as pb

# The operations' options (LIVE_STATUS, add_options, wanted) are in
# initiator/options.py, so that building the parser imports no gRPC.

EXIT_RESTORE_ABORTED = 3
EXIT_RESTORE_PENDING = 1


@dataclass(frozen=True)
class NodeAnswer:
    node_id: str
    status: pb.NodeStatus | None
    error: str = ""


def _each_node(config: ClusterConfig, call: Any, connections: Connections) -> list[NodeAnswer]:
    def one(node_id: str) -> NodeAnswer:
        address = config.node(node_id).address
        try:
            return NodeAnswer(node_id, call(connections.node(address, node_id)))
        except grpc.RpcError as error:
            return NodeAnswer(node_id, None, describe_rpc_error(error))

    with ThreadPoolExecutor(max_workers=min(16, len(config.node_ids))) as pool:
        return list(pool.map(one, config.node_ids))


def set_workload(
    config: ClusterConfig,
    running: bool,
    *,
    tls: TlsFiles | None = None,
    connections: Connections | None = None,
) -> list[NodeAnswer]:
    """Pause (running=False) or resume the workload on every node."""
    request = pb.SetWorkloadRequest(running=running)
    return _each_node(
        config,
        lambda stub: stub.SetWorkload(request, timeout=RPC_TIMEOUT),
        connections_for(tls, connections),
    )


def cluster_status(
    config: ClusterConfig, *, tls: TlsFiles | None = None, connections: Connections | None = None
) -> list[NodeAnswer]:
    return _each_node(
        config,
        lambda stub: stub.GetStatus(pb.GetStatusRequest(), timeout=RPC_TIMEOUT),
        connections_for(tls, connections),
    )


def format_status(answers: list[NodeAnswer]) -> str:
    """The live cluster: per node balance, epoch, workload, phase; per channel backlog."""
    lines = [f"{'node':<8} {'balance':>10} {'epoch':>5}  {'workload':<9} {'phase':<9} backlog"]
    total = 0
    epochs = set()
    for answer in answers:
        status = answer.status
        if status is None:
            lines.append(f"{answer.node_id:<8} {'?':>10} {'?':>5}  unreachable: {answer.error}")
            continue
        total += status.balance
        epochs.add(status.epoch)
        backlog = ", ".join(
            f"->{ch.peer} {ch.unacked}" for ch in status.channels if ch.direction == "out"
        )
        phase = status.restore_phase or "serving"
        lines.append(
            f"{status.node_id:<8} {status.balance:>10} {status.epoch:>5}  "
            f"{'running' if status.workload_running else 'paused':<9} {phase:<9} "
            f"{backlog or '-'}"
        )
        if status.not_serving_reason:
            lines.append(f"         not serving: {status.not_serving_reason}")
        if status.prepared_restore:
            lines.append(f"         prepared for restore {status.prepared_restore}")
    unacked = sum(a.status.unacknowledged_frames for a in answers if a.status is not None)
    lines.append(
        f"total balance {total}"
        + (f" (+ money in {unacked} unacknowledged frames)" if unacked else " (channels drained)")
        + (f"; epochs differ: {sorted(epochs)}" if len(epochs) > 1 else "")
    )
    return "\n".join(lines)


def format_workload(answers: list[NodeAnswer], running: bool) -> str:
    done = [a.node_id for a in answers if a.status is not None]
    failed = [f"{a.node_id} ({a.error})" for a in answers if a.status is None]
    verb = "resumed" if running else "paused"
    line = f"workload {verb} on {', '.join(done) or 'no node'}"
    if failed:
        line += f"; not reached: {', '.join(failed)}"
    return line


def restore(
    collector_address: str,
    snapshot_id: str,
    timeout: float = 60.0,
    *,
    tls: TlsFiles | None = None,
    connections: Connections | None = None,
) -> dict[str, Any]:
    """Ask the collector to restore `snapshot_id` ("latest"); the restore record."""
    stub = connections_for(tls, connections).collector(collector_address)
    try:
        reply = stub.Restore(
            pb.RestoreRequest(snapshot_id=snapshot_id, timeout_seconds=timeout),
            timeout=timeout + RPC_TIMEOUT,
        )
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
            details = error.details() if isinstance(error, grpc.Call) else ""
            raise InitiatorError(f"restore refused: {details}", 2) from error
        raise InitiatorError(
            f"collector at {collector_address} refused or unreachable: {describe_rpc_error(error)}"
        ) from error
    record: dict[str, Any] = json.loads(reply.json)
    return record


def list_restores(
    collector_address: str, *, tls: TlsFiles | None = None, connections: Connections | None = None
) -> list[dict[str, Any]]:
    stub = connections_for(tls, connections).collector(collector_address)
    try:
        reply = stub.ListRestores(pb.ListRestoresRequest(), timeout=RPC_TIMEOUT)
    except grpc.RpcError as error:
        raise InitiatorError(
            f"collector at {collector_address} refused or unreachable: {describe_rpc_error(error)}"
        ) from error
    return [json.loads(text) for text in reply.json]


def restore_exit_code(record: dict[str, Any]) -> int:
    outcome = record.get("outcome")
    if outcome == "complete":
        return 0
    return EXIT_RESTORE_ABORTED if outcome == "aborted" else EXIT_RESTORE_PENDING


def format_restore(record: dict[str, Any]) -> str:
    lines = [
        f"restore {record['restore']}: snapshot {record['snapshot_id']} -> epoch "
        f"{record['epoch']} (from {record.get('from_epoch', 0)}): {record['outcome']}"
        + (f" ({record['phase']})" if record["outcome"] == "pending" else ""),
        f"  started {record['started']}, completed {record.get('completed') or '-'}",
    ]
    if record.get("reason"):
        lines.append(f"  reason: {record['reason']}")
    if record["outcome"] == "complete":
        expected = record.get("expected_balances", {})
        lines.append(
            "  once the resent in-flight transfers arrive (workload paused), balances are: "
            + ", ".join(f"{node} {balance}" for node, balance in sorted(expected.items()))
        )
    elif record["outcome"] == "pending":
        waiting = [
            node
            for node, info in record["nodes"].items()
            if not (info["acked"] if record["phase"] != "preparing" else info["prepared"])
        ]
        lines.append(f"  waiting for: {', '.join(waiting)} (the collector keeps trying)")
    return "\n".join(lines)


def format_restores(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no restore yet"
    lines = [f"{'#':>3}  {'snapshot':<34} {'epoch':>5}  {'outcome':<9} {'started':<29} completed"]
    for r in records:
        lines.append(
            f"{r['restore']:>3}  {r['snapshot_id']:<34} {r['epoch']:>5}  {r['outcome']:<9} "
            f"{r['started']:<29} {r.get('completed') or '-'}"
        )
    return "\n".join(lines)


def run(
    args: Any, config: ClusterConfig, collector: str, tls: TlsFiles | None, timeout: float
) -> int:
    """Run the operation `args` asks for; the exit status. Raises InitiatorError."""
    if args.pause_workload or args.resume_workload:
        running = bool(args.resume_workload)
        answers = set_workload(config, running, tls=tls)
        print(format_workload(answers, running), flush=True)
        return 0 if all(a.status is not None for a in answers) else 1
    if args.restore:
        record = restore(collector, args.restore, timeout, tls=tls)
        print(json.dumps(record, indent=2) if args.json else format_restore(record), flush=True)
        return restore_exit_code(record)
    if args.restores:
        records = list_restores(collector, tls=tls)
        print(json.dumps(records, indent=2) if args.json else format_restores(records), flush=True)
        return 0
    answers = cluster_status(config, tls=tls)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(
            json.dumps(
                {
                    a.node_id: MessageToDict(a.status) if a.status is not None else a.error
                    for a in answers
                },
                indent=2,
            ),
            flush=True,
        )
    else:
        print(format_status(answers), flush=True)
    return 0 if all(a.status is not None for a in answers) else 1
