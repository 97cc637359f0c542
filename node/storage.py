"""Durable node state in SQLite (WAL) inside the node's data directory.

What is stored, and why each piece is needed to resume after SIGKILL:

  meta.identity     node id + channel set: a data dir is never reused by
                    another node or after the topology changed
  meta.core         NodeCore.to_dict() as JSON: balance, counters, snapshots
                    (without the messages active snapshots recorded and
                    without the finished ids)
  recorded_messages the in-flight messages each active snapshot has recorded
                    (the core's MessageRecorded actions), one row each,
                    inserted with the event that recorded it: a save costs
                    the same however many a snapshot holds; deleted with the
                    transaction that stores the snapshot's final report
  finished          ids of finished local snapshots, oldest first, one row
                    each, inserted with the final report; only the newest
                    FINISHED_MEMORY are kept (a late initiator of one of them
                    must not start it again)
  incoming          per incoming channel, the last applied frame seq: the
                    receiver drops duplicates and detects gaps with it
  outgoing          per outgoing channel, the next frame seq to assign
  outbox            frames not yet acknowledged, resent after a reconnect
  recorded          when each active snapshot was recorded (wall clock and
                    Lamport clock, for its report)
  meta.lamport      the node's Lamport clock (node/timeline.py), so that it
                    never goes backwards across a restart
  meta.participant  the restore protocol's state (node/restore.py
                    `Participant`: epoch, prepared restore, stale reason),
                    written before the node answers a restore message
  meta.workload     "paused" or "running": the operator's pause survives a restart
  reports           final local snapshot reports not yet acked by the
                    collector, one per snapshot id (serialized LocalSnapshot
                    messages), stored with the event that finished the
                    snapshot (progress reports are built from the recording
                    on a timer and never stored)

Every state change goes through `commit`, one transaction: a debit and its
outbox frame, or a credit and its last-applied seq, are never split. A batch
of events (group commit) is one transaction.

Durability (`synchronous`, WAL journal): FULL fsyncs the WAL at every
commit, so an acknowledged credit survives kill -9, an OS crash and a power
cut. NORMAL (what a node runs with unless told otherwise, node/server.py)
fsyncs only at checkpoints: it survives kill -9 (the WAL is in the OS page
cache) but an OS crash or power cut may lose the last transactions, after
which the node may have acked frames it no longer has. This class's own
default stays FULL.

The store is not thread-safe: the runtime calls it from one thread at a time
(the committer's writer thread while a batch commits under FULL, the event
loop otherwise).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.core import FINISHED_MEMORY

DB_NAME = "node.sqlite3"
LOCK_NAME = "node.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incoming (peer TEXT PRIMARY KEY, last_applied INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outgoing (peer TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    peer TEXT NOT NULL, seq INTEGER NOT NULL, frame BLOB NOT NULL, PRIMARY KEY (peer, seq)
);
CREATE TABLE IF NOT EXISTS recorded (
    snapshot_id TEXT PRIMARY KEY, recorded_at TEXT NOT NULL, lamport INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reports (snapshot_id TEXT PRIMARY KEY, report BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS recorded_messages (
    snapshot_id TEXT NOT NULL, sender TEXT NOT NULL,
    transfer_seq INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, sender, transfer_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS finished (snapshot_id TEXT NOT NULL UNIQUE);
"""


class StorageError(Exception):
    """The data directory cannot be used."""


class DataDirMismatch(StorageError):
    """The data directory belongs to another node or another channel set."""


class DataDirLocked(StorageError):
    """Another process already uses this data directory."""


@dataclass(frozen=True)
class Identity:
    """What a data directory belongs to."""

    node_id: str
    incoming: tuple[str, ...]
    outgoing: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "node_id": self.node_id,
                "incoming": list(self.incoming),
                "outgoing": list(self.outgoing),
            },
            sort_keys=True,
        )


@dataclass
class StoredState:
    """Everything `load` reads back."""

    core: dict[str, Any]
    last_applied: dict[str, int]
    next_seq: dict[str, int]
    outbox: dict[str, list[tuple[int, bytes]]]  # peer -> [(seq, frame)] ascending
    recorded_at: dict[str, str]
    reports: dict[str, bytes]
    recorded_lamport: dict[str, int]
    lamport: int
    # snapshot id -> sender -> [(transfer_seq, amount)] ascending
    recorded_messages: dict[str, dict[str, list[tuple[int, int]]]]
    finished: list[str]  # finished snapshot ids, oldest first
    participant: dict[str, Any] | None = None  # node/restore.py Participant.to_dict()
    workload_paused: bool = False


