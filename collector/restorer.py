"""The collector's restore driver: runs collector/restore.py's decisions against the nodes.

    coordinator = RestoreCoordinator(RestoreLog(dir), client, node_ids, channels, total)
    record = coordinator.start(document)        # plan, choose the epoch, write restores/<n>.json
    record = coordinator.drive(record, timeout) # prepare -> commit | abort, until every node acked

`client` is the transport (gRPC in production: `collector.restore_client`):
four calls per node, each raising `Unreachable` when the node cannot be
asked. Every transition is written to the log before the next message goes
out, so a coordinator killed anywhere is recovered by `recover()` on the next
start (before the commit point: abort; after it: finish the commit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from collector import restore as decisions
from collector.restore import RestoreRecord, RestoreRefused
from collector.restores import RestoreLog
from common.timeutil import iso_utc
from node.restore import RestoreTarget

log = structlog.get_logger("collector.restore")

RETRY_SECONDS = 0.5


class Unreachable(Exception):
    """The node could not be asked (down, or the call failed in transport)."""


class Refused(Exception):
    """The node answered and refused (the message is its reason)."""


@dataclass(frozen=True)
class NodeEpoch:
    node_id: str
    epoch: int


class ParticipantClient(Protocol):
    def epoch(self, node_id: str) -> int: ...

    def prepare(self, node_id: str, target: RestoreTarget) -> tuple[bool, str]: ...

    def commit(self, node_id: str, restore: int, epoch: int) -> None: ...

    def abort(self, node_id: str, restore: int) -> None: ...


class RestoreBusy(RestoreRefused):
    """Another restore has not finished yet."""


class RestoreCoordinator:
    def __init__(
        self,
        restore_log: RestoreLog,
        client: ParticipantClient,
        node_ids: Sequence[str],
        channels: Iterable[tuple[str, str]],
        expected_total: int,
        *,
        prepare_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        on_write: Callable[[RestoreRecord], None] | None = None,
    ) -> None:
        self.log = restore_log
        self.client = client
        self.node_ids = tuple(node_ids)
        self.channels = tuple(channels)
        self.expected_total = expected_total
        self.prepare_timeout = prepare_timeout
        self.clock = clock
        self.on_write = on_write
        self._lock = threading.Lock()

    def _now(self) -> str:
        return iso_utc(self.clock())

    def _write(self, record: RestoreRecord) -> RestoreRecord:
        self.log.write(record)
        if self.on_write is not None:
            self.on_write(record)
        return record

    def unfinished(self) -> RestoreRecord | None:
        latest = self.log.latest()
        return latest if latest is not None and not latest.finished else None

    # ------------------------------------------------------------- start

    def start(self, document: Mapping[str, Any]) -> RestoreRecord:
        """Plan restoring `document` (a complete snapshot) and write it as
        phase=preparing. Raises RestoreRefused (nothing written) if it cannot."""
        with self._lock:
            busy = self.unfinished()
            if busy is not None:
                raise RestoreBusy(
                    f"restore {busy.number} (snapshot {busy.snapshot_id}) is still "
                    f"{busy.phase.value}; waiting for {', '.join(busy.waiting_for()) or '-'}"
                )
            epochs = []
            unreachable = []
            for node_id in self.node_ids:
                try:
                    epochs.append(self.client.epoch(node_id))
                except Unreachable:
                    unreachable.append(node_id)
            if unreachable:
                raise RestoreRefused(
                    f"cannot reach {', '.join(unreachable)}: every node must be up to restore"
                )
            current = self.log.current_epoch()
            epoch = decisions.choose_epoch(self.log.last_epoch(), epochs)
            number = (self.log.numbers() or [0])[-1] + 1
            targets = decisions.plan_restore(
                document, self.node_ids, self.channels, self.expected_total, number, epoch
            )
            record = decisions.begin(
                number, str(document["snapshot_id"]), epoch, current, targets, self._now()
            )
            log.info(
                "restore started",
                restore=number,
                snapshot_id=record.snapshot_id,
                epoch=epoch,
            )
            return self._write(record)

    def recover(self) -> RestoreRecord | None:
        """On start: the unfinished restore, if any, as it must go on (see the table)."""
        record = self.unfinished()
        if record is None:
            return None
        recovered = decisions.recover(record, self._now())
        if recovered != record:
            self._write(recovered)
        log.info(
            "unfinished restore recovered",
            restore=recovered.number,
            phase=recovered.phase.value,
            reason=recovered.reason,
        )
        return recovered

    # ------------------------------------------------------------- drive

    def drive(self, record: RestoreRecord, timeout: float | None = None) -> RestoreRecord:
        """Send what `record` says until it is finished (or `timeout` seconds pass:
        then the record as it stands; call again to go on)."""
        started = time.monotonic()
        prepare_deadline = started + self.prepare_timeout
        with ThreadPoolExecutor(max_workers=max(1, len(self.node_ids))) as pool:
            while not record.finished:
                if record.phase is decisions.RestorePhase.PREPARING and (
                    time.monotonic() >= prepare_deadline
                ):
                    record = self._write(decisions.on_prepare_deadline(record, self._now()))
                    log.warning("restore aborting", restore=record.number, reason=record.reason)
                    continue
                outgoing = decisions.messages(record)
                targets = [record] * len(outgoing)
                replies = list(pool.map(self._send, targets, *zip(*outgoing, strict=True)))
                changed = record
                for node_id, reply in replies:
                    changed = self._apply(changed, node_id, reply)
                if changed != record:
                    record = self._write(changed)
                    if record.decided and changed.phase != decisions.RestorePhase.PREPARING:
                        log.info(
                            "restore " + record.phase.value,
                            restore=record.number,
                            waiting_for=list(record.waiting_for()),
                        )
                if record.finished:
                    break
                if timeout is not None and time.monotonic() - started >= timeout:
                    return record
                if any(reply is None for _, reply in replies):
                    time.sleep(RETRY_SECONDS)
        log.info("restore finished", restore=record.number, outcome=record.outcome)
        return record

    def _send(
        self, record: RestoreRecord, node_id: str, message: decisions.Message
    ) -> tuple[str, tuple[bool, str] | None]:
        """One message to one node: (node, (ok, reason)) or (node, None) if unreachable."""
        try:
            if isinstance(message, decisions.Prepare):
                return node_id, self.client.prepare(node_id, message.target)
            if isinstance(message, decisions.Commit):
                try:
                    self.client.commit(node_id, message.restore, message.epoch)
                except Refused as refusal:
                    # After the commit point a node that lost its prepared state
                    # (its data dir was replaced) may prepare again: the decision
                    # is made, and commit replaces all of its state anyway.
                    log.warning(
                        "commit refused, preparing again", node_id=node_id, reason=str(refusal)
                    )
                    ok, reason = self.client.prepare(node_id, record.targets[node_id])
                    if not ok:
                        log.error(
                            "node cannot take the committed restore", node_id=node_id, reason=reason
                        )
                        return node_id, None
                    self.client.commit(node_id, message.restore, message.epoch)
                return node_id, (True, "")
            self.client.abort(node_id, message.restore)
            return node_id, (True, "")
        except (Unreachable, Refused) as error:
            log.info("node not answering the restore yet", node_id=node_id, error=str(error))
            return node_id, None

    def _apply(
        self, record: RestoreRecord, node_id: str, reply: tuple[bool, str] | None
    ) -> RestoreRecord:
        if reply is None:
            return record
        if record.phase is decisions.RestorePhase.PREPARING:
            return decisions.on_vote(record, node_id, reply[0], reply[1], self._now())
        return decisions.on_ack(record, node_id, self._now())
