"""Command-line options shared by cl-node, cl-collector and cl-initiator.

Every option falls back to an environment variable, so compose files and the
EC2 deploy tool configure processes without command lines.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Mapping, Sequence

from common.logging import configure_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "console")


def add_cluster_option(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    parser.add_argument(
        "--cluster",
        default=environ.get("CL_CLUSTER_FILE", "cluster.yaml"),
        help="cluster YAML (env CL_CLUSTER_FILE; default cluster.yaml)",
    )


def add_listen_options(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], port_default: str
) -> None:
    parser.add_argument(
        "--listen-host",
        default=environ.get("CL_LISTEN_HOST") or "127.0.0.1",
        help="interface to listen on (env CL_LISTEN_HOST; default 127.0.0.1: this machine "
        "only; 0.0.0.0 for every interface, as in the containers)",
    )
    # A string default goes through `type` too, so a bad CL_PORT is an argparse
    # error naming it, not a traceback.
    parser.add_argument(
        "--port",
        type=_port,
        default=environ.get("CL_PORT") or None,
        help=f"port to listen on (env CL_PORT; default {port_default})",
    )


def add_logging_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    parser.add_argument(
        "--log-level",
        type=choice_of(LOG_LEVELS, "CL_LOG_LEVEL", str.upper),
        choices=LOG_LEVELS,
        default=environ.get("CL_LOG_LEVEL", "INFO").upper(),
        help="env CL_LOG_LEVEL; default INFO",
    )
    parser.add_argument(
        "--log-format",
        type=choice_of(LOG_FORMATS, "CL_LOG_FORMAT", str.lower),
        choices=LOG_FORMATS,
        default=environ.get("CL_LOG_FORMAT", "auto").lower(),
        help="auto (JSON unless stderr is a terminal), json or console (env CL_LOG_FORMAT)",
    )


def configure_logging_from(args: argparse.Namespace) -> None:
    json = None if args.log_format == "auto" else args.log_format == "json"
    configure_logging(args.log_level, json=json)


def choice_of(
    choices: Sequence[str], env_key: str, normalise: Callable[[str], str]
) -> Callable[[str], str]:
    """An argparse `type` that normalises and checks a value.

    argparse checks `choices` only for values given on the command line; this
    also refuses a bad default taken from `env_key`, with one line naming it.
    """

    def convert(text: str) -> str:
        value = normalise(text)
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not one of {', '.join(choices)} (option or env {env_key})"
            )
        return value

    return convert


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (option or env CL_PORT)")
    return int(text)


class ShutdownSignal:
    """Catches SIGTERM and SIGINT from the moment it is made (in the main
    thread, before the process starts serving), so a stop request during
    start-up still ends in a graceful shutdown."""

    def __init__(self) -> None:
        self.name = ""
        self._received = threading.Event()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.name = signal.Signals(signum).name
        self._received.set()

    def wait(self) -> str:
        """Block until a signal arrived; returns its name."""
        # A timed wait: the handler runs between bytecodes of this thread.
        while not self._received.wait(1.0):
            pass
        return self.name
