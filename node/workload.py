"""The bank workload: random transfers to random outgoing peers at a fixed rate."""

from __future__ import annotations

import random
import threading
import time

import structlog
from structlog.contextvars import bind_contextvars

from node.runtime import NodeClosed, NodeRuntime

log = structlog.get_logger("node.workload")

# Unacknowledged frames per channel above which the workload stops choosing
# that peer: a peer that is down must not grow the outbox without bound.
MAX_IN_FLIGHT = 1000


class Workload(threading.Thread):
    """Sends `rate` transfers per second (0: none) until stopped.

    `max_transfers` bounds the attempts, not the successes: a node whose money
    all went to a peer that sends nothing back would otherwise never finish.
    """

    def __init__(
        self,
        runtime: NodeRuntime,
        rate: float,
        max_amount: int,
        max_transfers: int | None = None,
    ) -> None:
        super().__init__(name=f"workload-{runtime.node_id}", daemon=True)
        self.runtime = runtime
        self.rate = rate
        self.max_amount = max_amount
        self.max_transfers = max_transfers
        self.sent = 0  # transfers made
        self.attempts = 0  # ticks, including those skipped for lack of money
        self._rng = random.Random()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        bind_contextvars(node_id=self.runtime.node_id)
        if self.rate <= 0 or not self.runtime.outgoing:
            log.info("workload idle", rate=self.rate)
            return
        log.info("workload started", rate=self.rate, max_transfers=self.max_transfers)
        self.runtime.workload_running = True
        try:
            self._run()
        finally:
            self.runtime.workload_running = False

    def _run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        while not self._stopping.is_set():
            if self.max_transfers is not None and self.attempts >= self.max_transfers:
                log.info("workload finished", transfers=self.sent, attempts=self.attempts)
                return
            self.attempts += 1
            try:
                if self.runtime.send_random_transfer(self._rng, self.max_amount, MAX_IN_FLIGHT):
                    self.sent += 1
            except NodeClosed:
                return
            due += interval
            delay = due - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
            elif delay < -1.0:
                due = time.monotonic()  # after a stall, keep the rate; do not burst
