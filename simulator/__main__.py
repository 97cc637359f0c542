"""cl-simulate: run a scenario in the deterministic simulator, write and check its snapshots.

    cl-simulate SCENARIO.yaml [--out DIR] [--seed N] [--trace] [--svg DIR]

Snapshots go to snapshots/sim/<scenario name>/ unless --out says otherwise;
--trace prints the run step by step, --svg DIR writes each snapshot's
space-time diagram (ticks as time) as DIR/<snapshot id>.svg.

Exit status: 0 every snapshot complete and verified, 1 some snapshot failed
verification (or did not complete), 2 the scenario is invalid or cannot run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.files import atomic_write_bytes, atomic_write_json
from simulator.engine import step_to_dict
from simulator.scenario import ScenarioError, load_scenario
from simulator.trace import trace_lines

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


def write_svg(path: Path, steps: list[dict[str, Any]], document: dict[str, Any]) -> None:
    from diagram import space_time_svg
    from diagram.from_schedule import from_schedule

    atomic_write_bytes(path, space_time_svg(from_schedule(steps, document)).encode())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cl-simulate",
        description="Run a Chandy-Lamport scenario in the deterministic simulator "
        "and write each global snapshot as JSON.",
    )
    parser.add_argument("scenario", help="scenario YAML file (see simulator/scenarios/)")
    parser.add_argument(
        "--out",
        help=f"directory for snapshot files (default {DEFAULT_OUT}/<scenario file name>)",
    )
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument(
        "--trace", action="store_true", help="print every step of the run, tick by tick"
    )
    parser.add_argument(
        "--svg", metavar="DIR", help="write each snapshot's space-time diagram as DIR/<id>.svg"
    )
    args = parser.parse_args(argv)

    try:
        scenario = load_scenario(args.scenario)
        sim = scenario.run(seed=args.seed)
    except ScenarioError as error:
        print(f"cl-simulate: {error}", file=sys.stderr)
        return 2

    out = Path(args.out) if args.out else Path(DEFAULT_OUT) / Path(args.scenario).stem
    svg_dir = Path(args.svg) if args.svg else None
    for folder in (out, svg_dir):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"cl-simulate: cannot create {folder}: {error.strerror}", file=sys.stderr)
            return 2
    documents = sim.completed_snapshots + [sim.document(sid) for sid in sim.pending_snapshots]
    steps = [step_to_dict(step) for step in sim.schedule]
    if args.trace:
        for line in trace_lines(steps, documents):
            print(line)
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
        if svg_dir is not None:
            svg_path = svg_dir / f"{document['snapshot_id']}.svg"
            try:
                write_svg(svg_path, steps, document)
            except OSError as error:
                print(f"cl-simulate: cannot write {svg_path}: {error.strerror}", file=sys.stderr)
                return 2
            print(f"  diagram -> {svg_path}")
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
