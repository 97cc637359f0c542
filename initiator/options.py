"""The options of the operations beyond snapshots (initiator/operations.py):
`--pause-workload`, `--resume-workload`, `--restore ID`, `--restores` and a
bare `--status`.

Apart from the operations themselves, so that building the parser (all
`--help` needs, or a bad option) imports no gRPC.
"""

from __future__ import annotations

from typing import Any

LIVE_STATUS = False  # `--status` without a value (with a value it filters --list)


def add_options(parser: Any) -> None:
    """The operations' options of `cl-initiator` (initiator/__main__.py)."""
    group = parser.add_argument_group("cluster operations")
    ops = group.add_mutually_exclusive_group()
    ops.add_argument(
        "--pause-workload", action="store_true", help="stop every node's transfer workload"
    )
    ops.add_argument(
        "--resume-workload", action="store_true", help="start every node's workload again"
    )
    ops.add_argument(
        "--restore",
        metavar="ID",
        help="roll the cluster back to complete snapshot ID ('latest': the newest); "
        "pause the workload first to see the exact balances",
    )
    ops.add_argument("--restores", action="store_true", help="list the restores done so far")


def wanted(args: Any) -> bool:
    return bool(
        args.pause_workload
        or args.resume_workload
        or args.restore
        or args.restores
        or args.status is LIVE_STATUS
    )
