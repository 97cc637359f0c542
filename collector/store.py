"""The snapshot directory: finished snapshot files and pending reports, written atomically.

Layout of the directory:

    <snapshot_id>.json              one finished snapshot (complete or aborted)
    latest.json                     a copy of the most recently finished snapshot
    .pending/<snapshot_id>/_begin.json      when the collector first heard of it, initiators
    .pending/<snapshot_id>/<node_id>.json   one node's latest report, as received (a
                                            final report replaces a progress one)

Every file is written with `atomic_write_json`: a temporary file in the same
directory, fsync, `os.replace`, fsync of the directory. A reader therefore
sees the old file or the new one, never a torn one, even after a power cut.
A finished snapshot's file is written before its pending reports are
removed, so a crash in between loses nothing (the restart sees the file and
drops the leftovers).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.assembly import InvalidReport, PendingSnapshot, check_snapshot_id
from collector.document import NodeReport
from common.files import TEMP_PREFIX, atomic_write_json, fsync_dir
from node.core import LocalSnapshot, RecordedMessage

LATEST = "latest.json"
PENDING_DIR = ".pending"
BEGIN_FILE = "_begin.json"


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


# ---------------------------------------------------------------------- store


@dataclass(frozen=True)
class StoredSnapshot:
    snapshot_id: str
    status: str
    completed_at: str


class SnapshotStore:
    """File I/O of the collector; it decides nothing."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.pending_root = self.directory / PENDING_DIR
        self.pending_root.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        """Temporary files left by a crash mid-write are garbage: the target is intact."""
        for folder in [self.directory, self.pending_root, *self.pending_root.iterdir()]:
            if folder.is_dir():
                for temp in folder.glob(f"{TEMP_PREFIX}*"):
                    with contextlib.suppress(OSError):
                        temp.unlink()

    def path(self, snapshot_id: str) -> Path:
        return self.directory / f"{check_snapshot_id(snapshot_id)}.json"

    # -------------------------------------------------------- finished ones

    def write_document(self, document: dict[str, Any]) -> Path:
        """Store a finished snapshot, update latest.json, then drop its pending reports."""
        snapshot_id = document["snapshot_id"]
        path = self.path(snapshot_id)
        atomic_write_json(path, document)
        atomic_write_json(self.directory / LATEST, document)
        self.drop_pending(snapshot_id)
        return path

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

    def _pending_dir(self, snapshot_id: str) -> Path:
        return self.pending_root / check_snapshot_id(snapshot_id)

    def save_pending(self, pending: PendingSnapshot) -> None:
        """Persist when and by whom the snapshot was started."""
        folder = self._pending_dir(pending.snapshot_id)
        created = not folder.exists()
        folder.mkdir(exist_ok=True)
        if created:
            fsync_dir(self.pending_root)
        atomic_write_json(
            folder / BEGIN_FILE,
            {
                "snapshot_id": pending.snapshot_id,
                "started": pending.started,
                "initiators": sorted(pending.initiators),
            },
        )

    def save_report(self, pending: PendingSnapshot, report: NodeReport) -> None:
        """Persist one node's report (and the snapshot's start, the first time)
        before it is acknowledged. Initiators named by reports are not written
        to the begin file: `Assembly.restore` derives them from the reports."""
        folder = self._pending_dir(pending.snapshot_id)
        if not (folder / BEGIN_FILE).exists():
            self.save_pending(pending)
        atomic_write_json(folder / f"{report.snapshot.node_id}.json", report_to_dict(report))

    def load_pending(self) -> list[PendingSnapshot]:
        """Every pending snapshot saved before a restart (unreadable files are skipped)."""
        loaded = []
        for folder in sorted(self.pending_root.iterdir()):
            begin = folder / BEGIN_FILE
            try:
                check_snapshot_id(folder.name)
                meta = json.loads(begin.read_text(encoding="utf-8"))
            except (InvalidReport, OSError, ValueError):
                continue
            pending = PendingSnapshot(
                folder.name, float(meta["started"]), set(meta.get("initiators", []))
            )
            for path in sorted(folder.glob("*.json")):
                if path.name == BEGIN_FILE or path.name.startswith("."):
                    continue
                try:
                    report = report_from_dict(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if report.snapshot.snapshot_id == folder.name:
                    pending.reports[report.snapshot.node_id] = report
            loaded.append(pending)
        return loaded

    def drop_pending(self, snapshot_id: str) -> None:
        folder = self._pending_dir(snapshot_id)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            fsync_dir(self.pending_root)
