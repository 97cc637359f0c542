"""The restore log: `restores/<n>.json` in the snapshot directory, written atomically.

One file per restore, numbered 1, 2, 3, ... in the order they started; each
holds the coordinator's `RestoreRecord` (collector/restore.py) as JSON:
snapshot id, epoch, started, completed, nodes (target state, prepared,
acknowledged), phase, outcome, reason and a short event list. The file is
rewritten, with `atomic_write_json`, at every transition and *before* the
coordinator sends what the new phase says to send: the file on disk is the
decision (see the table at the top of collector/restore.py). This module
decides nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from collector.restore import RestoreRecord
from common.files import TEMP_PREFIX, atomic_write_json, fsync_dir

RESTORES_DIR = "restores"
_NAME = re.compile(r"^([1-9][0-9]{0,8})\.json$")


class RestoreLogError(Exception):
    """A restore file that cannot be read back; the message names it."""


class RestoreLog:
    """The `restores/` directory of one collector."""

    def __init__(self, snapshot_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(snapshot_dir) / RESTORES_DIR
        created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self.directory.parent)
        for temp in self.directory.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                temp.unlink()

    def path(self, number: int) -> Path:
        return self.directory / f"{number}.json"

    def write(self, record: RestoreRecord) -> Path:
        path = self.path(record.number)
        atomic_write_json(path, record.to_dict())
        return path

    def numbers(self) -> list[int]:
        found = []
        for path in self.directory.iterdir():
            match = _NAME.fullmatch(path.name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def read(self, number: int) -> RestoreRecord:
        path = self.path(number)
        try:
            return RestoreRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RestoreLogError(f"{path}: not a restore record ({error})") from error

    def records(self) -> list[RestoreRecord]:
        """Every restore, oldest first."""
        return [self.read(number) for number in self.numbers()]

    def latest(self) -> RestoreRecord | None:
        numbers = self.numbers()
        return self.read(numbers[-1]) if numbers else None

    def last_epoch(self) -> int:
        """The newest epoch any restore has chosen (0: none yet)."""
        return max((record.epoch for record in self.records()), default=0)

    def current_epoch(self) -> int:
        """The epoch the cluster is in: that of the newest restore that committed."""
        committed = [r.epoch for r in self.records() if r.decided == "commit"]
        return max(committed, default=0)
