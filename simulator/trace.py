"""`cl-simulate --trace`: the run, one line per step, in the order it happened. Pure.

    t=0 n1 sends transfer #1 amount 50 to n2 (arrives t=4)
    t=1 n1 starts snapshot s1
    t=1 n1 records balance 225 (s1)
    t=3 n1→n2 marker s1
    t=3 n2 records balance 200 (s1)
    t=6 n2 has all its markers for s1

A delivery is written `src→dst payload`; what the receiving core did about it
follows on the next lines, at the same tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _payload(message: Mapping[str, Any]) -> str:
    if message.get("type") == "marker":
        return f"marker {message.get('snapshot_id')}"
    return f"transfer #{message.get('seq')} amount {message.get('amount')}"


def format_step(step: Mapping[str, Any], balances: Mapping[tuple[str, str], int]) -> str:
    """One trace line; `balances[(snapshot_id, node)]` is what the node recorded."""
    tick = f"t={step['tick']}"
    kind = step["kind"]
    if kind == "send":
        return (
            f"{tick} {step['from']} sends {_payload(step['message'])} to {step['to']} "
            f"(arrives t={step['deliver_at']})"
        )
    if kind == "deliver":
        return f"{tick} {step['from']}→{step['to']} {_payload(step['message'])}"
    node = step.get("node")
    sid = step.get("snapshot_id")
    if kind == "initiate":
        return f"{tick} {node} starts snapshot {sid}"
    if kind == "record":
        balance = balances.get((str(sid), str(node)))
        what = "its state" if balance is None else f"balance {balance}"
        return f"{tick} {node} records {what} ({sid})"
    if kind == "finish":
        return f"{tick} {node} has all its markers for {sid}"
    if kind == "restore":
        return f"{tick} {node} restarts from its saved state"
    if kind == "restore_snapshot":
        return f"{tick} the cluster is rolled back to snapshot {sid} (epoch {step.get('epoch')})"
    if kind == "refuse":
        return (
            f"{tick} {step['to']} refuses {_payload(step['message'])} from {step['from']} "
            f"(sent in epoch {step.get('epoch')})"
        )
    return f"{tick} {kind}"


def trace_lines(
    steps: Iterable[Mapping[str, Any]], documents: Iterable[Mapping[str, Any]]
) -> list[str]:
    balances = {
        (str(doc["snapshot_id"]), str(node)): int(state["balance"])
        for doc in documents
        for node, state in (doc.get("nodes") or {}).items()
        if isinstance(state, Mapping) and isinstance(state.get("balance"), int)
    }
    return [format_step(step, balances) for step in steps]
