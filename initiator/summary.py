"""Human-readable text for snapshot documents and progress. Pure: dictionaries in, text out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1  # collector unreachable, or gave up waiting (--timeout)
EXIT_USAGE = 2  # bad option or configuration
EXIT_ABORTED = 3  # the snapshot ended "aborted"
EXIT_VERIFICATION_FAILED = 4  # complete, but the verification failed
EXIT_NO_INITIATOR = 5  # no chosen node could be reached to start the snapshot


def exit_code(document: Mapping[str, Any]) -> int:
    """The initiator's exit status for a finished snapshot document."""
    if document.get("status") != "complete":
        return EXIT_ABORTED
    if not document.get("verification", {}).get("ok"):
        return EXIT_VERIFICATION_FAILED
    return EXIT_OK


def format_progress(
    snapshot_id: str, reported: Sequence[str], missing: Sequence[str], elapsed: float
) -> str:
    """One progress line, e.g. 'waiting for snap-1: 3/5 reported (missing n4, n5) 2.0s'."""
    total = len(reported) + len(missing)
    line = f"waiting for {snapshot_id}: {len(reported)}/{total} reported"
    if missing:
        line += f" (missing {', '.join(missing)})"
    return f"{line} {elapsed:.1f}s"


def format_summary(document: Mapping[str, Any]) -> str:
    """A short report of one snapshot document (complete or aborted)."""
    status = str(document.get("status", "?"))
    initiators = ", ".join(document.get("initiators", [])) or "-"
    epoch = int(document.get("epoch") or 0)
    lines = [
        f"snapshot {document.get('snapshot_id')}: {status.upper()} (initiated by {initiators})"
        + (f", epoch {epoch}" if epoch else "")
    ]
    duration = document.get("duration_seconds")
    lines.append(
        f"  started {document.get('started_at')}, finished {document.get('completed_at')}"
        + (f", took {duration:.3f}s" if isinstance(duration, int | float) else "")
    )
    missing = list(document.get("missing", []))
    if missing:
        its = "its" if len(missing) == 1 else "their"
        lines.append(f"  missing: {', '.join(missing)} (never recorded {its} state)")
    waiting: Mapping[str, Sequence[str]] = document.get("waiting", {})
    if waiting:
        groups: dict[tuple[str, ...], list[str]] = {}
        for node, senders in waiting.items():
            groups.setdefault(tuple(senders), []).append(node)
        lines.append(
            "  still waiting for markers: "
            + "; ".join(
                f"{', '.join(nodes)} from {', '.join(senders) or '?'}"
                for senders, nodes in groups.items()
            )
        )

    nodes: Mapping[str, Mapping[str, Any]] = document.get("nodes", {})
    if nodes:
        balances = "  ".join(
            f"{node}={int(state['balance'])}" for node, state in sorted(nodes.items())
        )
        lines.append(f"  balances: {balances}")
    channels = [ch for ch in document.get("channels", []) if ch.get("messages") is not None]
    in_flight = [(ch, ch["messages"]) for ch in channels if ch["messages"]]
    count = sum(len(messages) for _, messages in in_flight)
    amount = sum(int(m["amount"]) for _, messages in in_flight for m in messages)
    line = f"  in flight: {count} message{'s' if count != 1 else ''}, amount {amount}"
    if in_flight:
        line += (
            " ("
            + ", ".join(f"{ch['from']}->{ch['to']}: {len(msgs)}" for ch, msgs in in_flight)
            + ")"
        )
    lines.append(line)

    verification: Mapping[str, Any] = document.get("verification", {})
    if status != "complete" or not verification.get("checked", True):
        lines.append(
            f"  verification: not checked ({verification.get('reason', 'snapshot not complete')})"
        )
        return "\n".join(lines)
    conservation: Mapping[str, Any] = verification.get("conservation", {})
    lines.append(
        f"  conservation: {'OK' if conservation.get('ok') else 'FAILED'}: "
        f"balances {conservation.get('recorded_balances')}"
        f" + in flight {conservation.get('in_flight')}"
        f" = {conservation.get('recorded_total')}, expected {conservation.get('expected_total')}"
    )
    results: Sequence[Mapping[str, Any]] = verification.get("channels", [])
    failed = [r for r in results if not r.get("ok")]
    if failed:
        lines.append(f"  channels: FAILED on {len(failed)} of {len(results)}")
        lines += [f"    {r['from']}->{r['to']}: {r.get('problem', 'failed')}" for r in failed]
    else:
        lines.append(f"  channels: OK ({len(results)} checked: recorded == sent - received)")
    initiator_check: Mapping[str, Any] = verification.get("initiators", {})
    if initiator_check.get("ok") is False:
        lines.append(f"  initiators: FAILED: {initiator_check.get('problem', 'failed')}")
    lines.append(f"  verification: {'PASSED' if verification.get('ok') else 'FAILED'}")
    return "\n".join(lines)
