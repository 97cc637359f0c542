"""cl-simulate: run a scenario in the deterministic simulator, write and check its snapshots.

    cl-simulate SCENARIO.yaml [--out DIR] [--seed N]

Exit status: 0 every snapshot complete and verified, 1 some snapshot failed
verification (or did not complete), 2 the scenario is invalid or cannot run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.files import atomic_write_json
from simulator.scenario import ScenarioError, load_scenario

DEFAULT_OUT = "snapshots/sim"


def summary_line(document: dict[str, Any], path: Path | None = None) -> str:
    """One line per snapshot: id, status, verification, totals, where it was written."""
    verification = document["verification"]
    verdict = "verified ok" if verification["ok"] else "verification FAILED"
    parts = [document["snapshot_id"], document["status"], verdict]
    conservation = verification.get("conservation")
    if conservation is not None:
        parts.append(
            f"total {conservation['recorded_total']}/{document['expected_total']} "
            f"(balances {conservation['recorded_balances']} + in flight "
            f"{conservation['in_flight']})"
        )
        bad = [f"{c['from']}->{c['to']}" for c in verification["channels"] if not c["ok"]]
        if bad:
            parts.append(f"bad channels {', '.join(bad)}")
    else:
        parts.append(verification.get("reason", ""))
    parts.append(f"initiators {','.join(document['initiators'])}")
    if path is not None:
        parts.append(f"-> {path}")
    return "  ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cl-simulate",
        description="Run a Chandy-Lamport scenario in the deterministic simulator "
        "and write each global snapshot as JSON.",
    )
    parser.add_argument("scenario", help="scenario YAML file (see simulator/scenarios/)")
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"directory for snapshot files (default {DEFAULT_OUT})"
    )
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    args = parser.parse_args(argv)

    try:
        scenario = load_scenario(args.scenario)
        sim = scenario.run(seed=args.seed)
    except ScenarioError as error:
        print(f"cl-simulate: {error}", file=sys.stderr)
        return 2

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"cl-simulate: cannot create {out}: {error.strerror}", file=sys.stderr)
        return 2
    documents = sim.completed_snapshots + [sim.document(sid) for sid in sim.pending_snapshots]
    seed = scenario.seed if args.seed is None else args.seed
    print(
        f"{scenario.source}: seed {seed}, {len(sim.node_ids)} nodes, "
        f"{len(sim.channels)} channels, quiet at tick {sim.now}, "
        f"total money {sim.total_money()}/{sim.expected_total}"
    )
    failed = 0
    for document in documents:
        path = out / f"{document['snapshot_id']}.json"
        try:
            atomic_write_json(path, document)
        except OSError as error:
            print(f"cl-simulate: cannot write {path}: {error.strerror}", file=sys.stderr)
            return 2
        print(summary_line(document, path))
        if document["status"] != "complete" or not document["verification"]["ok"]:
            failed += 1
    if not documents:
        print("no snapshot was taken (add a `snapshot` event)")
    if failed:
        print(f"cl-simulate: {failed} of {len(documents)} snapshots failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
