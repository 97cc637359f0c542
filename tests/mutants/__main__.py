"""`make mutants`: run the suite's checks against every planted-bug core.

    python -m tests.mutants [--first] [--no-baseline] [--only NAME ...] [--check LABEL ...]

For each mutant of tests/mutants/cores.py, every check below runs with that
core as the core under test (tests/oracle/core_under_test.py), under the
Hypothesis profile `mutants` (derandomized, no shrinking). A check kills a
mutant when it fails. Prints a table mutant -> killed by which checks, and
the score killed/total; exits 1 if any mutant survives every check, 0 if all
are killed, 2 if node/core.py itself fails a check (then a kill means nothing;
checked first unless --no-baseline). `--first` stops at a mutant's first killer (faster; the table
then shows that one only).

The checks are the suite's own test functions, called as they are:

  verify.py      the document's own verification (collector/verify.py) of
                 every snapshot, on the plain-random runs
  cut-property   test_simulator_properties: the Hypothesis property (ledger,
                 consistent cut, and verify.py's verdict)
  cut-random     test_simulator_properties: the same checks on 60 seeded runs
  oracle-*       test_oracle_properties: every snapshot equals the reference
                 oracle's, on small topologies, large ones (up to 30 nodes),
                 complete graphs of 12-30, runs with many restores, the seeded
                 runs, and the shipped scenarios
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("HYPOTHESIS_PROFILE", "mutants")

from simulator.engine import CoreFactory  # noqa: E402
from tests.mutants.cores import MUTANTS  # noqa: E402
from tests.oracle import core_under_test  # noqa: E402


def _verify_py() -> None:
    from tests.test_simulator_properties import random_spec, run

    for seed in range(60):
        outcome = run(random_spec(random.Random(seed)))
        for doc in outcome.documents:
            verification = doc["verification"]
            assert verification["ok"] is True, (
                f"random_spec(random.Random({seed})): snapshot {doc['snapshot_id']}: "
                f"verification failed: {_reason(verification)}"
            )
        assert not outcome.simulation.pending_snapshots


def _reason(verification: dict[str, Any]) -> str:
    parts = []
    conservation = verification.get("conservation", {})
    if not conservation.get("ok", True):
        parts.append(f"recorded total {conservation.get('recorded_total')} != "
                     f"{conservation.get('expected_total')}")
    initiators = verification.get("initiators", {})
    if not initiators.get("ok", True):
        parts.append(str(initiators.get("problem")))
    parts += [f"{c['from']}->{c['to']}: {c['problem']}"
              for c in verification.get("channels", []) if not c["ok"]]
    return "; ".join(parts) or "not ok"


def _checks() -> list[tuple[str, Callable[[], None]]]:
    import tests.test_oracle_properties as oracle
    import tests.test_simulator_properties as props

    def scenarios() -> None:
        for name in ("ring-3.yaml", "concurrent.yaml", "star-5.yaml"):
            oracle.test_the_oracle_agrees_on_the_shipped_scenarios(name)

    return [
        ("verify.py", _verify_py),
        ("cut-property", props.test_every_snapshot_is_a_consistent_cut),
        ("cut-random", props.test_random_runs_are_consistent_cuts),
        ("oracle-random", oracle.test_the_oracle_agrees_on_random_runs),
        ("oracle-small", oracle.test_the_oracle_agrees_on_small_topologies),
        ("oracle-restores", oracle.test_the_oracle_agrees_with_restores_mid_snapshot),
        ("oracle-large", oracle.test_the_oracle_agrees_on_large_topologies),
        ("oracle-complete", oracle.test_the_oracle_agrees_on_complete_graphs),
        ("oracle-scenarios", scenarios),
    ]


def run_check(check: Callable[[], None], core: CoreFactory) -> str | None:
    """None if `check` passes with `core`, else the first line of why it failed."""
    with core_under_test.using(core):
        try:
            check()
        except BaseException as error:  # noqa: BLE001 - any failure kills the mutant
            if isinstance(error, KeyboardInterrupt):
                raise
            lines = [line.strip() for line in str(error).strip().splitlines()]
            head = lines[:2] if lines and lines[0].endswith(":") else lines[:1]
            text = " ".join(head)
            return f"{type(error).__name__}: {text}"[:200]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", action="store_true", help="stop at each mutant's first killer")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(MUTANTS),
                        help="run these mutants only")
    parser.add_argument("--check", action="append", metavar="LABEL",
                        help="run only this check (repeatable; labels as in the table)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="do not first check that node/core.py passes every check")
    args = parser.parse_args(argv)
    checks = _checks()
    if args.check:
        unknown = sorted(set(args.check) - {label for label, _ in checks})
        if unknown:
            parser.error(f"unknown check {', '.join(unknown)} "
                         f"(known: {', '.join(label for label, _ in checks)})")
        checks = [(label, check) for label, check in checks if label in args.check]
    names = args.only or list(MUTANTS)

    # the real core must pass every check, or a "kill" means nothing
    started = time.monotonic()
    from node.core import NodeCore

    for label, check in [] if args.no_baseline else checks:
        failure = run_check(check, NodeCore)
        if failure is not None:
            print(f"the real core fails {label}: {failure}", file=sys.stderr)
            return 2
    if not args.no_baseline:
        print(f"node/core.py passes all {len(checks)} checks "
              f"({time.monotonic() - started:.0f}s)")

    rows: list[tuple[str, list[str], str]] = []
    for name in names:
        mutant = MUTANTS[name]
        began = time.monotonic()
        killers: list[str] = []
        first_reason = ""
        for label, check in checks:
            failure = run_check(check, mutant.core)
            if failure is not None:
                killers.append(label)
                first_reason = first_reason or failure
                if args.first:
                    break
        rows.append((name, killers, first_reason))
        verdict = f"killed by {', '.join(killers)}" if killers else "SURVIVED"
        print(f"  {name}: {verdict} ({time.monotonic() - began:.0f}s)", flush=True)

    labels = [label for label, _ in checks]
    width = max(len(name) for name in names)
    print("\nX = the check fails with this core (kills it), . = passes"
          + (", blank = not run (--first)" if args.first else ""))
    print(f"{'mutant':<{width}}  " + "  ".join(labels) + "  killed")
    for name, killers, _ in rows:
        ran = labels[: labels.index(killers[-1]) + 1] if args.first and killers else labels
        marks = [
            ("X" if label in killers else "." if label in ran else " ").center(len(label))
            for label in labels
        ]
        print(f"{name:<{width}}  " + "  ".join(marks) + f"  {'yes' if killers else 'NO'}")
    print("\nfirst failure per mutant:")
    for name, killers, reason in rows:
        print(f"  {name} ({MUTANTS[name].mistake}):")
        print(f"    {killers[0] + ': ' + reason if killers else 'SURVIVED every check'}")
    killed = sum(1 for _, killers, _ in rows if killers)
    print(f"\nmutation score: {killed}/{len(rows)} killed "
          f"({time.monotonic() - started:.0f}s, {len(checks)} checks per mutant"
          f"{', first killer only' if args.first else ''})")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
