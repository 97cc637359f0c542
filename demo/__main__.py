"""`python -m demo` (`make demo`): a whole cluster on this machine, a few snapshots, then stop.

Writes a cluster YAML with free 127.0.0.1 ports into the work dir (default
.demo/), starts the collector and N `cl-node` processes (logs in
.demo/logs/), shows the balances moving for a few seconds, takes snapshots,
prints their summaries, and stops every process it started, also on Ctrl-C.
The snapshot JSON files stay in ./snapshots/ (latest.json is the newest).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from common.timeutil import new_snapshot_id
from common.topology import TOPOLOGIES
from demo.local_cluster import ClusterError, LocalCluster
from initiator.__main__ import ProgressPrinter, print_start_error
from initiator.client import InitiatorError, take_snapshot
from initiator.summary import EXIT_OK, format_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo", description="Run a local Chandy-Lamport cluster and snapshot it."
    )
    parser.add_argument("--nodes", type=int, default=5, help="number of nodes (default 5)")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="complete")
    parser.add_argument("--snapshots", type=int, default=3, help="snapshots to take (default 3)")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds of workload before the first snapshot"
    )
    parser.add_argument("--transfer-rate", type=float, default=20.0, help="transfers/s per node")
    parser.add_argument(
        "--link-delay-ms",
        type=float,
        default=100,
        help="added channel latency, so snapshots catch money in flight (100)",
    )
    parser.add_argument("--workdir", default=".demo", help="config, node data and logs (.demo)")
    parser.add_argument("--snapshot-dir", default="snapshots", help="snapshot JSON (snapshots)")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS (to read the protocol in a packet capture); default: mutual TLS with "
        "certificates created in WORKDIR/tls/",
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _balance_line(cluster: LocalCluster) -> str:
    balances = cluster.balances(timeout=1.0)
    shown = "  ".join(f"{node}={'?' if b is None else b}" for node, b in balances.items())
    known = [b for b in balances.values() if b is not None]
    total = cluster.config.expected_total
    return f"balances {shown} | sum {sum(known)} of {total} (the rest is in flight)"


def show_workload(cluster: LocalCluster, seconds: float) -> None:
    tty = sys.stdout.isatty()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        line = _balance_line(cluster)
        if tty:
            print(f"\r\033[K{line}", end="", flush=True)
            time.sleep(0.25)
        else:
            print(line, flush=True)
            time.sleep(1.0)
    if tty:
        print(flush=True)


def run(args: argparse.Namespace) -> int:
    snapshot_dir = Path(args.snapshot_dir).resolve()
    cluster = LocalCluster(
        args.workdir,
        nodes=args.nodes,
        topology=args.topology,
        transfer_rate=args.transfer_rate,
        link_delay_ms=args.link_delay_ms,
        snapshot_dir=snapshot_dir,
        tls=not args.plaintext,
    )
    security = "PLAINTEXT, nothing authenticated" if args.plaintext else "mutual TLS"
    print(
        f"starting a collector and {args.nodes} nodes ({args.topology} topology) on 127.0.0.1, "
        f"{security}; config, certificates and logs in {cluster.workdir}",
        flush=True,
    )
    worst = EXIT_OK
    try:
        cluster.start()
        print("all processes healthy; the nodes are sending money to each other", flush=True)
        print(f"dashboard (while the demo runs): {cluster.http_url}/", flush=True)
        show_workload(cluster, args.duration)
        for index in range(args.snapshots):
            initiator = cluster.node_ids[index % len(cluster.node_ids)]
            snapshot_id = new_snapshot_id()
            print(f"\nsnapshot {index + 1}/{args.snapshots}: {snapshot_id} from {initiator}")
            try:
                outcome = take_snapshot(
                    cluster.config,
                    cluster.collector_address,
                    [initiator],
                    snapshot_id,
                    timeout=cluster.config.snapshot_timeout + 10,
                    on_progress=ProgressPrinter(sys.stdout),
                    on_start_error=print_start_error,
                    tls=cluster.operator_tls,
                )
            except InitiatorError as error:
                print(f"snapshot failed: {error}", flush=True)
                worst = max(worst, error.exit_code)
                continue
            if outcome.document is not None:
                print(format_summary(outcome.document), flush=True)
            worst = max(worst, outcome.exit_code)
            if index + 1 < args.snapshots:
                show_workload(cluster, 1.0)
        print(
            f"\nsnapshot JSON files are in {snapshot_dir}/ "
            f"(the newest is {snapshot_dir / 'latest.json'})",
            flush=True,
        )
    except ClusterError as error:
        print(f"demo: {error}", file=sys.stderr)
        worst = 1
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        worst = 130
    finally:
        # A second Ctrl-C must not leave processes behind: ignore it while stopping.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the cluster...", flush=True)
        cluster.stop()
        print("stopped", flush=True)
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 2:
        print("demo: --nodes must be at least 2", file=sys.stderr)
        return 2
    if args.snapshots < 0 or args.duration < 0:
        print("demo: --snapshots and --duration must be >= 0", file=sys.stderr)
        return 2
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
