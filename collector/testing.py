"""Helpers for tests: a small cluster and consistent (or broken) node reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from collector.document import NodeReport
from common.config import ClusterConfig, parse_cluster
from node import wire
from node.core import LocalSnapshot, RecordedMessage
from protos import chandy_lamport_pb2 as pb


def small_cluster(
    ids: Sequence[str] = ("n1", "n2", "n3"),
    topology: str = "complete",
    balance: int = 100,
    timeout: float = 5.0,
) -> ClusterConfig:
    raw = {
        "nodes": [
            {"id": node, "address": f"127.0.0.1:{7001 + i}", "balance": balance}
            for i, node in enumerate(ids)
        ],
        "topology": topology,
        "collector": "127.0.0.1:7000",
        "snapshot_timeout": timeout,
    }
    return parse_cluster(raw, "<test>", {})


def consistent_reports(
    config: ClusterConfig, snapshot_id: str, initiator: str | None = None
) -> dict[str, NodeReport]:
    """A correct cut of `config` in which the first channel has one transfer in flight.

    On the first channel a -> b, a has sent two transfers (5 and 10) and b has
    received only the first; the second (10) is recorded on the channel.
    """
    initiator = initiator or config.node_ids[0]
    src, dst = sorted(config.channels)[0]
    balances = {node.id: node.balance for node in config.nodes}
    balances[src] -= 15
    balances[dst] += 5
    reports = {}
    for node in config.node_ids:
        sent = {peer: 2 if (node, peer) == (src, dst) else 0 for peer in config.outgoing(node)}
        received = {peer: 1 if (peer, node) == (src, dst) else 0 for peer in config.incoming(node)}
        channels: dict[str, tuple[RecordedMessage, ...]] = {
            peer: (RecordedMessage(2, 10),) if (peer, node) == (src, dst) else ()
            for peer in config.incoming(node)
        }
        snapshot = LocalSnapshot(
            snapshot_id=snapshot_id,
            node_id=node,
            balance=balances[node],
            sent=sent,
            received=received,
            channels=channels,
            initiated=node == initiator,
        )
        reports[node] = NodeReport(
            snapshot, "2026-01-01T00:00:00.000+00:00", "2026-01-01T00:00:00.100+00:00"
        )
    return reports


def report_to_pb(report: NodeReport) -> pb.LocalSnapshot:
    """The message a node would send for `report` (built by the node's own code)."""
    if report.complete:
        return wire.snapshot_report(report.snapshot, report.recorded_at, report.completed_at)
    return wire.progress_report(report.snapshot, report.open_channels, report.recorded_at)


def with_balance(report: NodeReport, balance: int) -> NodeReport:
    return dataclasses.replace(
        report, snapshot=dataclasses.replace(report.snapshot, balance=balance)
    )


def as_progress(report: NodeReport, open_channels: Sequence[str]) -> NodeReport:
    """The progress report the node sent before `report`: same recorded state,
    channel states as recorded so far (nothing yet), `open_channels` still open."""
    snap = report.snapshot
    return dataclasses.replace(
        report,
        snapshot=dataclasses.replace(snap, channels={peer: () for peer in snap.channels}),
        completed_at="",
        complete=False,
        open_channels=tuple(sorted(open_channels)),
    )
