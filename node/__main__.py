"""`cl-node` / `python -m node`: run one bank node of the cluster.

Every option falls back to an environment variable (see --help), so compose
files and the EC2 deploy tool configure nodes without command lines.

The cluster file and the node's certificates are checked in a short-lived
child process (`in_child_process`): the checks need yaml, pydantic-core and
cryptography, ~15 MB that the node would otherwise keep mapped for its whole
life and never use again. The node's own modules (and grpc) are imported
after that fork, while the child checks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from certs import identity
from common.cli import (
    add_cluster_option,
    add_listen_options,
    add_logging_options,
    choice_of,
    configure_logging_from,
)
from common.config import ClusterConfig, ConfigError, load_cluster
from common.forked import in_child_process
from common.metrics import parse_metrics_port
from common.tls import TlsError, TlsFiles, add_tls_options, tls_from_args
from node.storage import DataDirMismatch, StorageError

# Exit statuses: 2 for a configuration the node refuses; EXIT_DATA_DIR_MISMATCH
# (sysexits' EX_CONFIG) when its data dir was created for another node or other
# channels. Starting again cannot help there (compose stops after its bounded
# restarts); only a fresh data dir (`docker compose down -v`) or the old config can.
EXIT_CONFIG = 2
EXIT_DATA_DIR_MISMATCH = 78

# SQLite `synchronous` modes a node may run with; OFF could lose an acked credit.
DB_SYNCHRONOUS_MODES = ("full", "normal")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    env = environ.get
    parser = argparse.ArgumentParser(
        prog="cl-node", description="Run one node of a Chandy-Lamport bank cluster."
    )
    add_cluster_option(parser, environ)
    parser.add_argument(
        "--id", dest="node_id", default=env("CL_NODE_ID"), help="this node's id (env CL_NODE_ID)"
    )
    parser.add_argument(
        "--data-dir",
        default=env("CL_DATA_DIR"),
        help="state directory (env CL_DATA_DIR; default data/<id>)",
    )
    add_listen_options(parser, environ, "the port of this node's address")
    parser.add_argument(
        "--max-transfers",
        type=int,
        default=_int_env(environ, "CL_MAX_TRANSFERS"),
        help=(
            "stop the workload after this many transfer attempts, e.g. to let channels "
            "drain (env CL_MAX_TRANSFERS; default: never)"
        ),
    )
    parser.add_argument(
        "--db-synchronous",
        type=choice_of(DB_SYNCHRONOUS_MODES, "CL_DB_SYNCHRONOUS", str.lower),
        choices=DB_SYNCHRONOUS_MODES,
        default=env("CL_DB_SYNCHRONOUS", "normal").lower(),
        help="SQLite synchronous mode (env CL_DB_SYNCHRONOUS; default normal: survives "
        "kill -9, not an OS crash; full: also an OS crash or power cut, one fsync per commit)",
    )
    add_tls_options(parser, environ)
    parser.add_argument(
        "--metrics-port",
        type=_metrics_port,
        default=env("CL_METRICS_PORT") or None,
        help="serve Prometheus /metrics on this port (env CL_METRICS_PORT; default none; "
        "0 for any free port)",
    )
    parser.add_argument(
        "--rejoin",
        action="store_true",
        default=env("CL_REJOIN", "") not in ("", "0"),
        help="if this node's data dir turns out stale (empty, or an old copy: its peers "
        "know better), bring it back by a cluster restore of the latest complete snapshot "
        "(env CL_REJOIN=1)",
    )
    add_logging_options(parser, environ)
    return parser


def _metrics_port(text: str) -> int | None:
    try:
        return parse_metrics_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _int_env(environ: Mapping[str, str], key: str) -> int | None:
    raw = environ.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"cl-node: {key}={raw!r} is not an integer") from None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    if not args.node_id:
        print("cl-node: no node id: pass --id or set CL_NODE_ID", file=sys.stderr)
        return 2
    configure_logging_from(args)

    def start_checks() -> tuple[ClusterConfig, TlsFiles | None]:
        config = load_cluster(args.cluster, environ)
        config.node(args.node_id)
        return config, tls_from_args(args, identity.node(args.node_id), environ)

    wait_checks = in_child_process(start_checks)
    # grpc and the node's modules: after the fork, imported while the child checks.
    from node.server import NodeOptions, PortUnavailable, serve

    try:
        config, tls = wait_checks()
    except (ConfigError, TlsError) as error:
        print(f"cl-node: {error}", file=sys.stderr)
        return EXIT_CONFIG

    try:
        options = NodeOptions(
            tls=tls,
            data_dir=Path(args.data_dir or f"data/{args.node_id}"),
            listen_host=args.listen_host,
            port=args.port,
            max_transfers=args.max_transfers,
            db_synchronous=args.db_synchronous,
            metrics_port=args.metrics_port,
            rejoin=args.rejoin,
        )
        serve(config, args.node_id, options)
    except DataDirMismatch as error:
        print(f"cl-node: {error}", file=sys.stderr)
        return EXIT_DATA_DIR_MISMATCH
    except (ConfigError, StorageError, PortUnavailable, TlsError) as error:
        print(f"cl-node: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
