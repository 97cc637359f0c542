"""The bank workload: random transfers to random outgoing peers at a fixed rate.

An asyncio task. Each turn it submits *every* transfer that is due by now
(at most `MAX_PER_BATCH`) as one `RandomTransfers` event and waits for its
commit, so that at a high rate the transfers share transactions (group
commit) instead of paying one each; at 5 per second it is one per commit.
"""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from node.committer import GroupCommitter
from node.runtime import NodeClosed, NodeRuntime, RandomTransfers

log = structlog.get_logger("node.workload")

# Unacknowledged frames per channel above which the workload stops choosing
# that peer: a peer that is down must not grow the outbox without bound.
MAX_IN_FLIGHT = 1000
MAX_PER_BATCH = 256
# How long to wait when nothing could be sent (no money, every peer backlogged).
IDLE_WAIT = 0.01


class Workload:
    """Sends `rate` transfers per second (0: none) until stopped.

    `max_transfers` bounds the attempts, not the successes: a node whose money
    all went to a peer that sends nothing back would otherwise never finish.
    """

    def __init__(
        self,
        runtime: NodeRuntime,
        committer: GroupCommitter,
        rate: float,
        max_amount: int,
        max_transfers: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.committer = committer
        self.rate = rate
        self.max_amount = max_amount
        self.max_transfers = max_transfers
        self.sent = 0  # transfers made
        self.attempts = 0  # attempts, including those skipped for lack of money
        self._rng = random.Random()
        self._stopping = False
        self._log = log.bind(node_id=runtime.node_id)

    def stop(self) -> None:
        """Stop after the current batch (safe to call from any thread)."""
        self._stopping = True

    async def run(self) -> None:
        if self.rate <= 0 or not self.runtime.outgoing:
            self._log.info("workload idle", rate=self.rate)
            return
        self._log.info("workload started", rate=self.rate, max_transfers=self.max_transfers)
        self.runtime.workload_running = True
        try:
            await self._run()
        except NodeClosed:
            pass
        finally:
            self.runtime.workload_running = False

    async def _run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        while not self._stopping:
            if self.max_transfers is not None and self.attempts >= self.max_transfers:
                self._log.info("workload finished", transfers=self.sent, attempts=self.attempts)
                return
            now = time.monotonic()
            if now < due:
                await asyncio.sleep(min(due - now, 0.5))
                continue
            if now - due > 1.0:
                due = now  # after a stall, keep the rate; do not burst
            count = min(MAX_PER_BATCH, int((now - due) / interval) + 1)
            if self.max_transfers is not None:
                count = min(count, self.max_transfers - self.attempts)
            made = await self.committer.apply(
                RandomTransfers(self._rng, count, self.max_amount, MAX_IN_FLIGHT)
            )
            assert isinstance(made, int)
            self.attempts += count
            self.sent += made
            due += count * interval
            if made == 0:
                await asyncio.sleep(max(interval, IDLE_WAIT))
