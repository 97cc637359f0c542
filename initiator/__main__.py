"""`cl-initiator`: trigger global snapshot(s) and report how they ended.

    cl-initiator [--node ID]... [--snapshot-id ID] [--count N --interval S]
                 [--no-wait] [--json] [--timeout S] [--cluster FILE] [--collector HOST:PORT]
    cl-initiator --show ID|latest [--json]     a stored snapshot, through the collector
    cl-initiator --list [--limit N] [--status S]   the history as a table (newest N, default 20)
    cl-initiator ... --svg FILE                also write the space-time diagram
    cl-initiator --status                      live balances, backlog, workload, epoch
    cl-initiator --pause-workload | --resume-workload
    cl-initiator --restore ID|latest           roll the cluster back to a complete snapshot
    cl-initiator --restores                    the restores done so far

Mutual TLS with the operator certificate in tls/operator-admin/ next to the
cluster file (`cl-certs ensure` makes it; --operator NAME, --tls-dir DIR or
CL_TLS_DIR for another one); --plaintext only against a plaintext cluster.

Before a snapshot the initiator asks every node for its status: a chosen node
that does not answer stops the snapshot before it begins (exit 5, naming the
node); another node that does not answer is warned about. After an aborted
snapshot the summary says what the reachable nodes hold queued toward the
unreachable ones.

Exit status (also for --show): 0 every snapshot complete and verified; 1 collector unreachable or
gave up waiting; 2 bad option or configuration, or a --snapshot-id that was used
before; 3 a snapshot was aborted; 4 a snapshot failed verification; 5 a chosen
node could not be reached, the snapshot was not started; 6 --show: no such
snapshot. With --count, the highest status of all the snapshots.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from certs.identity import DEFAULT_OPERATOR, IdentityError, operator
from common.cli import add_cluster_option
from common.config import ClusterConfig, ConfigError, load_cluster
from common.forked import in_child_process
from common.timeutil import new_snapshot_id
from common.tls import TlsError, TlsFiles, add_tls_options, tls_from_args
from initiator import options
from initiator.summary import (
    EXIT_NO_INITIATOR,
    EXIT_USAGE,
    exit_code,
    format_progress,
    format_queued,
    format_summary,
)

# Imported where they are used: the gRPC side (initiator.client and
# operations) once the options are parsed, so that `--help` and a bad option
# load no gRPC; the history table and the durations line (collector/web/
# index.py) by the commands that print them.
if TYPE_CHECKING:
    from collector.web.index import Summary
    from initiator.client import InitiatorError, ProbeInFlight, StartResult

# A progress line is repeated at least this often while nothing changes.
PROGRESS_REFRESH_SECONDS = 5.0

# At exit the interpreter's last garbage collection walks every object that
# grpc, protobuf and the rest made at import, ~15 ms of a command that takes
# ~100: nothing left then needs it (output is flushed, the channels are
# closed by initiator.client's own exit handler), so those objects are frozen
# out of it. Registered after that handler, hence run before it.
atexit.register(gc.freeze)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="cl-initiator",
        description="Trigger Chandy-Lamport snapshot(s) and print how they ended.",
    )
    parser.add_argument(
        "--node",
        action="append",
        dest="nodes",
        metavar="ID",
        help="node that initiates (repeat for several initiators; default the first node)",
    )
    parser.add_argument("--snapshot-id", help="id to use (default snap-<UTC time>-<6 hex>)")
    parser.add_argument("--count", type=int, default=1, help="number of snapshots in sequence")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between snapshots with --count"
    )
    parser.add_argument("--no-wait", action="store_true", help="trigger and print the id only")
    parser.add_argument(
        "--json", action="store_true", help="print the snapshot JSON document instead of a summary"
    )
    reading = parser.add_mutually_exclusive_group()
    reading.add_argument(
        "--show",
        metavar="ID",
        help="print a finished snapshot ('latest' for the newest) instead of taking one",
    )
    reading.add_argument(
        "--list",
        action="store_true",
        help="the history: the newest snapshots the collector knows, as a table",
    )
    parser.add_argument(
        "--limit", type=int, default=20, help="with --list: how many (default 20, 0 for all)"
    )
    parser.add_argument(
        "--status",
        nargs="?",
        const=options.LIVE_STATUS,
        choices=("complete", "aborted", "pending"),
        help="alone: the live cluster (balances, backlog, workload, epoch); "
        "with --list: only snapshots with this status",
    )
    options.add_options(parser)
    parser.add_argument(
        "--svg",
        metavar="FILE",
        help="also write the snapshot's space-time diagram to FILE "
        "(with --count N: FILE's name gets -<id> before .svg)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for each snapshot (default the cluster's snapshot_timeout + 30)",
    )
    add_cluster_option(parser, os.environ)
    parser.add_argument(
        "--collector",
        default=env("CL_COLLECTOR_ADDRESS"),
        help="collector host:port (env CL_COLLECTOR_ADDRESS, default from the cluster file)",
    )
    parser.add_argument(
        "--operator",
        default=env("CL_OPERATOR", DEFAULT_OPERATOR),
        help="whose operator certificate to use: tls/operator-NAME/ "
        f"(env CL_OPERATOR; default {DEFAULT_OPERATOR}; --tls-dir overrides the directory)",
    )
    add_tls_options(parser, os.environ)
    return parser


class ProgressPrinter:
    """Writes a progress line when it changes, and again on long waits."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._last_line = ""
        self._last_time = 0.0

    def __call__(
        self,
        snapshot_id: str,
        reported: Sequence[str],
        missing: Sequence[str],
        elapsed: float,
        recorded: Sequence[str] = (),
    ) -> None:
        state = format_progress(snapshot_id, reported, missing, 0.0, recorded)
        now = time.monotonic()
        if state == self._last_line and now - self._last_time < PROGRESS_REFRESH_SECONDS:
            return
        self._last_line, self._last_time = state, now
        print(
            format_progress(snapshot_id, reported, missing, elapsed, recorded),
            file=self.stream or sys.stderr,
            flush=True,
        )


