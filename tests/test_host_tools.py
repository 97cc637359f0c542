"""`make cli`: the host-side tools need only the runtime dependencies.

The generator, the simulator, cl-initiator and cl-certs are what a user runs
on the host; `make cli` installs them into .venv-cli with `pip install -e .`
(no extra), 76 MB instead of the dev toolchain's ~290 MB. This checks that
importing and running them loads no distribution outside pyproject's
`dependencies` and what those depend on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_closure() -> set[str]:
    """pyproject's runtime dependencies and, recursively, theirs (no extras)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pending = [_name(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            pending += [_name(r) for r in requires(name) or [] if "extra ==" not in r]
        except PackageNotFoundError:
            pass
    return seen


PROBE = """
import json, sys
from importlib.metadata import packages_distributions
from pathlib import Path
import common.generate, simulator.__main__, initiator.__main__, certs.__main__
simulator.__main__.main([sys.argv[1], "--out", sys.argv[2]])
common.generate.main(["--nodes", "3", "--cluster-out", sys.argv[2] + "/c.yaml",
                      "--compose-out", sys.argv[2] + "/d.yml", "--force"])
owners = packages_distributions()
found = set()
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None) or ""
    if "site-packages" in path:
        found.update(owners.get(name.partition(".")[0], []))
print(json.dumps(sorted(found)))
"""


def test_generator_simulator_initiator_use_only_runtime_dependencies(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "simulator/scenarios/ring-3.yaml"), str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = {_name(d) for d in json.loads(result.stdout.strip().splitlines()[-1])}
    # grpc itself tries `import grpc_tools` (grpc._runtime_protos) and uses it only if
    # present; setuptools' .pth loads _distutils_hack into every venv that has it.
    allowed = runtime_closure() | {"chandy-lamport", "grpcio-tools", "setuptools"}
    assert loaded - allowed == set(), f"dev-only packages loaded: {loaded - allowed}"
    assert (tmp_path / "c.yaml").exists() and list(tmp_path.glob("*.json"))