@dataclass
class Change:
    """One atomic state change: everything in it commits together or not at all.

    A batch of events (group commit) is one Change: every field holds the
    rows of all its events.
    """

    core: Mapping[str, Any] | None = None
    applied: dict[str, int] = field(default_factory=dict)  # incoming peer -> last frame seq
    outbox: list[tuple[str, int, bytes]] = field(default_factory=list)  # (peer, seq, frame)
    next_seq: dict[str, int] = field(default_factory=dict)
    # (snapshot id, wall-clock time, Lamport clock) of each snapshot recorded
    recorded: list[tuple[str, str, int]] = field(default_factory=list)
    lamport: int | None = None  # the Lamport clock after this change
    # (snapshot id, sender, transfer_seq, amount): recorded in-flight messages
    messages: list[tuple[str, str, int, int]] = field(default_factory=list)
    # Final reports (snapshot done: its `recorded` and `recorded_messages`
    # rows go, the report holds the messages; its id joins `finished`).
    reports: list[tuple[str, bytes]] = field(default_factory=list)  # (snapshot id, report)
    # Reports the collector acked: deleted if still the stored bytes.
    delete_reports: list[tuple[str, bytes]] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # peer -> highest acked seq
    # A restore commit: before anything else in this transaction, every channel
    # counter starts again (last applied 0, next seq 1), the old epoch's outbox
    # and every active recording are dropped. The rest of the Change (the new
    # core, the resent frames) is then written on top.
    reset_channels: bool = False
    participant: Mapping[str, Any] | None = None  # the restore state, when it changed
    workload_paused: bool | None = None  # the operator paused (True) or resumed (False)


