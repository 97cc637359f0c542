"""The snapshot directory: finished snapshot files and an append-only log of pending ones.

Layout of the directory:

    <snapshot_id>.json      one finished snapshot (complete or aborted), written once
    latest.json             a hard link to the most recently finished one (a copy
                            where the file system has no hard links)
    .pending/log.jsonl      append-only: one JSON line per begin and per accepted
                            report of the snapshots not finished yet

A finished snapshot's file is written once with `atomic_write_bytes` (temp
file, fsync, `os.replace`, fsync of the directory): a reader sees it whole
or not at all, even after a power cut; `latest.json` is then re-linked to it
(rename of a new link: atomic too), so the document's bytes are written once.

Pending state costs one append and one fsync per begin or report, and the
fsyncs of reports that arrive together are shared (`sync`, group commit: a
thread whose line was appended before another thread's fsync started does
not fsync again). A crash can tear only the last line, which `load_pending`
skips (its sender was never acknowledged and sends it again). Lines of
finished snapshots are garbage: `compact` truncates the log when nothing is
pending, and rewrites it with only the pending snapshots when it has grown
beyond COMPACT_BYTES.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.assembly import InvalidReport, PendingSnapshot, check_snapshot_id
from collector.document import NodeReport
from common.files import TEMP_PREFIX, atomic_write_bytes, fsync_dir
from node.core import LocalSnapshot, RecordedMessage

LATEST = "latest.json"
PENDING_DIR = ".pending"
LOG_NAME = "log.jsonl"
COMPACT_BYTES = 16 * 1024 * 1024


# ------------------------------------------------------------ (de)serialising


def report_to_dict(report: NodeReport) -> dict[str, Any]:
    snap = report.snapshot
    return {
        "snapshot_id": snap.snapshot_id,
        "node_id": snap.node_id,
        "balance": snap.balance,
        "sent": dict(snap.sent),
        "received": dict(snap.received),
        "channels": {
            sender: [[m.transfer_seq, m.amount] for m in messages]
            for sender, messages in snap.channels.items()
        },
        "initiated": snap.initiated,
        "recorded_at": report.recorded_at,
        "completed_at": report.completed_at,
        "complete": report.complete,
        "open_channels": list(report.open_channels),
        "timeline": [dict(event) for event in report.timeline],
        "lamport_recorded": report.lamport_recorded,
    }


def report_from_dict(data: dict[str, Any]) -> NodeReport:
    snapshot = LocalSnapshot(
        snapshot_id=str(data["snapshot_id"]),
        node_id=str(data["node_id"]),
        balance=int(data["balance"]),
        sent={str(k): int(v) for k, v in data["sent"].items()},
        received={str(k): int(v) for k, v in data["received"].items()},
        channels={
            str(sender): tuple(RecordedMessage(int(seq), int(amount)) for seq, amount in msgs)
            for sender, msgs in data["channels"].items()
        },
        initiated=bool(data["initiated"]),
    )
    return NodeReport(
        snapshot,
        str(data["recorded_at"]),
        str(data["completed_at"]),
        complete=bool(data["complete"]),
        open_channels=tuple(str(s) for s in data["open_channels"]),
        timeline=tuple(dict(event) for event in data.get("timeline", [])),
        lamport_recorded=int(data.get("lamport_recorded", 0)),
    )


# json's C encoder: `json.dumps(..., indent=2)` runs the pure-Python one, four
# times slower, and the document is serialised with the collector's lock held.
_encode = json.JSONEncoder().encode


def document_text(document: dict[str, Any]) -> str:
    """A snapshot file's text: one line per top-level field, per node, per channel and
    per channel check (so `grep` finds the line of a node or a failed check), each
    line by json's C encoder; the same JSON value as the document."""

    def field(key: str, value: Any, pad: str) -> str:
        if key == "nodes" and isinstance(value, dict):
            return _members(value, pad, lambda _key, node, _pad: _encode(node))
        if key == "channels" and isinstance(value, list):
            return _lines(value, pad)
        if key == "verification" and isinstance(value, dict):
            return _members(value, pad, verification)
        return _encode(value)

    def verification(key: str, value: Any, pad: str) -> str:
        if key == "channels" and isinstance(value, list):
            return _lines(value, pad)
        return _encode(value)

    return _members(document, "", field) + "\n"


