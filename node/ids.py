"""What a safe snapshot id is. Pure, and tiny on purpose: `cl-initiator`
checks ids before it talks to anyone and should not import the whole core
for it (node/core.py raises `InvalidSnapshotId` from `snapshot_id_problem`)."""

from __future__ import annotations

import re

SNAPSHOT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Ids that name something else in the collector's snapshot directory
# ("latest" means the most recently finished snapshot), compared lower-cased.
RESERVED_SNAPSHOT_IDS = frozenset({"latest"})


def snapshot_id_problem(snapshot_id: str) -> str | None:
    """Why `snapshot_id` is not a safe id (one line), or None if it is."""
    if not SNAPSHOT_ID_PATTERN.fullmatch(snapshot_id):
        return (
            f"invalid snapshot id {snapshot_id!r}: use 1-64 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
    if snapshot_id.lower() in RESERVED_SNAPSHOT_IDS:
        return f"invalid snapshot id {snapshot_id!r}: the name is reserved"
    return None