class Store:
    """The SQLite database of one node."""

    def __init__(self, data_dir: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot create data dir {self.data_dir}: {error.strerror}"
            ) from error
        # An exclusive lock on a side file: two processes sharing one data dir
        # would each resend and apply frames as if they were the only one.
        self._lock_file = open(self.data_dir / LOCK_NAME, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self._lock_file.close()
            raise DataDirLocked(f"data dir {self.data_dir} is in use by another process") from error
        if synchronous.upper() not in ("FULL", "NORMAL", "OFF"):
            self._lock_file.close()
            raise StorageError(f"unknown SQLite synchronous mode {synchronous!r}")
        self._db = sqlite3.connect(
            self.data_dir / DB_NAME, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not just a killed process; a
        # receiver must never ack a credit that could still be rolled back.
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(recorded)")}
        if "lamport" not in columns:  # a data dir from before the timeline
            self._db.execute("ALTER TABLE recorded ADD COLUMN lamport INTEGER NOT NULL DEFAULT 0")

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._db.close()
        self._lock_file.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------- identity

    def identity(self) -> Identity | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        if row is None:
            return None
        raw = json.loads(row[0])
        return Identity(raw["node_id"], tuple(raw["incoming"]), tuple(raw["outgoing"]))

    def initialise(self, identity: Identity, core: Mapping[str, Any]) -> None:
        """First start: record who owns this data dir and the initial state."""
        with self._transaction() as db:
            db.execute("INSERT INTO meta VALUES ('identity', ?)", (identity.to_json(),))
            db.execute("INSERT INTO meta VALUES ('core', ?)", (json.dumps(core),))
            db.executemany("INSERT INTO incoming VALUES (?, 0)", [(p,) for p in identity.incoming])
            db.executemany("INSERT INTO outgoing VALUES (?, 1)", [(p,) for p in identity.outgoing])

    def check_identity(self, expected: Identity) -> None:
        """Raise DataDirMismatch unless this data dir belongs to `expected`."""
        found = self.identity()
        if found is None:
            raise DataDirMismatch(f"data dir {self.data_dir} is not initialised")
        if found.node_id != expected.node_id:
            raise DataDirMismatch(
                f"data dir {self.data_dir} belongs to node {found.node_id!r}, "
                f"not {expected.node_id!r}"
            )
        if found != expected:
            raise DataDirMismatch(
                f"data dir {self.data_dir} was created for channels "
                f"in={list(found.incoming)} out={list(found.outgoing)} of {found.node_id}, "
                f"but the config now has in={list(expected.incoming)} "
                f"out={list(expected.outgoing)}; use a fresh data dir "
                "(compose: `docker compose down -v` deletes the old volumes)"
            )

    # ----------------------------------------------------------------- read

    def load(self) -> StoredState:
        db = self._db
        core_row = db.execute("SELECT value FROM meta WHERE key = 'core'").fetchone()
        if core_row is None:
            raise StorageError(f"data dir {self.data_dir} has no core state")
        lamport_row = db.execute("SELECT value FROM meta WHERE key = 'lamport'").fetchone()
        messages: dict[str, dict[str, list[tuple[int, int]]]] = {}
        for sid, sender, seq, amount in db.execute(
            "SELECT snapshot_id, sender, transfer_seq, amount FROM recorded_messages "
            "ORDER BY snapshot_id, sender, transfer_seq"
        ):
            messages.setdefault(sid, {}).setdefault(sender, []).append((seq, amount))
        outbox: dict[str, list[tuple[int, bytes]]] = {}
        for peer, seq, frame in db.execute(
            "SELECT peer, seq, frame FROM outbox ORDER BY peer, seq"
        ):
            outbox.setdefault(peer, []).append((seq, bytes(frame)))
        return StoredState(
            core=json.loads(core_row[0]),
            last_applied=dict(db.execute("SELECT peer, last_applied FROM incoming").fetchall()),
            next_seq=dict(db.execute("SELECT peer, next_seq FROM outgoing").fetchall()),
            outbox=outbox,
            recorded_at=dict(
                db.execute("SELECT snapshot_id, recorded_at FROM recorded").fetchall()
            ),
            recorded_lamport=dict(
                db.execute("SELECT snapshot_id, lamport FROM recorded").fetchall()
            ),
            lamport=int(lamport_row[0]) if lamport_row is not None else 0,
            participant=self._meta_json("participant"),
            workload_paused=self._meta_text("workload") == "paused",
            reports={
                sid: bytes(body)
                for sid, body in db.execute(
                    "SELECT snapshot_id, report FROM reports ORDER BY rowid"
                )
            },
            recorded_messages=messages,
            finished=[
                sid for (sid,) in db.execute("SELECT snapshot_id FROM finished ORDER BY rowid")
            ],
        )

    def _meta_text(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta_json(self, key: str) -> dict[str, Any] | None:
        text = self._meta_text(key)
        return None if text is None else dict(json.loads(text))

    # ---------------------------------------------------------------- write

    def commit(self, change: Change) -> None:
        """Apply `change` in one transaction."""
        with self._transaction() as db:
            if change.reset_channels:
                db.execute("DELETE FROM outbox")
                db.execute("UPDATE incoming SET last_applied = 0")
                db.execute("UPDATE outgoing SET next_seq = 1")
                db.execute("DELETE FROM recorded")
                db.execute("DELETE FROM recorded_messages")
            if change.participant is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('participant', ?)",
                    (json.dumps(change.participant, sort_keys=True),),
                )
            if change.workload_paused is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('workload', ?)",
                    ("paused" if change.workload_paused else "running",),
                )
            if change.core is not None:
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'core'", (json.dumps(change.core),)
                )
            db.executemany(
                "UPDATE incoming SET last_applied = ? WHERE peer = ?",
                [(seq, peer) for peer, seq in change.applied.items()],
            )
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?)", change.outbox)
            db.executemany(
                "UPDATE outgoing SET next_seq = ? WHERE peer = ?",
                [(seq, peer) for peer, seq in change.next_seq.items()],
            )
            db.executemany(
                "DELETE FROM outbox WHERE peer = ? AND seq <= ?", list(change.acked.items())
            )
            db.executemany("INSERT OR REPLACE INTO recorded VALUES (?, ?, ?)", change.recorded)
            if change.lamport is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('lamport', ?)", (str(change.lamport),)
                )
            # Plain INSERT: a message is recorded once; a second row for it
            # would be a bug, and it fails the whole transaction.
            db.executemany("INSERT INTO recorded_messages VALUES (?, ?, ?, ?)", change.messages)
            db.executemany(
                "DELETE FROM reports WHERE snapshot_id = ? AND report = ?", change.delete_reports
            )
            for snapshot_id, report in change.reports:
                db.execute("DELETE FROM recorded WHERE snapshot_id = ?", (snapshot_id,))
                db.execute("DELETE FROM recorded_messages WHERE snapshot_id = ?", (snapshot_id,))
                db.execute("INSERT OR REPLACE INTO reports VALUES (?, ?)", (snapshot_id, report))
                db.execute("INSERT INTO finished VALUES (?)", (snapshot_id,))
            if change.reports:
                db.execute(
                    "DELETE FROM finished WHERE rowid <= (SELECT MAX(rowid) FROM finished) - ?",
                    (FINISHED_MEMORY,),
                )