def _members(mapping: dict[str, Any], pad: str, render: Callable[[str, Any, str], str]) -> str:
    """`mapping` as a JSON object with one member per line, each value by `render`."""
    if not mapping:
        return "{}"
    inner = pad + "  "
    members = ",\n".join(f"{inner}{_encode(k)}: {render(k, v, inner)}" for k, v in mapping.items())
    return "{\n" + members + "\n" + pad + "}"


def _lines(items: list[Any], pad: str) -> str:
    """`items` as a JSON array with one item per line."""
    if not items:
        return "[]"
    inner = pad + "  "
    return "[\n" + ",\n".join(inner + _encode(item) for item in items) + "\n" + pad + "]"


# ---------------------------------------------------------------------- store


@dataclass(frozen=True)
class StoredSnapshot:
    snapshot_id: str
    status: str
    completed_at: str


class SnapshotStore:
    """File I/O of the collector; it decides nothing.

    `append_*` and `compact` are called with the collector's lock held (one
    writer); `sync` may be called by several threads at once, without it.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.pending_root = self.directory / PENDING_DIR
        created = not self.pending_root.exists()
        self.pending_root.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        if created:
            fsync_dir(self.directory)
        self.log_path = self.pending_root / LOG_NAME
        # The log, open for appending from the first append until `close` (or until
        # `compact` replaces the file): one write per line, no open per report.
        self._log_fd: int | None = None
        self._written = 0  # bytes ever appended (tickets)
        self._synced = 0  # every ticket <= this is durable
        self._sync_lock = threading.Lock()
        self._size = self.log_path.stat().st_size if self.log_path.exists() else 0

    def close(self) -> None:
        """Close the log (appending again reopens it)."""
        with self._sync_lock:
            self._close_log()

    def _close_log(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    def _remove_temporaries(self) -> None:
        """Temporary files left by a crash mid-write are garbage: the target is intact."""
        for folder in (self.directory, self.pending_root):
            for temp in folder.glob(f"{TEMP_PREFIX}*"):
                with contextlib.suppress(OSError):
                    temp.unlink()

    def path(self, snapshot_id: str) -> Path:
        return self.directory / f"{check_snapshot_id(snapshot_id)}.json"

    # -------------------------------------------------------- finished ones

    def write_document(self, document: dict[str, Any]) -> Path:
        """Store a finished snapshot (durably, once) and point latest.json at it."""
        return self.write_document_text(document)[0]

    def write_document_text(self, document: dict[str, Any]) -> tuple[Path, str]:
        """`write_document`; also returns the JSON text written (serialised once)."""
        snapshot_id = document["snapshot_id"]
        path = self.path(snapshot_id)
        text = document_text(document)
        atomic_write_bytes(path, text.encode("utf-8"))
        latest = self.directory / LATEST
        link = self.directory / f"{TEMP_PREFIX}latest-{snapshot_id}"
        try:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.link(path, link)
            os.replace(link, latest)
        except OSError:
            atomic_write_bytes(latest, text.encode("utf-8"))
        return path, text

    def read_text(self, snapshot_id: str) -> str | None:
        """The JSON text of a finished snapshot, or of the latest for "latest"; None if absent."""
        if snapshot_id == "latest":
            path = self.directory / LATEST
        else:
            path = self.path(snapshot_id)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def finished(self) -> list[StoredSnapshot]:
        """Every finished snapshot on disk, oldest first (by completion time)."""
        found = []
        for path in self.directory.glob("*.json"):
            if path.name == LATEST or path.name.startswith("."):
                continue
            try:
                check_snapshot_id(path.stem)
                document = json.loads(path.read_text(encoding="utf-8"))
                found.append(
                    StoredSnapshot(
                        str(document["snapshot_id"]),
                        str(document["status"]),
                        str(document.get("completed_at", "")),
                    )
                )
            except (InvalidReport, OSError, ValueError, KeyError, TypeError):
                continue  # not ours, or not a snapshot document: leave it alone
        return sorted(found, key=lambda s: (s.completed_at, s.snapshot_id))

    # ---------------------------------------------------------- pending ones

    def append_begin(self, pending: PendingSnapshot) -> int:
        """Log when and by whom a snapshot was started; the ticket for `sync`."""
        check_snapshot_id(pending.snapshot_id)
        return self._append({"begin": _begin_dict(pending)})

    def append_report(self, report: NodeReport) -> int:
        """Log one accepted report; the ticket for `sync`."""
        check_snapshot_id(report.snapshot.snapshot_id)
        return self._append({"report": report_to_dict(report)})

    def _append(self, record: dict[str, Any]) -> int:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        if self._log_fd is None:
            created = not self.log_path.exists()
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if created:
                fsync_dir(self.pending_root)
        view = memoryview(line)
        while view:  # to the OS now; durable at `sync`
            view = view[os.write(self._log_fd, view) :]
        self._written += len(line)
        self._size += len(line)
        return self._written

    def sync(self, ticket: int) -> None:
        """Return once everything up to `ticket` is on disk (one fsync for a group)."""
        with self._sync_lock:
            if self._synced >= ticket:
                return  # another thread's fsync covered it
            upto = self._written
            if self._log_fd is not None:
                os.fdatasync(self._log_fd)
            self._synced = max(self._synced, upto)

    def save_pending(self, pending: PendingSnapshot) -> None:
        """`append_begin` and `sync`."""
        self.sync(self.append_begin(pending))

    def save_report(self, report: NodeReport) -> None:
        """`append_report` and `sync`."""
        self.sync(self.append_report(report))

    def load_pending(self) -> list[PendingSnapshot]:
        """Every pending snapshot in the log (torn or unreadable lines are skipped)."""
        pending: dict[str, PendingSnapshot] = {}
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as log:
            for raw in log:
                try:
                    record = json.loads(raw)
                    if "begin" in record:
                        begin = record["begin"]
                        sid = check_snapshot_id(str(begin["snapshot_id"]))
                        known = pending.setdefault(
                            sid, PendingSnapshot(sid, float(begin["started"]))
                        )
                        known.initiators |= {str(n) for n in begin.get("initiators", [])}
                    else:
                        report = report_from_dict(record["report"])
                        sid = report.snapshot.snapshot_id
                        if sid in pending:  # a report is logged only after its begin
                            pending[sid].reports[report.snapshot.node_id] = report
                except (InvalidReport, ValueError, KeyError, TypeError, AttributeError):
                    continue
        return list(pending.values())

    def compact(self, pending: list[PendingSnapshot]) -> None:
        """Drop the lines of finished snapshots: truncate when nothing is pending,
        rewrite with only `pending` when the log has grown beyond COMPACT_BYTES."""
        if pending and self._size <= COMPACT_BYTES:
            return
        with self._sync_lock:
            if not pending:
                if self._size:
                    os.truncate(self.log_path, 0)
                self._size = 0
            else:
                lines = []
                for snapshot in pending:
                    lines.append({"begin": _begin_dict(snapshot)})
                    lines += [{"report": report_to_dict(r)} for r in snapshot.reports.values()]
                data = b"".join(
                    (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8")
                    for line in lines
                )
                atomic_write_bytes(self.log_path, data)
                self._close_log()  # its file was replaced: the next append opens the new one
                self._size = len(data)
            self._synced = self._written  # nothing unsynced is still needed


def _begin_dict(pending: PendingSnapshot) -> dict[str, Any]:
    return {
        "snapshot_id": pending.snapshot_id,
        "started": pending.started,
        "initiators": sorted(pending.initiators),
    }
