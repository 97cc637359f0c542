"""`cl-collector`: receive node reports, assemble, verify and store global snapshots.

    cl-collector [--cluster FILE] [--snapshot-dir DIR] [--listen-host HOST] [--port PORT]
                 [--http-port PORT|off] [--log-level LEVEL] [--log-format auto|json|console]

Every option has an environment variable (CL_CLUSTER_FILE, CL_SNAPSHOT_DIR,
CL_LISTEN_HOST, CL_PORT, CL_HTTP_PORT, CL_LOG_LEVEL, CL_LOG_FORMAT). SIGTERM or SIGINT stops
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
    parser.add_argument(
        "--http-port",
        type=_http_port,
        default=environ.get("CL_HTTP_PORT") or "8080",
        help="port of the dashboard, the JSON API and /metrics (env CL_HTTP_PORT; default 8080; "
        "0 for any free port, 'off' for none)",
    )
    add_logging_options(parser, environ)
    return parser


def _http_port(text: str) -> int | None:
    if text.lower() == "off":
        return None
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number or 'off' (option or env CL_HTTP_PORT)"
        )
    return int(text)


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
        server = CollectorServer(
            config, args.snapshot_dir, args.listen_host, port, http_port=args.http_port
        )
    except (OSError, RuntimeError) as error:
        return _fail(f"cannot start on {args.listen_host}:{port}: {error}")
    try:
        server.start()
    except RuntimeError as error:
        server.stop()
        return _fail(str(error))
    shutdown.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
