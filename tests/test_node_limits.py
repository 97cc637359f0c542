"""Bounded node: stream caps, size limits, int64 bounds, threads flat in N, SIGTERM in time.

Real node processes on loopback; the test plays hostile or stuck peers with
real gRPC streams and raw sockets.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from common.healthcheck import check
from node import wire
from node.channels import SENDER_METADATA
from node.core import Transfer
from node.testing import (
    NodeProcess,
    free_port,
    get_status,
    wait_drained,
    wait_until,
    write_cluster,
)
from node.transport import MAX_MESSAGE_BYTES
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

INT64_MAX = 2**63 - 1
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


class IdleStream:
    """A Channel stream that sends nothing (or what it is told) and is read in the background."""

    def __init__(self, port: int, sender: str | None) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.frames: queue.Queue[pb.Frame | None] = queue.Queue()
        metadata = ((SENDER_METADATA, sender),) if sender else None
        self.call = pb_grpc.NodeStub(self.channel).Channel(self._requests(), metadata=metadata)
        self.acks: list[int] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[pb.Frame]:
        while (frame := self.frames.get()) is not None:
            yield frame

    def _read(self) -> None:
        try:
            for ack in self.call:
                self.acks.append(ack.seq)
        except grpc.RpcError as error:
            self.code, self.details = error.code(), error.details() or ""
        self.done.set()

    def close(self) -> None:
        self.frames.put(None)
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int], dict[str, NodeProcess]]]:
    """Cluster file of ring a -> b -> c -> a; no process started."""
    cluster = tmp_path / "ring.yaml"
    ports = write_cluster(cluster, {"a": 100, "b": 100, "c": 100}, topology="ring")
    processes: dict[str, NodeProcess] = {}
    yield cluster, ports, processes
    for process in processes.values():
        process.kill()


def start(
    tmp_path: Path, cluster: Path, ports: dict[str, int], node: str, *args: str, **env: str
) -> NodeProcess:
    process = NodeProcess(cluster, node, tmp_path / node, ports[node], extra_args=args, env=env)
    process.start().wait_healthy()
    return process


def start_snapshot(port: int, snapshot_id: str) -> pb.StartSnapshotReply:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        reply: pb.StartSnapshotReply = pb_grpc.NodeStub(channel).StartSnapshot(
            pb.StartSnapshotRequest(snapshot_id=snapshot_id), timeout=5
        )
        return reply


def test_fifty_idle_streams_do_not_starve_health_status_snapshots_or_a_restarted_peer(
    tmp_path: Path, ring
) -> None:
    cluster, ports, processes = ring
    for node in ("a", "b", "c"):
        processes[node] = start(tmp_path, cluster, ports, node)
    # 50 idle streams at a: 30 that name no sender, 20 that claim to be c.
    streams = [IdleStream(ports["a"], None) for _ in range(30)]
    streams += [IdleStream(ports["a"], "c") for _ in range(20)]
    try:
        anonymous = streams[:30]
        wait_until(
            lambda: sum(s.code == grpc.StatusCode.RESOURCE_EXHAUSTED for s in anonymous) == 14,
            10,
            what="the 14 anonymous streams beyond the cap of 16 to be refused",
        )
        refused = next(s for s in anonymous if s.code is not None)
        assert "name the sender" in refused.details
        # Every one of them answered at once, while all 50 are open.
        started = time.monotonic()
        assert check(f"127.0.0.1:{ports['a']}", timeout=2) is None
        assert get_status(ports["a"]).node_id == "a"
        assert start_snapshot(ports["a"], "under-siege").already_recorded is False
        assert time.monotonic() - started < 2
        # c (the real one) is killed and restarted: it reconnects and its frames flow.
        processes["c"].kill()
        processes["c"] = start(tmp_path, cluster, ports, "c", CL_TRANSFER_RATE="20")
        # Only c sends (a and b have no workload), until its 100 are spent: in
        # as few as 2 transfers (amounts are random, up to 50), so the test waits
        # for all of the money, not for a number of transfers.
        wait_until(
            lambda: get_status(ports["a"]).balance == 200,
            15,
            what="a to receive all of the restarted c's money",
        )
        assert get_status(ports["a"]).channels[1].sent_or_received >= 2
        wait_until(
            lambda: "under-siege" not in get_status(ports["a"]).active_snapshots,
            10,
            what="the snapshot's markers to come round the ring",
        )
    finally:
        for stream in streams:
            stream.close()


def test_oversized_frames_and_metadata_are_refused(tmp_path: Path, ring) -> None:
    cluster, ports, processes = ring
    processes["a"] = start(tmp_path, cluster, ports, "a")
    big = pb.Frame(sender="c", receiver="a", seq=1, marker=pb.Marker(snapshot_id="x" * 64))
    big.marker.snapshot_id = "s" * (MAX_MESSAGE_BYTES + 1)
    stream = IdleStream(ports["a"], "c")
    stream.frames.put(big)
    assert stream.done.wait(10)
    assert stream.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(f"127.0.0.1:{ports['a']}", options=CHANNEL_OPTIONS) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.NodeStub(channel).GetStatus(
                pb.GetStatusRequest(), metadata=(("x-junk", "j" * 20_000),), timeout=5
            )
        assert caught.value.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNAVAILABLE,
        )
    assert get_status(ports["a"]).balance == 100  # and it still serves


def test_values_beyond_int64_are_refused_at_receive_and_change_nothing(
    tmp_path: Path, ring
) -> None:
    cluster, ports, processes = ring
    processes["a"] = start(tmp_path, cluster, ports, "a")
    stream = IdleStream(ports["a"], "c")
    stream.frames.put(wire.frame_for("c", "a", 1, Transfer(1, INT64_MAX)))
    assert stream.done.wait(10)
    assert stream.code == grpc.StatusCode.FAILED_PRECONDITION
    assert stream.details == "malformed frame or protocol violation"  # the sender is told little
    assert stream.acks == [0]  # the initial ack only
    stream.close()

    lamport = wire.frame_for("c", "a", 1, Transfer(1, 5), lamport=INT64_MAX)
    stream = IdleStream(ports["a"], "c")
    stream.frames.put(lamport)
    assert stream.done.wait(10)
    assert stream.code == grpc.StatusCode.FAILED_PRECONDITION
    stream.close()
    log = processes["a"].log_path.read_text()  # the node's log has the detail
    assert "beyond 2^63-1" in log and "Lamport clock" in log

    status = get_status(ports["a"])
    assert (status.balance, status.channels[1].sent_or_received) == (100, 0)
    # Nothing changed on disk either, and the node still works: a good frame applies.
    processes["a"].kill()
    processes["a"] = start(tmp_path, cluster, ports, "a")
    assert get_status(ports["a"]).balance == 100
    stream = IdleStream(ports["a"], "c")
    stream.frames.put(wire.frame_for("c", "a", 1, Transfer(1, 5)))
    wait_until(lambda: stream.acks == [0, 1], 10, what="the good frame to be acked")
    stream.close()
    assert get_status(ports["a"]).balance == 105


def test_thread_count_is_flat_in_the_number_of_channels(tmp_path: Path) -> None:
    counts = {}
    for size in (3, 32):
        cluster = tmp_path / f"c{size}.yaml"
        ports = write_cluster(cluster, {f"n{i}": 10 for i in range(1, size + 1)})
        # Only n1 runs: its 2 x (size-1) channels all retry connecting meanwhile.
        process = NodeProcess(cluster, "n1", tmp_path / f"n1-{size}", ports["n1"]).start()
        try:
            process.wait_healthy()
            time.sleep(1.0)
            assert process.process is not None
            counts[size] = len(os.listdir(f"/proc/{process.process.pid}/task"))
        finally:
            process.kill()
    assert counts[32] <= 16
    assert counts[32] == counts[3], counts


def test_sigterm_finishes_in_time_whatever_the_peers_do(tmp_path: Path) -> None:
    # b's address is a socket that accepts connections and never answers.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    cluster = tmp_path / "c.yaml"
    a_port = free_port()
    write_cluster(
        cluster,
        {"a": 100, "b": 100, "c": 100},
        ports={"a": a_port, "b": hung.getsockname()[1], "c": free_port()},
        transfer_rate=50,
    )
    process = NodeProcess(cluster, "a", tmp_path / "a", a_port).start()
    streams: list[IdleStream] = []
    try:
        process.wait_healthy()
        # Stuck incoming streams: they opened, sent one frame, and never read again.
        streams = [IdleStream(a_port, "c") for _ in range(3)]
        streams += [IdleStream(a_port, None) for _ in range(5)]
        # the newest stream of c (the first was superseded); a sends nothing itself:
        # no peer of it ever answered the channel handshake
        streams[2].frames.put(wire.frame_for("c", "a", 1, Transfer(1, 1)))
        wait_until(lambda: get_status(a_port).balance != 100, 5, what="a to move money")
        started = time.monotonic()
        assert process.process is not None
        process.process.send_signal(signal.SIGTERM)
        code = process.process.wait(15)
        elapsed = time.monotonic() - started
    finally:
        for stream in streams:
            stream.close()
        hung.close()
        process.kill()
    assert code == 0
    assert elapsed < 10.0
    log = process.log_path.read_text()
    assert "node stopped" in log


def test_drained_cluster_conserves_money_after_the_limits_tests_pattern(tmp_path: Path, ring):
    """The ring keeps working end to end with the new runtime (a sanity check)."""
    cluster, ports, processes = ring
    for node in ("a", "b", "c"):
        processes[node] = start(tmp_path, cluster, ports, node, "--max-transfers", "100",
                                CL_TRANSFER_RATE="200")  # fmt: skip
    wait_until(
        lambda: all(not get_status(p).workload_running for p in ports.values()),
        20,
        what="workloads to finish",
    )
    statuses = wait_drained(ports)
    assert sum(s.balance for s in statuses.values()) == 300
