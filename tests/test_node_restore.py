"""The restore protocol in a node's runtime: durable prepare/commit/abort, one
transaction from the old epoch to the new one, epoch admission of frames and acks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import ClusterConfig, load_cluster
from node import wire
from node.core import Marker, Transfer
from node.restore import Acknowledge, Install, Refuse, RestoreTarget, Resume, Vote
from node.runtime import (
    AbortRestore,
    CommitRestore,
    EpochMismatch,
    MarkStale,
    NodeRuntime,
    NotServing,
    PrepareRestore,
    RandomTransfers,
    ReceiveFrame,
    SendTransfer,
    SetWorkload,
    Unavailable,
)
from node.storage import Store
from node.testing import write_cluster
from protos import chandy_lamport_pb2 as pb


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    write_cluster(tmp_path / "cluster.yaml", {"a": 100, "b": 100, "c": 100})
    return load_cluster(tmp_path / "cluster.yaml")


@pytest.fixture
def runtime(config: ClusterConfig, tmp_path: Path) -> Iterator[NodeRuntime]:
    store = Store(tmp_path / "a")
    yield NodeRuntime(config, "a", store)
    store.close()


def reopen(config: ClusterConfig, tmp_path: Path, old: NodeRuntime) -> NodeRuntime:
    old._store.close()  # what SIGKILL leaves: only what was committed
    return NodeRuntime(config, "a", Store(tmp_path / "a"))


def one(runtime: NodeRuntime, event: object) -> object:
    (result,) = runtime.apply([event])  # type: ignore[list-item]
    return result


TARGET = RestoreTarget(restore=1, epoch=1, snapshot_id="s1", balance=70, resend={"b": (4, 6)})


def frame(sender: str, seq: int, amount: int, epoch: int) -> pb.Frame:
    return wire.frame_for(sender, "a", seq, Transfer(seq, amount), epoch=epoch)


def test_prepare_is_durable_and_stops_origination(
    config: ClusterConfig, tmp_path: Path, runtime: NodeRuntime
) -> None:
    runtime.send_transfer("b", 10)
    assert one(runtime, PrepareRestore(TARGET)) == Vote(True)
    assert isinstance(one(runtime, SendTransfer("b", 1)), Unavailable)
    assert one(runtime, RandomTransfers(random.Random(1), 5, 10, 100)) == 0
    restarted = reopen(config, tmp_path, runtime)
    status = restarted.status()
    assert (status.restore_phase, status.prepared_restore, status.epoch) == ("prepared", 1, 0)
    assert restarted.unacknowledged("b") == 1  # the old epoch is untouched until commit
    assert one(restarted, PrepareRestore(TARGET)).ok  # type: ignore[union-attr]  # idempotent
    restarted._store.close()


def test_commit_moves_to_the_new_epoch_in_one_transaction(
    config: ClusterConfig, tmp_path: Path, runtime: NodeRuntime
) -> None:
    runtime.send_transfer("b", 10)
    runtime.send_transfer("c", 5)
    runtime.receive(frame("c", 1, 7, 0))
    runtime.start_snapshot("open-one")  # abandoned by the restore
    one(runtime, SetWorkload(False))
    assert one(runtime, PrepareRestore(TARGET)) == Vote(True)
    outcome = one(runtime, CommitRestore(1, 1))
    assert isinstance(outcome, Install)
    restarted = reopen(config, tmp_path, runtime)
    for node in (restarted,):
        status = node.status()
        assert (status.balance, status.epoch, status.restore_phase) == (70, 1, "serving")
        assert node.last_applied("b") == node.last_applied("c") == 0
        assert node.unacknowledged("c") == 0  # the old epoch's frames are gone
        resent = node.frames_after("b", 0)
        assert [(f.seq, f.transfer.transfer_seq, f.transfer.amount, f.epoch) for f in resent] == [
            (1, 1, 4, 1),
            (2, 2, 6, 1),
        ]
        assert node.active_snapshots == ()
        assert node.workload_paused  # paused before the prepare: paused after
    assert isinstance(one(restarted, CommitRestore(1, 1)), Acknowledge)  # repeated: acked
    restarted._store.close()


def test_frames_and_acks_of_another_epoch_change_nothing(runtime: NodeRuntime) -> None:
    one(runtime, PrepareRestore(TARGET))
    one(runtime, CommitRestore(1, 1))
    assert isinstance(one(runtime, frame_event(frame("c", 1, 5, 0))), EpochMismatch)
    assert runtime.last_applied("c") == 0 and runtime.balance == 70
    assert runtime.receive(frame("c", 1, 5, 1)) == 1
    assert runtime.balance == 75
    runtime.acknowledge("b", 2, epoch=0)  # an ack of the old epoch acks nothing
    assert runtime.unacknowledged("b") == 2
    runtime.acknowledge("b", 1, epoch=1)
    assert runtime.unacknowledged("b") == 1


def frame_event(f: pb.Frame) -> object:
    return ReceiveFrame(f)


def test_a_frame_of_the_prepared_epoch_waits_unapplied_until_commit(
    runtime: NodeRuntime,
) -> None:
    one(runtime, PrepareRestore(TARGET))
    assert isinstance(one(runtime, frame_event(frame("c", 1, 5, 1))), EpochMismatch)
    assert runtime.receive(frame("c", 1, 5, 0)) == 1  # the old epoch still flows
    one(runtime, CommitRestore(1, 1))
    assert runtime.receive(frame("c", 1, 5, 1)) == 1


def test_abort_returns_to_the_old_epoch_as_it_was(
    config: ClusterConfig, tmp_path: Path, runtime: NodeRuntime
) -> None:
    runtime.send_transfer("b", 10)
    one(runtime, PrepareRestore(TARGET))
    assert isinstance(one(runtime, CommitRestore(2, 1)), Refuse)  # not the prepared one
    assert isinstance(one(runtime, AbortRestore(1)), Resume)
    restarted = reopen(config, tmp_path, runtime)
    status = restarted.status()
    assert (status.balance, status.epoch, status.restore_phase) == (90, 0, "serving")
    assert restarted.unacknowledged("b") == 1
    assert not restarted.workload_paused
    assert isinstance(one(restarted, AbortRestore(1)), Acknowledge)
    restarted._store.close()


def test_a_frame_of_a_newer_epoch_marks_the_node_stale_durably(
    config: ClusterConfig, tmp_path: Path, runtime: NodeRuntime
) -> None:
    refused = one(runtime, frame_event(frame("b", 1, 5, 3)))
    assert isinstance(refused, NotServing)
    restarted = reopen(config, tmp_path, runtime)
    status = restarted.status()
    assert status.restore_phase == "stale"
    assert "missed a restore" in status.not_serving_reason
    # A stale node applies nothing, not even frames of its own epoch, and sends nothing.
    assert isinstance(one(restarted, frame_event(frame("c", 1, 5, 0))), NotServing)
    assert restarted.balance == 100
    assert isinstance(
        one(restarted, frame_event(wire.frame_for("c", "a", 1, Marker("s"), epoch=0))), NotServing
    )
    # ... until a restore: a stale node may prepare and commit.
    assert one(restarted, PrepareRestore(RestoreTarget(1, 4, "s1", 80))) == Vote(True)
    assert isinstance(one(restarted, CommitRestore(1, 4)), Install)
    status = restarted.status()
    assert (status.restore_phase, status.epoch, status.balance) == ("serving", 4, 80)
    restarted._store.close()


def test_mark_stale_from_a_handshake(runtime: NodeRuntime) -> None:
    one(runtime, MarkStale("b has applied 9 frames on a->b but a has sent only 0"))
    status = runtime.status()
    assert status.restore_phase == "stale" and not status.workload_running
    assert status.not_serving_reason.startswith("b has applied 9 frames")
