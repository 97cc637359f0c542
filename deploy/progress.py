"""One line of progress per long step, e.g. ``[provision] waiting for ...``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

Log = Callable[[str], None]


def reporter(step: str, stream: TextIO | None = None) -> Log:
    """Return a function that prints ``[step] message`` lines, flushed at once.

    Progress goes to stderr by default so stdout stays free for results.
    """

    def log(message: str) -> None:
        print(f"[{step}] {message}", file=stream or sys.stderr, flush=True)

    return log
