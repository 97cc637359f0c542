"""Human-readable text for snapshot documents and progress. Pure: dictionaries in, text out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1  # collector unreachable, or gave up waiting (--timeout)
EXIT_USAGE = 2  # bad option or configuration
EXIT_ABORTED = 3  # the snapshot ended "aborted"
EXIT_VERIFICATION_FAILED = 4  # complete, but the verification failed
EXIT_NO_INITIATOR = 5  # a chosen node could not be reached: the snapshot was not started
EXIT_NOT_FOUND = 6  # --show: the collector has no such snapshot


@dataclass(frozen=True)
class Queued:
    """Frames a node holds unacknowledged on its channel toward a peer."""

    sender: str
    receiver: str
    frames: int  # transfers and markers
    amount: int  # money in the transfers among them


def exit_code(document: Mapping[str, Any]) -> int:
    """The initiator's exit status for a finished snapshot document."""
    if document.get("status") != "complete":
        return EXIT_ABORTED
    if not document.get("verification", {}).get("ok"):
        return EXIT_VERIFICATION_FAILED
    return EXIT_OK


def format_progress(
    snapshot_id: str,
    reported: Sequence[str],
    missing: Sequence[str],
    elapsed: float,
    recorded: Sequence[str] = (),
) -> str:
    """One progress line, e.g.
    'waiting for snap-1: 2/5 complete (waiting for markers: n1, n2; missing: n3) 2.0s'.

    The words are the summary's: "missing" are the nodes that have not
    recorded their state, "waiting for markers" those that have and still
    wait on some channel. `missing` as the collector sends it holds both.
    """
    total = len(reported) + len(missing)
    line = f"waiting for {snapshot_id}: {len(reported)}/{total} complete"
    waiting = [n for n in missing if n in set(recorded)]
    absent = [n for n in missing if n not in set(recorded)]
    parts = []
    if waiting:
        parts.append(f"waiting for markers: {', '.join(waiting)}")
    if absent:
        parts.append(f"missing: {', '.join(absent)}")
    if parts:
        line += f" ({'; '.join(parts)})"
    return f"{line} {elapsed:.1f}s"


def format_queued(queued: Sequence[Queued], unreachable: Sequence[str]) -> list[str]:
    """Summary lines for the money queued toward unreachable nodes (live node status).

    An aborted snapshot records no channel into a node that never recorded,
    so this money shows in no balance and in no "in flight": say where it is.
    """
    lines = []
    for node in unreachable:
        toward = [q for q in queued if q.receiver == node]
        amount = sum(q.amount for q in toward)
        if not toward:
            lines.append(f"  unreachable now: {node} (nothing queued toward it)")
            continue
        frames = sum(q.frames for q in toward)
        lines.append(
            f"  unreachable now: {node}; queued toward it: amount {amount} in {frames} "
            f"unacknowledged frame{'s' if frames != 1 else ''} ("
            + ", ".join(f"{q.sender}->{q.receiver}: {q.amount}" for q in toward)
            + "), resent when it is back"
        )
    return lines


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
    all_channels = document.get("channels", [])
    channels = [ch for ch in all_channels if ch.get("messages") is not None]
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
    unrecorded = len(all_channels) - len(channels)
    if unrecorded:
        # An aborted snapshot has no state for these: "0" would be a claim.
        line += f"; {unrecorded} of {len(all_channels)} channels not recorded"
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
