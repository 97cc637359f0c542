"""Compare what the simulator (and so node/core.py) produced with the reference oracle.

`oracle_mismatches(sim)` replays `sim.schedule` (its JSON form) through
tests/oracle/reference.py and lists every difference, exactly:

* every divergence the oracle saw while replaying (a delivery or a marker
  the paper does not allow, a record or finish the paper did not do);
* the set of snapshot ids, and for each: complete or not, the set of
  initiators, its epoch, when it started and completed;
* per node: recorded balance, sent and received counters, `initiated`, and
  the ticks it recorded and finished at;
* per channel: the recorded in-flight messages (seq, amount), in order;
* at the end: every node's live balance and counters, and nothing in flight.

An empty list means the core recorded exactly the cuts Chandy-Lamport
records for the execution the simulator chose.
"""

from __future__ import annotations

from typing import Any

from simulator.engine import Simulation, step_to_dict, tick_timestamp
from tests.oracle.reference import OracleRun, OracleSnapshot, replay

# How many runs have been compared (the slow profile reports it).
RUNS_CHECKED = [0]


def oracle_run(sim: Simulation) -> OracleRun:
    """The oracle's replay of everything `sim` did so far."""
    return replay(
        sim.initial_balances, sim.channels, [step_to_dict(step) for step in sim.schedule]
    )


def documents_of(sim: Simulation) -> dict[str, dict[str, Any]]:
    """Every snapshot document the simulation has: complete ones and, as of now, pending."""
    documents = {d["snapshot_id"]: d for d in sim.completed_snapshots}
    for sid in sim.pending_snapshots:
        documents[sid] = sim.document(sid)
    return documents


def oracle_mismatches(sim: Simulation, limit: int = 20) -> list[str]:
    """Every way `sim`'s snapshots differ from the oracle's (at most `limit`)."""
    RUNS_CHECKED[0] += 1
    run = oracle_run(sim)
    problems = list(run.divergences[:5])
    documents = documents_of(sim)
    if sorted(documents) != sorted(run.snapshots):
        problems.append(
            f"snapshot ids: simulator {sorted(documents)}, oracle {sorted(run.snapshots)}"
        )
    for sid in sorted(set(documents) & set(run.snapshots)):
        problems += _snapshot_mismatches(documents[sid], run.snapshots[sid])
    for node in sim.node_ids:
        core = sim.core(node)
        if core.balance != run.balances[node]:
            problems.append(f"live balance of {node}: core {core.balance}, oracle "
                            f"{run.balances[node]}")
        sent = {peer: run.sent[(node, peer)] for src, peer in sim.channels if src == node}
        received = {peer: run.received[(peer, node)] for peer, dst in sim.channels if dst == node}
        if dict(core.sent) != sent or dict(core.received) != received:
            problems.append(f"live counters of {node}: core sent {dict(core.sent)} received "
                            f"{dict(core.received)}, oracle sent {sent} received {received}")
    if sim.quiet and run.in_flight:
        problems.append(f"the simulator is quiet, but by the paper in flight: {run.in_flight}")
    return problems[:limit]


def _snapshot_mismatches(doc: dict[str, Any], expected: OracleSnapshot) -> list[str]:
    sid = doc["snapshot_id"]
    problems: list[str] = []

    def differ(what: str, core: Any, oracle: Any) -> None:
        if core != oracle:
            problems.append(f"snapshot {sid}: {what}: core {core!r}, oracle {oracle!r}")

    differ("complete", doc["status"] == "complete", expected.complete)
    differ("initiators", doc["initiators"], sorted(expected.initiators))
    differ("epoch", doc.get("epoch", 0), expected.epoch)
    differ("started_at", doc["started_at"], tick_timestamp(expected.started_tick))
    if expected.complete and doc["status"] == "complete":
        completed = expected.completed_tick
        assert completed is not None
        differ("completed_at", doc["completed_at"], tick_timestamp(completed))
    nodes = doc["nodes"]
    differ("nodes that recorded", sorted(nodes), sorted(expected.states))
    for node in sorted(set(nodes) & set(expected.states)):
        got, state = nodes[node], expected.states[node]
        differ(f"{node}.balance", got["balance"], state.balance)
        differ(f"{node}.sent", got["sent"], dict(sorted(state.sent.items())))
        differ(f"{node}.received", got["received"], dict(sorted(state.received.items())))
        differ(f"{node}.initiated", got["initiated"], state.initiated)
        differ(f"{node}.recorded_at", got["recorded_at"], tick_timestamp(state.recorded_tick))
        finished = state.finished_tick is not None
        differ(f"{node}.complete", got["complete"], finished)
        if finished and got["complete"]:
            assert state.finished_tick is not None
            differ(f"{node}.completed_at", got["completed_at"],
                   tick_timestamp(state.finished_tick))
    for channel in doc["channels"]:
        src, dst = channel["from"], channel["to"]
        state = expected.states.get(dst)
        oracle_messages = None
        if state is not None and state.finished_tick is not None:
            oracle_messages = [
                {"seq": seq, "amount": amount} for seq, amount in state.channels.get(src, [])
            ]
        if channel["messages"] is not None or oracle_messages is not None:
            differ(f"channel {src}->{dst}", channel["messages"], oracle_messages)
    return problems
