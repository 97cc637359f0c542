"""The README's commands a new user copies first: what they are and where they write."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def blocks_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_make_up_then_make_test() -> None:
    first = commands(blocks_after("## Quick start")[0])
    assert first == ["make up", "make test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("up", "down", "down-v", "compose-v2", "cli"):
        assert re.search(rf"(?m)^{re.escape(target)}:", makefile), target
    # make up runs before any venv exists: standard library only.
    assert re.search(r"(?m)^up:\n\t\$\(PYTHON\) scripts/stack\.py up$", makefile)


def test_by_hand_recipe_keeps_its_state_under_demo_and_listens_on_loopback() -> None:
    recipe = next(b for b in blocks_after("## Without Docker") if "cl-node" in b)
    for line in commands(recipe):
        assert "0.0.0.0" not in line and "--listen-host" not in line  # default: 127.0.0.1
        if "cl-node" in line:
            assert "--data-dir .demo/data/" in line, line
        if "cl-collector" in line:
            assert "--snapshot-dir .demo/" in line, line
    listen_default = (REPO / "common" / "cli.py").read_text()
    assert 'environ.get("CL_LISTEN_HOST") or "127.0.0.1"' in listen_default


def test_stack_script_is_standard_library_only() -> None:
    source = (REPO / "scripts" / "stack.py").read_text()
    imported = set(re.findall(r"(?m)^(?:from|import) ([\w]+)", source))
    import sys

    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
