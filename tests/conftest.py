"""Shared pytest hooks: the property suite reports how many runs it simulated."""

from __future__ import annotations

import os
import time

# Before anything imports grpc: the tests start node, collector and CLI
# processes while holding gRPC channels; see demo/__init__.py (grpc/grpc#43055).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

_STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import sys

    props = sys.modules.get("tests.test_simulator_properties")
    if props is None:
        return
    from tests.oracle.compare import RUNS_CHECKED
    from tests.oracle.profiles import PROFILE

    runs = props.RUNS[0]
    elapsed = time.monotonic() - _STARTED
    terminalreporter.write_line(
        f"property suite (profile {PROFILE}): {runs} simulated runs, {RUNS_CHECKED[0]} "
        f"compared with the oracle, in {elapsed:.0f}s ({runs / max(elapsed, 1e-9):.1f} runs/s)"
    )
