"""common.forked: work in a child process, its result or exception back in the parent,
what it imported left behind. Run in a fresh interpreter: this one has grpc and
threads loaded, where `in_child_process` runs the work itself."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from common.forked import in_child_process

def load():
    import yaml
    return {"loaded": "yaml" in sys.modules}

def refuse():
    raise ValueError("no such node")

wait = in_child_process(load)
print(wait(), "yaml" in sys.modules)
try:
    in_child_process(refuse)()
except ValueError as error:
    print("raised", error)
import grpc
print(in_child_process(load)(), "yaml" in sys.modules)
"""


def test_result_and_exception_come_back_and_the_imports_stay_in_the_child() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "{'loaded': True} False",  # imported in the child, not here
        "raised no such node",
        "{'loaded': True} True",  # with grpc loaded: no fork, the work runs here
    ]
