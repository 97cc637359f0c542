"""The collector's restore service: the coordinator (collector/restorer.py) on its
own driver thread, behind the Collector.Restore and ListRestores RPCs.

One restore at a time. `request(snapshot_id, timeout)` plans and writes the
restore, starts driving it in the background and waits up to `timeout` for
its outcome; the driver goes on after the caller gave up (a prepared node
must hear the decision). On start, `recover()` finishes what a killed
collector left unfinished (before the commit point: abort; after: commit).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import structlog

from collector.restore import RestorePhase, RestoreRecord, RestoreRefused
from collector.restorer import ParticipantClient, RestoreCoordinator
from collector.restores import RestoreLog
from collector.store import SnapshotStore
from common.config import ClusterConfig
from common.crash import crash_point

log = structlog.get_logger("collector.restoring")

DEFAULT_TIMEOUT = 60.0


class NoSuchSnapshot(RestoreRefused):
    """The snapshot to restore is not stored here (or none is complete)."""


def crash_hook(record: RestoreRecord) -> None:
    """CL_CRASH_AT points of the coordinator (common/crash.py), after each write."""
    if record.phase is RestorePhase.PREPARING and not record.prepared:
        crash_point("after-preparing", "collector")
    elif record.phase is RestorePhase.COMMITTING and not record.acked:
        crash_point("after-commit-point", "collector")


class CrashingClient:
    """The participant client with the CL_CRASH_AT points between messages: a yes
    vote received but the decision not written ("after-votes"), one node
    committed and the others not yet acknowledged ("after-first-ack")."""

    def __init__(self, client: ParticipantClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def epoch(self, node_id: str) -> int:
        return self.client.epoch(node_id)

    def prepare(self, node_id: str, target: Any) -> tuple[bool, str]:
        vote = self.client.prepare(node_id, target)
        if vote[0]:
            crash_point("after-votes", "collector")
        return vote

    def commit(self, node_id: str, restore: int, epoch: int) -> None:
        self.client.commit(node_id, restore, epoch)
        crash_point("after-first-ack", "collector")

    def abort(self, node_id: str, restore: int) -> None:
        self.client.abort(node_id, restore)


class RestoreService:
    def __init__(
        self,
        config: ClusterConfig,
        store: SnapshotStore,
        client: ParticipantClient,
        *,
        prepare_timeout: float = 10.0,
        on_write: Callable[[RestoreRecord], None] | None = crash_hook,
    ) -> None:
        self.store = store
        self.log = RestoreLog(store.directory)
        self.coordinator = RestoreCoordinator(
            self.log,
            CrashingClient(client),
            config.node_ids,
            config.channels,
            config.expected_total,
            prepare_timeout=prepare_timeout,
            on_write=on_write,
        )
        self._lock = threading.Lock()
        self._driver: threading.Thread | None = None
        self._done = threading.Condition()
        self._stopping = threading.Event()

    # ------------------------------------------------------------ driving

    def _drive(self, record: RestoreRecord) -> None:
        while not record.finished and not self._stopping.is_set():
            try:
                # One call until finished: the prepare deadline counts from its start.
                record = self.coordinator.drive(record)
            except Exception:  # a bug must not leave prepared nodes waiting silently
                log.exception("restore driver failed; retrying", restore=record.number)
                self._stopping.wait(1.0)
        with self._done:
            self._done.notify_all()

    def _start_driver(self, record: RestoreRecord) -> None:
        self._driver = threading.Thread(
            target=self._drive, args=(record,), name=f"restore-{record.number}", daemon=True
        )
        self._driver.start()

    def recover(self) -> RestoreRecord | None:
        """On collector start: finish an unfinished restore in the background."""
        record = self.coordinator.recover()
        if record is not None and not record.finished:
            with self._lock:
                self._start_driver(record)
        return record

    def stop(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------ requests

    def document(self, snapshot_id: str) -> dict[str, Any]:
        """The document of `snapshot_id` ("latest": the newest complete snapshot)."""
        if snapshot_id == "latest":
            complete = [s for s in self.store.finished() if s.status == "complete"]
            if not complete:
                raise NoSuchSnapshot("no complete snapshot is stored: nothing to restore")
            snapshot_id = complete[-1].snapshot_id
        text = self.store.read_text(snapshot_id)
        if text is None:
            raise NoSuchSnapshot(f"unknown snapshot {snapshot_id}")
        document: dict[str, Any] = json.loads(text)
        return document

    def request(self, snapshot_id: str, timeout: float = DEFAULT_TIMEOUT) -> RestoreRecord:
        """Start restoring `snapshot_id`; the record once finished or after `timeout`.

        Raises RestoreRefused (nothing written) if it cannot start."""
        document = self.document(snapshot_id)
        with self._lock:
            record = self.coordinator.start(document)
            self._start_driver(record)
        number = record.number
        with self._done:
            self._done.wait_for(
                lambda: self.log.read(number).finished or self._stopping.is_set(), timeout
            )
        return self.log.read(number)

    def rejoin_refusal(self, node_id: str, snapshot_id: str) -> str | None:
        """Why node `node_id` may not ask for this restore (None: it may rejoin)."""
        if snapshot_id != "latest":
            return f"node {node_id} may only ask to rejoin from the latest snapshot"
        status = getattr(self.coordinator.client, "status", None)
        if status is None:
            return None
        try:
            phase = status(node_id).restore_phase
        except Exception as error:  # Unreachable / Refused: cannot confirm it is stale
            return f"cannot confirm that {node_id} is stale: {error}"
        if phase != "stale":
            return f"node {node_id} is {phase or 'serving'}, not stale: only an operator restores"
        return None

    def records(self) -> list[RestoreRecord]:
        return self.log.records()
