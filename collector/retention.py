"""Retention of finished snapshot files: keep the newest K, delete the rest.

The decision is `collector.admission.to_prune` (pure); this is the I/O: the
files are unlinked (then the directory fsynced) and the running count of
pruned snapshots is kept in `.retention.json`, so `cl-initiator --list` can
say how many older snapshots are gone. `latest.json` is never pruned.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import structlog

from collector.admission import to_prune
from common.files import atomic_write_json, fsync_dir

log = structlog.get_logger("collector.retention")

STATE_FILE = ".retention.json"


class Retention:
    """`stored` are the ids of the snapshot files already on disk, oldest first."""

    def __init__(self, directory: str | os.PathLike[str], keep: int, stored: Iterable[str]) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.pruned = self._load()
        self._stored = list(dict.fromkeys(stored))

    def _load(self) -> int:
        try:
            value = json.loads((self.directory / STATE_FILE).read_text(encoding="utf-8"))
            return max(0, int(value.get("pruned", 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            return 0

    def written(self, snapshot_id: str) -> list[str]:
        """`snapshot_id`'s file was just written: delete the oldest files beyond `keep`.

        Returns the ids whose files were deleted.
        """
        if snapshot_id not in self._stored:
            self._stored.append(snapshot_id)
        doomed = to_prune(self._stored, self.keep)
        if not doomed:
            return []
        del self._stored[: len(doomed)]
        for snapshot_id in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{snapshot_id}.json").unlink()
        fsync_dir(self.directory)
        self.pruned += len(doomed)
        atomic_write_json(self.directory / STATE_FILE, {"pruned": self.pruned})
        log.info("old snapshots pruned", count=len(doomed), keep=self.keep, total=self.pruned)
        return doomed
