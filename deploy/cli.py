"""The ``cl-deploy`` command line: a parser assembled from command modules.

Each module named in :data:`COMMAND_MODULES` exposes::

    def register(subparsers: SubParsers) -> None

which adds its subcommands with ``subparsers.add_parser(...)`` and sets
``parser.set_defaults(handler=fn)``, ``fn(args: argparse.Namespace) -> int``
being the exit status. Handlers raise :class:`DeployError` for failures the
operator can fix; :func:`main` prints those as one line and exits 1.

``deploy.aws_commands`` registers ``provision`` and ``destroy`` (boto3),
``deploy.remote`` the ssh + compose steps (``up``, ``snapshot``, ``fetch``,
``status``, ``down``); both read or write the hosts file named by
:func:`add_state_file_option`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deploy.errors import DeployError
from deploy.hosts import DEFAULT_STATE_FILE

# argparse's type for what add_subparsers() returns.
SubParsers = Any
Handler = Callable[[argparse.Namespace], int]

COMMAND_MODULES: tuple[str, ...] = ("deploy.aws_commands", "deploy.remote")


def add_state_file_option(parser: argparse.ArgumentParser) -> None:
    """``--state-file``: the hosts file written by provision (or a terraform output dump)."""
    parser.add_argument(
        "--state-file",
        type=Path,
        default=DEFAULT_STATE_FILE,
        metavar="PATH",
        help="hosts/state JSON: written by `provision`, or `terraform output -json` "
        f"(default: {DEFAULT_STATE_FILE})",
    )


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cl-deploy",
        description="Provision EC2 hosts for a chandy-lamport cluster and deploy it on them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; `snapshot` passes the options it does not know, in
    order, to cl-initiator (`initiator_args`), every other command refuses them."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "initiator_args"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.initiator_args = [arg for arg in extra if arg != "--"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except DeployError as exc:
        print(f"cl-deploy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cl-deploy {args.command}: interrupted; running it again is safe", file=sys.stderr)
        return 130
