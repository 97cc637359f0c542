"""`cl-collector`: receive node reports, assemble, verify and store global snapshots.

    cl-collector [--cluster FILE] [--snapshot-dir DIR] [--listen-host HOST] [--port PORT]
                 [--tls-dir DIR | --plaintext] [--keep-snapshots K] [--begin-rate R]
                 [--begin-burst B] [--max-pending N] [--max-report-bytes N]
                 [--http-port PORT|off] [--log-level LEVEL] [--log-format auto|json|console]

Every option has an environment variable (CL_CLUSTER_FILE, CL_SNAPSHOT_DIR,
CL_LISTEN_HOST, CL_PORT, CL_TLS_DIR, CL_PLAINTEXT, CL_KEEP_SNAPSHOTS,
CL_BEGIN_RATE, CL_BEGIN_BURST, CL_MAX_PENDING_SNAPSHOTS, CL_MAX_REPORT_BYTES,
CL_HTTP_PORT, CL_LOG_LEVEL, CL_LOG_FORMAT). Mutual TLS with the collector
certificate in tls/collector/ next to the cluster file unless told
otherwise. SIGTERM or SIGINT stops the server gracefully. Exit status 2 on a
configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from certs import identity
from collector.admission import (
    DEFAULT_BEGIN_BURST,
    DEFAULT_BEGIN_RATE,
    DEFAULT_KEEP,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_REPORT_BYTES,
    Limits,
)
from common.cli import (
    ShutdownSignal,
    add_cluster_option,
    add_listen_options,
    add_logging_options,
    configure_logging_from,
)
from common.config import ConfigError, load_cluster, port_of
from common.tls import TlsError, add_tls_options, tls_from_args


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
    add_tls_options(parser, environ)
    limits = parser.add_argument_group("admission limits")

    def limit(option: str, env_key: str, default: float, kind: type, what: str) -> None:
        limits.add_argument(
            option,
            type=_positive(kind, option, env_key),
            default=environ.get(env_key) or str(default),
            help=f"{what} (env {env_key}; default {default:g})",
        )

    limit(
        "--keep-snapshots",
        "CL_KEEP_SNAPSHOTS",
        DEFAULT_KEEP,
        int,
        "finished snapshot files kept; older ones are deleted",
    )
    limit(
        "--begin-rate",
        "CL_BEGIN_RATE",
        DEFAULT_BEGIN_RATE,
        float,
        "snapshots that may be begun per second, sustained",
    )
    limit(
        "--begin-burst",
        "CL_BEGIN_BURST",
        DEFAULT_BEGIN_BURST,
        int,
        "snapshots that may be begun at once",
    )
    limit(
        "--max-pending",
        "CL_MAX_PENDING_SNAPSHOTS",
        DEFAULT_MAX_PENDING,
        int,
        "snapshots pending at the same time",
    )
    limit("--max-report-bytes", "CL_MAX_REPORT_BYTES", DEFAULT_MAX_REPORT_BYTES, int,
          "largest node report accepted, in bytes")  # fmt: skip
    parser.add_argument(
        "--http-port",
        type=_http_port,
        default=environ.get("CL_HTTP_PORT") or "8080",
        help="port of the dashboard, the JSON API and /metrics (env CL_HTTP_PORT; default 8080; "
        "0 for any free port, 'off' for none)",
    )
    add_logging_options(parser, environ)
    return parser


def _positive(kind: type, option: str, env_key: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a positive {'integer' if kind is int else 'number'} "
                f"(option {option} or env {env_key})"
            )
        return value  # type: ignore[no-any-return]

    return convert


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
    try:
        tls = tls_from_args(args, identity.collector())
    except TlsError as error:
        return _fail(str(error))
    limits = Limits(
        begin_rate=args.begin_rate,
        begin_burst=args.begin_burst,
        max_pending=args.max_pending,
        max_report_bytes=args.max_report_bytes,
        keep=args.keep_snapshots,
    )

    # Imported here: --help and configuration errors need no gRPC.
    from collector.server import CollectorServer

    shutdown = ShutdownSignal()
    try:
        server = CollectorServer(
            config,
            args.snapshot_dir,
            args.listen_host,
            port,
            http_port=args.http_port,
            tls=tls,
            limits=limits,
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