def print_start_error(failure: StartResult) -> None:
    print(
        f"cl-initiator: error: cannot start the snapshot at {failure.node_id} "
        f"({failure.address}): {failure.error}",
        file=sys.stderr,
    )


def read_snapshots(
    collector: str,
    show: str | None,
    as_json: bool,
    limit: int = 20,
    status: str | None = None,
    svg: str | None = None,
    tls: TlsFiles | None = None,
) -> int:
    """--list and --show: read what the collector stored, take nothing."""
    from initiator.client import get_snapshot

    if show is None:
        print(history_table(collector, limit, status, tls), flush=True)
        return 0
    document = get_snapshot(collector, show, tls=tls)
    print(json.dumps(document, indent=2) if as_json else format_summary(document), flush=True)
    if svg is not None:
        write_svg(svg, document)
    return exit_code(document)


def history_table(
    collector: str, limit: int, status: str | None, tls: TlsFiles | None = None
) -> str:
    """--list: the newest `limit` snapshots (0: all), oldest of them first; then how
    many older ones the collector's retention deleted, if any."""
    from collector.web.index import summarize
    from initiator.client import get_snapshot, list_snapshots_and_pruned
    from initiator.history import format_table, pending_summary

    listed, pruned = list_snapshots_and_pruned(collector, tls=tls)
    known = [(sid, st) for sid, st in listed if status in (None, st)]
    chosen = known[-limit:] if limit else known
    rows = [
        pending_summary(sid)
        if st == "pending"
        else summarize(get_snapshot(collector, sid, tls=tls))
        for sid, st in chosen
    ]
    table = format_table(rows, len(known))
    if pruned:
        table += (
            f"\n({pruned} older snapshot{'s' if pruned != 1 else ''} pruned by the "
            "collector's retention, --keep-snapshots)"
        )
    return table


def svg_path(template: str, snapshot_id: str, several: bool) -> Path:
    path = Path(template)
    return path.with_name(f"{path.stem}-{snapshot_id}{path.suffix or '.svg'}") if several else path


def write_svg(path: str | Path, document: dict[str, object]) -> None:
    from common.files import atomic_write_bytes
    from diagram import DiagramError, document_svg
    from initiator.client import InitiatorError

    try:
        text = document_svg(document)
    except DiagramError as error:
        raise InitiatorError(f"cannot draw {document.get('snapshot_id')}: {error}") from error
    try:
        atomic_write_bytes(path, text.encode())
    except OSError as error:
        raise InitiatorError(f"cannot write {path}: {error.strerror}", EXIT_USAGE) from error
    print(f"diagram written to {path}", file=sys.stderr, flush=True)


