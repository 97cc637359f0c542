"""Work done in a forked child process, for what it imports to leave with it.

    wait = in_child_process(lambda: load_cluster(path))   # the child starts now
    ...                                                    # the parent goes on
    config = wait()                                        # its result, or its exception

Start-up checks need modules a process uses once: yaml and pydantic-core to
validate the cluster file, cryptography to check certificates. Done in a
child, they cost the long-lived node none of its memory (node/__main__.py),
and they run beside the parent's own imports of grpc (both CLIs).
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_child_process(work: Callable[[], T]) -> Callable[[], T]:
    """Start `work()` in a forked child process now; the function returned
    waits for what it returned (or raises what it raised). The child's
    memory, and whatever `work` imported, is gone once it has answered.

    Only in a process with one thread and grpc not loaded: forking while
    other threads (gRPC's own among them) run is unsafe. A caller that has
    them already (a test calling a CLI's `main`) gains nothing from a child
    either, and gets `work` itself to call.
    """
    if "grpc" in sys.modules or threading.active_count() > 1:
        return work
    sys.stdout.flush()  # or the child's copies of the buffers would repeat it
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it ends here
        try:
            os.close(read_end)
            try:
                outcome: tuple[bool, object] = (True, work())
            except BaseException as error:  # every outcome goes to the parent, Ctrl-C too
                outcome = (False, error)
            try:
                answer = pickle.dumps(outcome)
            except Exception:  # an exception that cannot be pickled: its traceback
                answer = pickle.dumps((False, RuntimeError(traceback.format_exc())))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(answer)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)
    os.close(write_end)

    def wait_answer() -> T:
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        if not answer:
            raise RuntimeError(f"the child process ended without an answer (status {status})")
        succeeded, value = pickle.loads(answer)
        if not succeeded:
            raise value
        return value  # type: ignore[no-any-return]  # pickle.loads: Any

    return wait_answer
