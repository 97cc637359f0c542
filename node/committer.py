"""Group commit: events that arrive together are applied in one transaction.

Every producer on the event loop (a Channel stream, the workload, a
StartSnapshot call, the reporter) `submit`s an event and gets a future. The
committer task takes *everything queued so far* (up to `max_batch`) as one
batch: `prepare` on the loop, `commit` (on the loop, or on the single writer
thread under FULL: see below; what arrives meanwhile queues up for the next
batch), then `publish` on the loop and resolve
the futures. It never waits for a batch to fill: a lone marker is committed
and forwarded at once; under load, batches grow by themselves to whatever
arrived during the previous commit. One batch is in flight at a time, so a
failed commit is undone by reloading the core (see node/runtime.py).

Where the commit runs depends on what it costs. Under `synchronous=FULL`
every commit waits for an fsync (0.2-0.5 ms here), so it runs on the writer
thread while the loop goes on. Under NORMAL (the default) a WAL commit writes
to the OS and returns (10-30 µs here: `python -m benchmarks.figures`, floor
table), less than the hop to a thread and back (submit, wake the loop through
its self-pipe, two GIL hand-offs), so it runs on the loop itself
(`commit_on_loop`): 16% less node CPU per snapshot at N=16, and no writer
thread. Only an occasional WAL checkpoint (every ~4 MB written) then holds
the loop for its fsync.

Futures resolve to the event's result *value*: an event that failed resolves
to its exception (callers check), so a failure is never an unretrieved
future exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from node.runtime import Batch, Event, NodeClosed, NodeRuntime

_log = structlog.get_logger("node.committer")

MAX_BATCH = 2048

T = TypeVar("T")


class GroupCommitter:
    def __init__(
        self,
        runtime: NodeRuntime,
        on_published: Callable[[Batch], None] = lambda batch: None,
        max_batch: int = MAX_BATCH,
        commit_on_loop: bool = False,
    ) -> None:
        self.runtime = runtime
        self.on_published = on_published
        self.max_batch = max_batch
        self.commit_on_loop = commit_on_loop
        self._queue: deque[tuple[Event, asyncio.Future[object]]] = deque()
        self._between: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._in_flight = False
        self._wake = asyncio.Event()
        self._closing = False
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"commit-{runtime.node_id}")
        self._log = _log.bind(node_id=runtime.node_id)

    # ------------------------------------------------------------ producers

    def submit(self, event: Event) -> asyncio.Future[object]:
        """Queue `event`; the future resolves to its result (or its exception)."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_result(NodeClosed(f"node {self.runtime.node_id} is shutting down"))
            return future
        self._queue.append((event, future))
        self._wake.set()
        return future

    async def apply(self, event: Event) -> object:
        """Submit `event`, wait for its commit; raises the event's exception."""
        result = await self.submit(event)
        if isinstance(result, BaseException):
            raise result
        return result

    async def between_batches(self, function: Callable[[], T]) -> T:
        """`function()` run when no batch is prepared but uncommitted (the core
        then equals what is on disk): at once if idle, else right after the
        current batch is published, before the next one is prepared."""
        if not self._in_flight:
            return function()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._between.append((function, future))
        return await future

    def _run_between(self) -> None:
        waiting, self._between = self._between, []
        for function, future in waiting:
            if future.done():
                continue
            try:
                future.set_result(function())
            except Exception as error:
                future.set_exception(error)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------- the task

    async def run(self) -> None:
        """Commit batches until `close` and the queue is empty."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                count = min(len(self._queue), self.max_batch)
                items = [self._queue.popleft() for _ in range(count)]
                self._in_flight = True
                try:
                    await self._commit(loop, items)
                finally:
                    self._in_flight = False
                    self._run_between()
        finally:
            self._fail_queued()
            self._run_between()

    async def _commit(
        self, loop: asyncio.AbstractEventLoop, items: list[tuple[Event, asyncio.Future[object]]]
    ) -> None:
        runtime = self.runtime
        try:
            batch = runtime.prepare([event for event, _ in items])
        except BaseException as error:
            _resolve(items, [error] * len(items))
            if not isinstance(error, NodeClosed | Exception):
                raise
            return
        if batch.changed and self.commit_on_loop:
            try:
                runtime.commit(batch)
            except Exception as error:
                self._rolled_back(batch, items, error)
                return
        elif batch.changed:
            # Shielded: a cancelled committer still waits for the transaction it
            # started (the thread cannot be interrupted), then publishes it.
            commit = loop.run_in_executor(self._writer, runtime.commit, batch)
            try:
                await asyncio.shield(commit)
            except asyncio.CancelledError:
                await _settle(commit)
                if commit.exception() is None:
                    runtime.publish(batch)
                    _resolve(items, batch.results)
                    self.on_published(batch)
                else:
                    runtime.rollback(batch)
                    _resolve(items, [commit.exception()] * len(items))
                raise
            except Exception as error:
                self._rolled_back(batch, items, error)
                return
        runtime.publish(batch)
        _resolve(items, batch.results)
        self.on_published(batch)

    def _rolled_back(
        self, batch: Batch, items: list[tuple[Event, asyncio.Future[object]]], error: Exception
    ) -> None:
        self.runtime.rollback(batch)
        self._log.error("commit failed; nothing applied", error=repr(error))
        _resolve(items, [error] * len(items))

    def _fail_queued(self) -> None:
        closed = NodeClosed(f"node {self.runtime.node_id} is shutting down")
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_result(closed)

    def close(self) -> None:
        """Refuse new events; `run` returns once the queued ones are committed."""
        self._closing = True
        self._wake.set()

    def shutdown_writer(self) -> None:
        self._writer.shutdown(wait=True)


def _resolve(items: list[tuple[Event, asyncio.Future[object]]], results: list[object]) -> None:
    for (_, future), result in zip(items, results, strict=True):
        if not future.done():
            future.set_result(result)


async def _settle(future: asyncio.Future[None]) -> None:
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except Exception:
            return