def queued_lines(config: ClusterConfig, tls: TlsFiles | None) -> list[str]:
    """After a snapshot that did not complete: the nodes that do not answer now
    and the money the others hold queued toward them."""
    from initiator.client import probe_nodes, queued_toward

    probe = probe_nodes(config, tls=tls)
    return format_queued(queued_toward(probe), probe.unreachable)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(message: str, code: int = EXIT_USAGE) -> int:
        print(f"cl-initiator: error: {message}", file=sys.stderr)
        return code

    if args.count < 1:
        return fail("--count must be at least 1")
    if args.interval < 0:
        return fail("--interval must be >= 0")
    if args.limit < 0:
        return fail("--limit must be >= 0")
    if (args.limit != 20 or isinstance(args.status, str)) and not args.list:
        return fail("--limit and --status go with --list")
    # The cluster file is read and validated in a child process while this one
    # imports the gRPC side: yaml and pydantic-core there, grpc and protobuf
    # here, side by side on two cores instead of one after the other.
    wait_config = in_child_process(lambda: load_cluster(args.cluster))
    from initiator import operations
    from initiator.client import (
        InitiatorError,
        NodeUnreachable,
        check_new_id,
        require_reachable,
        start_probe,
        take_snapshot,
        validated_id,
    )

    try:
        config = wait_config()
        nodes = args.nodes or [config.node_ids[0]]
        for node_id in nodes:
            config.node(node_id)
    except ConfigError as error:
        return fail(str(error))
    try:
        # The cheap checks only: the full one imports cryptography, a good part
        # of this command's wall time. It runs when a call fails, to say why.
        tls = tls_from_args(args, operator(args.operator), check=False)
    except (TlsError, IdentityError) as error:
        return fail(str(error))

    def failed(error: InitiatorError, message: str | None = None) -> int:
        """A call failed: a problem with our own certificate explains it best."""
        if tls is not None:
            try:
                tls_from_args(args, operator(args.operator))
            except (TlsError, IdentityError) as problem:
                return fail(str(problem))
        return fail(str(error) if message is None else message, error.exit_code)

    collector = args.collector or config.collector_address
    if options.wanted(args):
        try:
            return operations.run(args, config, collector, tls, args.timeout or 60.0)
        except InitiatorError as error:
            return failed(error)
    if args.show or args.list:
        try:
            return read_snapshots(
                collector, args.show, args.json, args.limit, args.status, args.svg, tls
            )
        except InitiatorError as error:
            return failed(error)
    timeout = args.timeout if args.timeout is not None else config.snapshot_timeout + 30.0
    try:
        if args.snapshot_id:
            validated_id(args.snapshot_id)
            ids = (
                [args.snapshot_id]
                if args.count == 1
                else [validated_id(f"{args.snapshot_id}-{k}") for k in range(1, args.count + 1)]
            )
        else:
            ids = []
    except InitiatorError as error:
        return fail(str(error))
    # The nodes are probed while the collector is asked about the id (reads
    # both, their answers used in the same order as before), so that the
    # connections to the nodes are set up beside the collector's, not after.
    first_probe: ProbeInFlight | None = start_probe(config, tls=tls)
    try:
        # Every id checked before anything starts: a reused one changes nothing.
        for snapshot_id in ids:
            check_new_id(collector, snapshot_id, tls=tls)
    except InitiatorError as error:
        return failed(error)

    worst = 0
    finished: list[Summary] = []
    for index in range(args.count):
        if index and args.interval:
            time.sleep(args.interval)
        snapshot_id = ids[index] if ids else new_snapshot_id()
        probing = first_probe or start_probe(config, tls=tls)
        first_probe = None
        try:
            if not ids:  # the collector is asked first: without it nothing can start
                check_new_id(collector, snapshot_id, tls=tls)
            probe = probing.wait()
            require_reachable(config, nodes, probe)
        except InitiatorError as error:
            message = f"{error}: snapshot {snapshot_id} not started"
            if not isinstance(error, NodeUnreachable):
                message = str(error)
            worst = max(worst, failed(error, message))
            continue
        for node_id, problem in probe.errors.items():
            print(
                f"cl-initiator: warning: {node_id} ({config.node(node_id).address}) does not "
                f"answer ({problem}): the snapshot completes only if it is back within "
                f"{config.snapshot_timeout:g}s",
                file=sys.stderr,
                flush=True,
            )
        try:
            outcome = take_snapshot(
                config,
                collector,
                nodes,
                snapshot_id,
                wait=not args.no_wait,
                timeout=timeout,
                on_progress=ProgressPrinter(),
                on_start_error=print_start_error,
                tls=tls,
            )
        except InitiatorError as error:
            worst = max(worst, failed(error))
            continue
        if outcome.exit_code == EXIT_NO_INITIATOR:
            worst = max(
                worst,
                fail(
                    f"no initiator could be reached ({', '.join(nodes)}): snapshot {snapshot_id} "
                    "was not started and will be stored as aborted after the timeout",
                    EXIT_NO_INITIATOR,
                ),
            )
            continue
        if outcome.document is None:  # --no-wait
            print(snapshot_id, flush=True)
            continue
        queued = [] if outcome.exit_code == 0 else queued_lines(config, tls)
        if args.json:
            print(json.dumps(outcome.document, indent=2), flush=True)
            if queued:
                print("\n".join(queued), file=sys.stderr, flush=True)
        else:
            print("\n".join([format_summary(outcome.document), *queued]), flush=True)
        worst = max(worst, outcome.exit_code)
        if args.count > 1:
            from collector.web.index import summarize

            finished.append(summarize(outcome.document))
        if args.svg:
            try:
                write_svg(svg_path(args.svg, snapshot_id, args.count > 1), outcome.document)
            except InitiatorError as error:
                worst = max(worst, fail(str(error), error.exit_code))
    if args.count > 1:
        from initiator.history import format_durations

        stream = sys.stderr if args.json else sys.stdout
        print(format_durations(finished), file=stream, flush=True)
    return worst


if __name__ == "__main__":
    sys.exit(main())
