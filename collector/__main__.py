"""`cl-collector`: receive node reports, assemble, verify and store global snapshots.

    cl-collector [--cluster FILE] [--snapshot-dir DIR] [--listen-host HOST] [--port PORT]
                 [--log-level LEVEL] [--log-format auto|json|console]

Every option has an environment variable (CL_CLUSTER_FILE, CL_SNAPSHOT_DIR,
CL_LISTEN_HOST, CL_PORT, CL_LOG_LEVEL, CL_LOG_FORMAT). SIGTERM or SIGINT stops
the server gracefully. Exit status 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from common.cli import (
    ShutdownSignal,
    add_cluster_option,
    add_listen_options,
    add_logging_options,
    configure_logging_from,
)
from common.config import ConfigError, load_cluster, port_of


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cl-collector",
        description="Collect node reports into verified global snapshots (JSON files).",
    )
    add_cluster_option(parser, environ)
    parser.add_argument(
        "--snapshot-dir",
        default=environ.get("CL_SNAPSHOT_DIR", "snapshots"),
        help="where <snapshot_id>.json and latest.json are written "
        "(env CL_SNAPSHOT_DIR, default snapshots)",
    )
    add_listen_options(parser, environ, "the port of the collector address in the cluster file")
    add_logging_options(parser, environ)
    return parser


def _fail(message: str) -> int:
    print(f"cl-collector: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(os.environ).parse_args(argv)
    try:
        config = load_cluster(args.cluster)
    except ConfigError as error:
        return _fail(str(error))
    port = args.port if args.port is not None else port_of(config.collector_address)
    configure_logging_from(args)

    # Imported here: --help and configuration errors need no gRPC.
    from collector.server import CollectorServer

    shutdown = ShutdownSignal()
    try:
        server = CollectorServer(config, args.snapshot_dir, args.listen_host, port)
    except (OSError, RuntimeError) as error:
        return _fail(f"cannot start on {args.listen_host}:{port}: {error}")
    server.start()
    shutdown.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
