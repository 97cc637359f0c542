"""Channels between real node servers on loopback: flow, rejections, restarts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from collector.server import CollectorServer
from common.config import load_cluster
from node import channels, wire
from node.channels import CLIENT_OPTIONS, SENDER_METADATA
from node.core import Marker, Transfer
from node.server import NodeOptions, NodeServer
from node.testing import (
    NodeProcess,
    free_port,
    get_status,
    wait_drained,
    wait_until,
    write_cluster,
)
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc
from tests.snapshot_check import assert_verified_snapshot


@pytest.fixture
def start_nodes(tmp_path: Path) -> Iterator:
    """Start in-process nodes of a cluster file; all are stopped at teardown."""
    started: list[NodeServer] = []

    def start(cluster: Path, node_ids: Iterable[str], **options) -> dict[str, NodeServer]:
        config = load_cluster(cluster)
        nodes = {}
        for node_id in node_ids:
            node = NodeServer(
                config,
                node_id,
                NodeOptions(data_dir=tmp_path / node_id, listen_host="127.0.0.1", **options),
            )
            node.start()
            started.append(node)
            nodes[node_id] = node
        return nodes

    yield start
    for node in started:
        node.stop(grace=0.2)


def exchange(
    port: int, frames: Iterable[pb.Frame], sender: str | None = None
) -> tuple[list[int], grpc.RpcError | None]:
    """Send `frames` on one Channel stream; returns the acks and the error, if any."""
    metadata = ((SENDER_METADATA, sender),) if sender else None
    acks: list[int] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
        call = pb_grpc.NodeStub(channel).Channel(iter(list(frames)), metadata=metadata, timeout=5)
        try:
            acks.extend(ack.seq for ack in call)
        except grpc.RpcError as error:
            return acks, error
    return acks, None


def transfer(sender: str, receiver: str, seq: int, amount: int, transfer_seq: int = 0):
    return wire.frame_for(sender, receiver, seq, Transfer(transfer_seq or seq, amount))


@pytest.fixture
def ring_a(tmp_path: Path, start_nodes) -> int:
    """Node a of ring a -> b -> c -> a, alone: the test plays its peers."""
    ports = write_cluster(tmp_path / "ring.yaml", {"a": 100, "b": 100, "c": 100}, topology="ring")
    start_nodes(tmp_path / "ring.yaml", ["a"], port=ports["a"])
    return ports["a"]


# -------------------------------------------------------------- flow


def test_transfers_flow_and_money_is_conserved(tmp_path: Path, start_nodes):
    balances = {"a": 1000, "b": 1000, "c": 1000, "d": 1000}
    ports = write_cluster(tmp_path / "c.yaml", balances, transfer_rate=300, max_amount=30)
    nodes = start_nodes(tmp_path / "c.yaml", balances, port=None)
    wait_until(
        lambda: all(node.workload.sent > 50 for node in nodes.values()),
        20,
        what="every node to send more than 50 transfers",
    )

    # Stop the workloads mid-run; once the channels drain, all money is back in balances.
    for node in nodes.values():
        node.workload.stop()
    statuses = wait_drained(ports)

    assert sum(s.balance for s in statuses.values()) == sum(balances.values())
    assert all(node.call(node.runtime.in_flight_amount) == 0 for node in nodes.values())


# -------------------------------------------------------- rejections


def test_frame_from_a_node_without_a_channel_is_permission_denied(ring_a: int):
    # b -> a is not a channel of the ring (only c -> a is).
    acks, error = exchange(ring_a, [transfer("b", "a", 1, 10)])
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert acks == []

    acks, error = exchange(ring_a, [], sender="b")
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED

    # A configured peer cannot speak for another one on its stream.
    acks, error = exchange(ring_a, [transfer("b", "a", 1, 10)], sender="c")
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert get_status(ring_a).balance == 100


def test_frame_for_another_receiver_is_invalid_argument(ring_a: int):
    acks, error = exchange(ring_a, [transfer("c", "b", 1, 10)], sender="c")
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert acks == [0]  # only the stream's initial ack
    assert get_status(ring_a).balance == 100


def test_gap_in_sequence_numbers_is_rejected_and_not_applied(ring_a: int):
    frames = [transfer("c", "a", 1, 10), transfer("c", "a", 3, 5, transfer_seq=2)]
    acks, error = exchange(ring_a, frames, sender="c")
    assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
    # What went wrong, not what the receiver expects next (the node's log has that).
    assert error.details() == "gap in sequence numbers"
    assert acks == [0, 1]
    assert get_status(ring_a).balance == 110


def test_duplicate_frame_is_acked_and_not_applied_twice(ring_a: int):
    acks, error = exchange(ring_a, [transfer("c", "a", 1, 10), transfer("c", "a", 1, 10)], "c")
    assert error is None
    assert acks == [0, 1]  # acks are cumulative: the duplicate adds none
    # A reconnecting sender resends: the new stream starts with the last applied seq.
    acks, error = exchange(ring_a, [transfer("c", "a", 1, 10), transfer("c", "a", 2, 1)], "c")
    assert error is None
    assert acks == [1, 2]
    assert get_status(ring_a).balance == 111


def test_acks_wait_for_later_commits_and_are_cumulative(
    tmp_path: Path, start_nodes, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(channels, "ACK_DELAY", 5.0)  # longer than the test needs
    ports = write_cluster(tmp_path / "ring.yaml", {"a": 100, "b": 100, "c": 100}, topology="ring")
    start_nodes(tmp_path / "ring.yaml", ["a"], port=ports["a"])
    done = threading.Event()

    def frames() -> Iterator[pb.Frame]:
        yield transfer("c", "a", 1, 10)
        # Frame 1 is committed (and its ack due) before frames 2 and 3 arrive.
        wait_until(lambda: get_status(ports["a"]).balance == 110, 10, what="frame 1 applied")
        yield transfer("c", "a", 2, 1)
        yield transfer("c", "a", 3, 1)
        done.wait(10)

    metadata = ((SENDER_METADATA, "c"),)
    with grpc.insecure_channel(f"127.0.0.1:{ports['a']}", options=CLIENT_OPTIONS) as channel:
        call = pb_grpc.NodeStub(channel).Channel(frames(), metadata=metadata, timeout=20)
        acks = [next(call).seq, next(call).seq]  # the initial ack, then one for all three
        done.set()
        call.cancel()
    assert acks == [0, 3]
    assert get_status(ports["a"]).balance == 112


def test_protocol_violation_is_rejected(ring_a: int):
    frames = [wire.frame_for("c", "a", 1, Marker("s1")), wire.frame_for("c", "a", 2, Marker("s1"))]
    acks, error = exchange(ring_a, frames, sender="c")
    assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "malformed frame or protocol violation"
    assert acks == [0, 1]


# --------------------------------------------------------- snapshots


def test_start_snapshot_names_validates_and_deduplicates(ring_a: int):
    with grpc.insecure_channel(f"127.0.0.1:{ring_a}", options=CLIENT_OPTIONS) as channel:
        stub = pb_grpc.NodeStub(channel)
        reply = stub.StartSnapshot(pb.StartSnapshotRequest(), timeout=5)
        assert reply.snapshot_id.startswith("snap-") and not reply.already_recorded
        again = stub.StartSnapshot(pb.StartSnapshotRequest(snapshot_id=reply.snapshot_id))
        assert again.already_recorded
        with pytest.raises(grpc.RpcError) as raised:
            stub.StartSnapshot(pb.StartSnapshotRequest(snapshot_id="../etc"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.GetStatus(pb.GetStatusRequest()).active_snapshots == [reply.snapshot_id]


def test_killed_node_resumes_and_a_snapshot_across_the_restart_completes(tmp_path: Path):
    balances = {"a": 1000, "b": 1000, "c": 1000}
    collector_port = free_port()
    cluster = tmp_path / "cluster.yaml"
    ports = write_cluster(
        cluster, balances, transfer_rate=200, max_amount=20, collector_port=collector_port
    )
    config = load_cluster(cluster)

    def node(node_id: str, **env: str) -> NodeProcess:
        return NodeProcess(
            cluster,
            node_id,
            tmp_path / node_id,
            ports[node_id],
            extra_args=["--max-transfers", "400"],
            env=env,
            log_path=tmp_path / f"{node_id}.log",
        )

    # The collector stores only snapshots it began: begin "across" (naming no
    # initiator), then stop it; the begin is durable and the collector comes back later.
    first = CollectorServer(config, str(tmp_path / "snaps"), "127.0.0.1", collector_port)
    first.start()
    with grpc.insecure_channel(first.address, options=CLIENT_OPTIONS) as ch:
        pb_grpc.CollectorStub(ch).BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="across"))
    first.stop(grace=0.5)
    processes = {node_id: node(node_id).start() for node_id in balances}
    # The initiator's BeginSnapshot reaches the collector, which then goes away.
    collector = CollectorServer(config, str(tmp_path / "snaps"), "127.0.0.1", collector_port)
    collector.start()
    with grpc.insecure_channel(f"127.0.0.1:{collector_port}") as channel:
        pb_grpc.CollectorStub(channel).BeginSnapshot(
            pb.BeginSnapshotRequest(snapshot_id="across", initiators=["a"]), timeout=5
        )
    collector.stop(grace=0.5)
    collector = None
    try:
        for process in processes.values():
            process.wait_healthy()
        time.sleep(0.7)
        processes["b"].kill()

        # While b is dead: a records and sends markers; a and c cannot finish
        # until b, restarted, receives the resent markers and sends its own.
        with grpc.insecure_channel(f"127.0.0.1:{ports['a']}", options=CLIENT_OPTIONS) as ch:
            pb_grpc.NodeStub(ch).StartSnapshot(pb.StartSnapshotRequest(snapshot_id="across"))
        time.sleep(0.3)
        assert "across" in get_status(ports["a"]).active_snapshots

        # Restarted b sends nothing of its own: its peers' workloads finish.
        processes["b"] = node("b", CL_TRANSFER_RATE="0").start()
        processes["b"].wait_healthy()
        # The (real) collector comes back only now: reports wait, durably, until it does.
        collector = CollectorServer(config, str(tmp_path / "snaps"), "127.0.0.1", collector_port)
        collector.start()
        stored = tmp_path / "snaps" / "across.json"
        wait_until(stored.exists, 15, what="the collector to store snapshot 'across'")
        document = json.loads(stored.read_text())
        assert_verified_snapshot(document, config.expected_total, config.node_ids, config.channels)
        assert document["initiators"] == ["a"]
        assert [n for n, state in document["nodes"].items() if state["initiated"]] == ["a"]
        a = document["nodes"]["a"]
        assert a["recorded_at"] <= a["completed_at"]

        def finished(node_id: str) -> bool:
            lines = (tmp_path / f"{node_id}.log").read_text().splitlines()
            return any(json.loads(line).get("event") == "workload finished" for line in lines)

        wait_until(lambda: finished("a") and finished("c"), 10, what="workloads to finish")
        statuses = wait_drained(ports)
        assert sum(s.balance for s in statuses.values()) == config.expected_total
    finally:
        for process in processes.values():
            process.kill()
        if collector is not None:
            collector.stop(grace=0.5)


def test_status_shows_every_channel_its_backlog_and_the_workload(tmp_path: Path, start_nodes):
    balances = {"a": 1000, "b": 1000}
    ports = write_cluster(tmp_path / "c.yaml", balances, transfer_rate=200, max_amount=5)
    # A node sends transfers only on channels whose handshake it has passed since
    # it started (a stale data dir must not send frames a peer drops as
    # duplicates): b is up for the handshake, then goes down.
    first_b = start_nodes(tmp_path / "c.yaml", ["b"], port=ports["b"], max_transfers=0)["b"]
    nodes = start_nodes(tmp_path / "c.yaml", ["a"], port=ports["a"])
    wait_until(lambda: get_status(ports["a"]).channels[0].connected, 10, what="a -> b handshake")
    first_b.stop(grace=0.2)

    def a_has_sent() -> pb.NodeStatus | None:
        status = get_status(ports["a"])
        out = status.channels[0]
        return status if out.unacked >= 5 and not out.connected else None

    status = wait_until(a_has_sent, 10, what="a to send 5 transfers to b (down)")
    out, incoming = status.channels
    assert (out.peer, out.direction, out.connected) == ("b", "out", False)
    assert out.unacked >= 5  # nothing acked: b is down
    assert (incoming.peer, incoming.direction, incoming.connected) == ("b", "in", False)
    assert (incoming.sent_or_received, incoming.unacked) == (0, 0)
    assert status.workload_running

    nodes["a"].workload.stop()
    wait_until(lambda: not get_status(ports["a"]).workload_running, 5, what="workload stopped")
    start_nodes(tmp_path / "c.yaml", ["b"], port=ports["b"])
    wait_drained(ports)
    a_status = wait_until(
        lambda: (s := get_status(ports["a"])).channels[1].connected and s, 10, what="b -> a"
    )
    out, incoming = a_status.channels
    assert out.connected and out.unacked == 0 and incoming.connected
    assert get_status(ports["b"]).channels[1].sent_or_received == out.sent_or_received
