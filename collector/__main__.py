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
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from common.config import ConfigError, load_cluster
from common.logging import configure_logging

LOG_FORMATS = ("auto", "json", "console")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="cl-collector",
        description="Collect node reports into verified global snapshots (JSON files).",
    )
    parser.add_argument(
        "--cluster",
        default=env("CL_CLUSTER_FILE", "cluster.yaml"),
        help="cluster YAML (env CL_CLUSTER_FILE, default cluster.yaml)",
    )
    parser.add_argument(
        "--snapshot-dir",
        default=env("CL_SNAPSHOT_DIR", "snapshots"),
        help="where <snapshot_id>.json and latest.json are written "
        "(env CL_SNAPSHOT_DIR, default snapshots)",
    )
    parser.add_argument(
        "--listen-host",
        default=env("CL_LISTEN_HOST", "0.0.0.0"),
        help="interface to listen on (env CL_LISTEN_HOST, default 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        default=env("CL_PORT"),
        help="port (env CL_PORT, default the port of the collector address in the cluster file)",
    )
    parser.add_argument(
        "--log-level", default=env("CL_LOG_LEVEL", "INFO"), help="env CL_LOG_LEVEL, default INFO"
    )
    parser.add_argument(
        "--log-format",
        default=env("CL_LOG_FORMAT", "auto"),
        help="auto (JSON unless stderr is a terminal), json or console (env CL_LOG_FORMAT)",
    )
    return parser


def _fail(message: str) -> int:
    print(f"cl-collector: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_cluster(args.cluster)
    except ConfigError as error:
        return _fail(str(error))
    if args.log_format not in LOG_FORMATS:
        return _fail(f"--log-format {args.log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    if args.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        return _fail(f"--log-level {args.log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
    port_text = args.port if args.port is not None else config.collector_address.rsplit(":", 1)[1]
    if not str(port_text).isdigit() or not 0 <= int(port_text) < 65536:
        return _fail(f"port {port_text!r} is not a port number")
    configure_logging(
        args.log_level, json=None if args.log_format == "auto" else args.log_format == "json"
    )

    from collector.server import CollectorServer

    try:
        server = CollectorServer(config, args.snapshot_dir, args.listen_host, int(port_text))
    except (OSError, RuntimeError) as error:
        return _fail(f"cannot start on {args.listen_host}:{port_text}: {error}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
