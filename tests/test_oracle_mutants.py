"""Every planted-bug core of tests/mutants/ is killed by the reference oracle.

`make mutants` prints the full table (every check against every mutant);
this test is the part CI must never lose: for each mutant, the oracle-based
property checks fail (node/core.py passes the very same checks: they are the
tests of tests/test_oracle_properties.py).
"""

from __future__ import annotations

import pytest

import tests.test_oracle_properties as oracle
from node.core import NodeCore
from simulator.engine import CoreFactory
from tests.mutants.__main__ import main, run_check
from tests.mutants.cores import MUTANTS, InitialStateCut

ORACLE_CHECKS = [
    oracle.test_the_oracle_agrees_on_random_runs,
    oracle.test_the_oracle_agrees_on_small_topologies,
    oracle.test_the_oracle_agrees_with_restores_mid_snapshot,
]


def first_kill(core: CoreFactory) -> str | None:
    for check in ORACLE_CHECKS:
        failure = run_check(check, core)
        if failure is not None:
            return failure
    return None


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_oracle_kills_the_mutant(name: str) -> None:
    failure = first_kill(MUTANTS[name].core)
    assert failure is not None, f"{name} ({MUTANTS[name].mistake}) survived the oracle"


def test_the_runner_prints_a_table_and_fails_on_a_survivor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["--first", "--no-baseline", "--only", "initial-state-cut", "all-initiated",
                 "--check", "verify.py", "--check", "oracle-random"]) == 0
    out = capsys.readouterr().out
    assert "mutation score: 2/2 killed" in out
    assert "initial-state-cut" in out and "all-initiated" in out
    # a "mutant" that is really the correct core survives, and the runner says so
    import tests.mutants.__main__ as runner

    monkeypatch.setitem(runner.MUTANTS, "initial-state-cut",
                        runner.MUTANTS["initial-state-cut"].__class__(
                            "initial-state-cut", NodeCore, "no mistake at all"))
    assert main(["--no-baseline", "--only", "initial-state-cut", "--check", "oracle-random"]) == 1
    out = capsys.readouterr().out
    assert "mutation score: 0/1 killed" in out and "SURVIVED" in out
    assert MUTANTS["initial-state-cut"].core is NodeCore  # (monkeypatched, undone after)
    assert InitialStateCut is not NodeCore
