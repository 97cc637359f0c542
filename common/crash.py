"""`CL_CRASH_AT`: kill this process at a named step, for the restore crash tests.

    CL_CRASH_AT=n3:after-prepare            node n3, once it stored its vote
    CL_CRASH_AT=collector:after-commit-point
    CL_CRASH_AT=after-prepare               every process that reaches the step

Several entries are separated by commas. The process sends itself SIGKILL:
nothing is flushed, nothing says goodbye, exactly like `kill -9`. Unset (as
in every real deployment) this does nothing.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "CL_CRASH_AT"

NODE_POINTS = ("before-prepare", "after-prepare", "before-commit", "after-commit", "after-abort")
COLLECTOR_POINTS = (
    "after-preparing",  # restores/<n>.json says preparing; no Prepare sent yet
    "after-votes",  # some node voted yes, the decision is not written
    "after-commit-point",  # committing written; no Commit sent yet
    "after-first-ack",  # one node committed, the others not yet
)


def crash_point(point: str, who: str, environ: dict[str, str] | None = None) -> None:
    """SIGKILL this process if CL_CRASH_AT names `point` for `who` (or for anyone)."""
    wanted = (environ if environ is not None else os.environ).get(ENV, "")
    for item in filter(None, (part.strip() for part in wanted.split(","))):
        target, _, name = item.rpartition(":")
        if name == point and target in ("", who):
            print(f"{who}: {ENV}={item}: killing myself", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
