"""Verification of a global snapshot. Pure: dictionaries in, a verdict out.

Three properties make a Chandy-Lamport cut trustworthy, and all are checked
against the recorded numbers only, never against the live system:

conservation  sum(recorded balances) + sum(in-flight amounts) == expected total
channels      for every channel i -> j, the recorded messages are exactly the
              transfers i had sent but j had not yet received at their
              recording points: their count is sent_i[j] - received_j[i] and
              their transfer sequence numbers are received_j[i]+1 .. sent_i[j].
initiators    at least one node recorded on its own (`initiated: true`): the
              first node to record cannot have had a marker, since markers
              are only sent after recording; and every node that says it
              initiated is among the snapshot's `initiators` (a node records
              on its own only when asked to start the snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def verify_snapshot(
    expected_total: int,
    nodes: Mapping[str, Mapping[str, Any]],
    channels: Sequence[Mapping[str, Any]],
    *,
    initiators: Sequence[str],
) -> dict[str, Any]:
    """Check conservation, the per-channel rule and the initiators; returns the JSON verdict.

    `nodes` maps node id -> {"balance", "sent", "received", "initiated"};
    `channels` is a list of {"from", "to", "messages": [{"seq", "amount"}]};
    `initiators` the nodes asked to start the snapshot: as in the snapshot JSON.
    """
    balances = sum(int(node["balance"]) for node in nodes.values())
    in_flight = sum(int(m["amount"]) for ch in channels for m in ch["messages"])
    conservation = {
        "ok": balances + in_flight == expected_total,
        "expected_total": expected_total,
        "recorded_balances": balances,
        "in_flight": in_flight,
        "recorded_total": balances + in_flight,
    }
    channel_results = [_check_channel(nodes, ch) for ch in channels]
    initiator_result = _check_initiators(nodes, initiators)
    return {
        "ok": conservation["ok"]
        and all(result["ok"] for result in channel_results)
        and initiator_result["ok"],
        "conservation": conservation,
        "channels": channel_results,
        "initiators": initiator_result,
    }


def _check_initiators(
    nodes: Mapping[str, Mapping[str, Any]], initiators: Sequence[str]
) -> dict[str, Any]:
    initiated = sorted(node for node, state in nodes.items() if state.get("initiated") is True)
    asked = sorted(set(initiators))
    result: dict[str, Any] = {"ok": True, "initiators": asked, "initiated": initiated}
    strangers = [node for node in initiated if node not in asked]
    if not initiated:
        result["ok"] = False
        result["problem"] = (
            "no node initiated the snapshot: every node claims it recorded on a "
            "marker, but the first one to record cannot have had one"
        )
    elif strangers:
        result["ok"] = False
        result["problem"] = (
            f"{', '.join(strangers)} claim{'s' if len(strangers) == 1 else ''} to have "
            f"initiated the snapshot but {'is' if len(strangers) == 1 else 'are'} not among "
            f"its initiators ({', '.join(asked) or 'none'})"
        )
    return result


def _check_channel(
    nodes: Mapping[str, Mapping[str, Any]], channel: Mapping[str, Any]
) -> dict[str, Any]:
    src, dst = channel["from"], channel["to"]
    sent = int(nodes[src]["sent"].get(dst, 0))
    received = int(nodes[dst]["received"].get(src, 0))
    seqs = [int(m["seq"]) for m in channel["messages"]]
    result: dict[str, Any] = {
        "from": src,
        "to": dst,
        "sent": sent,
        "received": received,
        "recorded": len(seqs),
        "ok": True,
    }
    if len(seqs) != sent - received:
        result["ok"] = False
        result["problem"] = (
            f"recorded {len(seqs)} messages, expected sent - received = {sent - received}"
        )
    elif seqs != list(range(received + 1, sent + 1)):
        result["ok"] = False
        result["problem"] = f"recorded sequence numbers {seqs} are not {received + 1}..{sent}"
    return result
