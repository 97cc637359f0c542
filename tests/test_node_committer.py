"""The group committer on a real runtime and store: batching, results, between
batches, a failed commit; each with the commit on the writer thread (FULL) and
on the loop (NORMAL, the default)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import load_cluster
from node import wire
from node.committer import GroupCommitter
from node.core import InsufficientFunds, Transfer
from node.runtime import NodeClosed, NodeRuntime, ReceiveFrame, SendTransfer, StartSnapshot
from node.storage import Change, Store
from node.testing import write_cluster


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[NodeRuntime]:
    write_cluster(tmp_path / "cluster.yaml", {"a": 100, "b": 100, "c": 100})
    store = Store(tmp_path / "a")
    running = NodeRuntime(load_cluster(tmp_path / "cluster.yaml"), "a", store)
    yield running
    running.close()
    store.close()


def frame(seq: int, amount: int = 1):  # type: ignore[no-untyped-def]
    return wire.frame_for("b", "a", seq, Transfer(seq, amount))


@pytest.fixture(params=[False, True], ids=["writer-thread", "on-loop"])
def commit_on_loop(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def run(runtime: NodeRuntime, scenario, commit_on_loop: bool = False) -> object:  # type: ignore[no-untyped-def]
    async def main() -> object:
        committer = GroupCommitter(runtime, commit_on_loop=commit_on_loop)
        task = asyncio.create_task(committer.run())
        try:
            return await scenario(committer)
        finally:
            committer.close()
            await task
            committer.shutdown_writer()

    return asyncio.run(main())


def test_events_that_arrive_together_commit_together(
    runtime: NodeRuntime, commit_on_loop: bool
) -> None:
    async def scenario(committer: GroupCommitter) -> list[object]:
        futures = [committer.submit(ReceiveFrame(frame(seq))) for seq in range(1, 51)]
        futures.append(committer.submit(SendTransfer("c", 1000)))  # refused, alone
        return list(await asyncio.gather(*futures))

    results = run(runtime, scenario, commit_on_loop)
    assert results[:50] == list(range(1, 51))  # type: ignore[index]
    assert isinstance(results[50], InsufficientFunds)  # type: ignore[index]
    assert runtime.stats.batches == 1 and runtime.stats.largest_batch == 51
    assert runtime.balance == 150


def test_a_lone_event_does_not_wait_for_a_batch_to_fill(
    runtime: NodeRuntime, commit_on_loop: bool
) -> None:
    async def scenario(committer: GroupCommitter) -> float:
        started = time.perf_counter()
        assert await committer.apply(StartSnapshot("s1")) is False
        return time.perf_counter() - started

    seconds = run(runtime, scenario, commit_on_loop)
    assert runtime.stats.batches == 1 and runtime.active_snapshots == ("s1",)
    assert runtime.frames_after("b", 0)[0].WhichOneof("body") == "marker"
    assert seconds < 1.0  # one commit, nothing waited for (generous: a loaded disk)


def test_between_batches_sees_only_committed_state(
    runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime._store
    real_commit = store.commit
    committing: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def slow_commit(change: Change) -> None:  # the writer thread, mid-batch
        loop, event = committing[0]
        loop.call_soon_threadsafe(event.set)
        time.sleep(0.2)
        real_commit(change)

    monkeypatch.setattr(store, "commit", slow_commit)

    async def scenario(committer: GroupCommitter) -> tuple[int, int, bool]:
        started = asyncio.Event()
        committing.append((asyncio.get_running_loop(), started))
        pending = committer.submit(ReceiveFrame(frame(1, 7)))
        await started.wait()  # the batch is prepared: the core already holds +7 ...
        assert runtime.balance == 100  # ... but what is published is still the old state
        seen = await committer.between_batches(lambda: (runtime.balance, runtime._core.balance))
        return (*seen, pending.done())

    # Run only after the commit: published and core agree, and the event is resolved.
    assert run(runtime, scenario) == (107, 107, True)


def test_closing_refuses_new_events_and_commits_the_queued_ones(
    runtime: NodeRuntime, commit_on_loop: bool
) -> None:
    async def scenario(committer: GroupCommitter) -> tuple[object, object]:
        queued = committer.submit(ReceiveFrame(frame(1)))
        committer.close()
        late = committer.submit(ReceiveFrame(frame(2)))
        return await queued, await late

    queued, late = run(runtime, scenario, commit_on_loop)  # type: ignore[misc]
    assert queued == 1 and isinstance(late, NodeClosed)
    assert runtime.last_applied("b") == 1


def test_a_failed_commit_changes_nothing_and_fails_every_event_of_its_batch(
    runtime: NodeRuntime, commit_on_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime._store
    real_commit = store.commit
    failures = [sqlite3.OperationalError("disk I/O error")]

    def commit_once_failing(change: Change) -> None:
        if failures:
            raise failures.pop()
        real_commit(change)

    monkeypatch.setattr(store, "commit", commit_once_failing)

    async def scenario(committer: GroupCommitter) -> tuple[list[object], object]:
        batch = [committer.submit(ReceiveFrame(frame(seq, 5))) for seq in (1, 2)]
        failed = await asyncio.gather(*batch)
        assert runtime.balance == 100 and runtime.last_applied("b") == 0  # nothing published
        return failed, await committer.submit(ReceiveFrame(frame(1, 5)))  # the resend

    failed, resent = run(runtime, scenario, commit_on_loop)  # type: ignore[misc]
    assert all(isinstance(result, sqlite3.OperationalError) for result in failed)
    assert resent == 1 and runtime.balance == 105 and runtime.stats.commit_failures == 1
    assert store.load().last_applied["b"] == 1  # on disk: the resend only
