"""`python -m demo` end to end: snapshots written, every child process gone, also on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "demo", "--workdir", str(tmp_path / "work"),
         "--snapshot-dir", str(tmp_path / "snaps"), *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_demo_takes_snapshots_and_stops_everything(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--nodes", "4", "--topology", "ring", "--duration", "1.5",
                 "--snapshots", "2")  # fmt: skip
    out, _ = demo.communicate(timeout=90)
    assert demo.returncode == 0, out
    assert out.count("verification: PASSED") == 2
    assert "sum " in out and "stopped" in out
    files = sorted(p.name for p in (tmp_path / "snaps").glob("*.json"))
    assert len(files) == 3 and "latest.json" in files
    latest = json.loads((tmp_path / "snaps" / "latest.json").read_text())
    assert latest["status"] == "complete" and len(latest["nodes"]) == 4
    assert _processes_mentioning(str(tmp_path / "work")) == []


def test_demo_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--duration", "60")
    deadline = time.monotonic() + 30
    while len(_processes_mentioning(str(tmp_path / "work"))) < 6:
        assert time.monotonic() < deadline and demo.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)
    demo.send_signal(signal.SIGINT)
    out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, out
    assert "interrupted" in out and out.rstrip().endswith("stopped")
    assert _processes_mentioning(str(tmp_path / "work")) == []
