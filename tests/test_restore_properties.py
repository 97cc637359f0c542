"""Property tests: restoring a snapshot in the simulator gives back exactly its state.

Hypothesis draws a strongly connected topology, balances, a seed and delays,
then: activity, snapshot S (mid-traffic), more activity, S completes, more
transfers (so that old money is in flight at the restore), `restore_snapshot`
S, then either nothing (the workload "paused") or more activity, and
snapshot T. Checked independently of the protocol modules, from S's
document and a ledger of the transfers the test issued in the new epoch:

* money is conserved after every event, old-epoch money in flight excluded;
* right after the restore every node holds S's recorded balance, its
  counters are those of a fresh epoch (sent == what S recorded in flight on
  its outgoing channels, received == 0);
* paused: once channels drain, every balance equals S's recorded balance
  plus the in-flight amounts S recorded toward that node, and every
  transfer in flight before the restore was refused, not delivered;
* T completes, verifies, and is a consistent cut of the new epoch: per
  channel its messages are exactly the ledger's transfers received+1..sent,
  per node its balance matches its counters.

A failure prints the run as scenario YAML that `cl-simulate` replays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from collector.verify import verify_snapshot
from node.core import Transfer
from simulator.engine import RestoreRejected, Simulation
from simulator.scenario import (
    Event,
    RestoreEvent,
    RestoreSnapshotEvent,
    Scenario,
    SnapshotEvent,
    TickEvent,
    TransferEvent,
    apply_event,
    parse_scenario,
)
from tests.test_simulator_properties import strongly_connected

EXAMPLES = int(os.environ.get("CL_PROPERTY_EXAMPLES", "300"))
DERANDOMIZE = os.environ.get("CL_PROPERTY_RANDOM", "") != "1"

Channel = tuple[str, str]
Op = tuple[Any, ...]  # ("transfer", src, dst, per_mille) | ("tick", n) | ("restart", node)

op = st.one_of(
    st.tuples(st.just("transfer"), st.integers(0, 6), st.integers(0, 6), st.integers(1, 1000)),
    st.tuples(st.just("transfer"), st.integers(0, 6), st.integers(0, 6), st.integers(1, 1000)),
    st.tuples(st.just("tick"), st.integers(0, 6)),
    st.tuples(st.just("restart"), st.integers(0, 6)),
)
ops = st.lists(op, max_size=25)


@dataclass(frozen=True)
class RestoreRun:
    balances: tuple[int, ...]
    channels: tuple[Channel, ...]
    seed: int
    max_delay: int
    before: tuple[Op, ...]
    snapshot_at: int
    during: tuple[Op, ...]
    in_flight: tuple[Op, ...]  # after S completed: left in flight at the restore
    paused: bool
    after: tuple[Op, ...]
    second_snapshot_at: int

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(f"n{i + 1}" for i in range(len(self.balances)))


@st.composite
def restore_runs(draw: st.DrawFn) -> RestoreRun:
    n = draw(st.integers(2, 6))
    ids = [f"n{i + 1}" for i in range(n)]
    balances = tuple(draw(st.lists(st.integers(0, 500), min_size=n, max_size=n)))
    order = draw(st.permutations(range(n)))
    pairs = [(a, b) for a in ids for b in ids if a != b]
    extra = draw(st.lists(st.sampled_from(pairs), max_size=2 * n))
    return RestoreRun(
        balances=balances,
        channels=tuple(strongly_connected(ids, order, extra)),
        seed=draw(st.integers(0, 2**32 - 1)),
        max_delay=draw(st.integers(1, 8)),
        before=tuple(draw(ops)),
        snapshot_at=draw(st.integers(0, 6)),
        during=tuple(draw(ops)),
        in_flight=tuple(draw(st.lists(op, min_size=1, max_size=10))),
        paused=draw(st.booleans()),
        after=tuple(draw(ops)),
        second_snapshot_at=draw(st.integers(0, 6)),
    )


class Runner:
    """Applies concrete events to a simulation, remembering them as a scenario."""

    def __init__(self, spec: RestoreRun) -> None:
        self.spec = spec
        self.ids = spec.ids
        self.nodes = dict(zip(self.ids, spec.balances, strict=True))
        self.total = sum(spec.balances)
        base = Scenario(
            nodes=self.nodes, channels=spec.channels, seed=spec.seed, max_delay=spec.max_delay
        )
        self.sim: Simulation = base.simulation()
        self.events: list[Event] = []
        self.outgoing = {a: [b for s, b in spec.channels if s == a] for a in self.ids}
        # the new epoch's transfers per channel, transfer k at index k-1
        self.ledger: dict[Channel, list[int]] | None = None

    def apply(self, event: Event) -> None:
        self.events.append(event)
        apply_event(self.sim, event)
        assert self.sim.total_money() == self.total, f"money not conserved after {event}"

    def ops(self, ops: tuple[Op, ...]) -> None:
        for o in ops:
            if o[0] == "transfer":
                src = self.ids[o[1] % len(self.ids)]
                dst = self.outgoing[src][o[2] % len(self.outgoing[src])]
                balance = self.sim.core(src).balance
                if balance == 0:
                    continue
                amount = max(1, balance * o[3] // 1000)
                self.apply(TransferEvent(src, dst, amount))
                if self.ledger is not None:
                    self.ledger[(src, dst)].append(amount)
            elif o[0] == "tick":
                self.apply(TickEvent(o[1]))
            else:
                self.apply(RestoreEvent(self.ids[o[1] % len(self.ids)]))

    def until_no_snapshot_runs(self) -> None:
        while self.sim.pending_snapshots:
            self.apply(TickEvent(1))

    def scenario_yaml(self) -> str:
        return Scenario(
            nodes=self.nodes,
            channels=self.spec.channels,
            events=tuple(self.events),
            seed=self.spec.seed,
            max_delay=self.spec.max_delay,
        ).to_yaml()


def check_cut(
    doc: dict[str, Any], ledger: dict[Channel, list[int]], base: dict[str, int], total: int
) -> None:
    """`doc` is a consistent cut of the new epoch, from the ledger alone."""
    sid = doc["snapshot_id"]
    assert doc["status"] == "complete", sid
    nodes = doc["nodes"]
    in_flight = 0
    for channel in doc["channels"]:
        src, dst = channel["from"], channel["to"]
        sent, received = nodes[src]["sent"][dst], nodes[dst]["received"][src]
        seqs = [m["seq"] for m in channel["messages"]]
        assert seqs == list(range(received + 1, sent + 1)), f"{sid} {src}->{dst}: {seqs}"
        amounts = [m["amount"] for m in channel["messages"]]
        assert amounts == ledger[(src, dst)][received:sent], f"{sid} {src}->{dst}: amounts"
        in_flight += sum(amounts)
    for node_id, node in nodes.items():
        came_in = sum(sum(ledger[(p, node_id)][:k]) for p, k in node["received"].items())
        went_out = sum(sum(ledger[(node_id, p)][:k]) for p, k in node["sent"].items())
        assert node["balance"] == base[node_id] + came_in - went_out, f"{sid}: {node_id}"
    assert sum(n["balance"] for n in nodes.values()) + in_flight == total, f"{sid}: money"
    assert (
        doc["verification"]["ok"] is True
        and verify_snapshot(total, nodes, doc["channels"], initiators=doc["initiators"])["ok"]
    )


def run_restore(spec: RestoreRun) -> Runner:
    r = Runner(spec)
    r.ops(spec.before)
    r.apply(SnapshotEvent((r.ids[spec.snapshot_at % len(r.ids)],), "s"))
    r.ops(spec.during)
    r.until_no_snapshot_runs()
    r.ops(spec.in_flight)
    s_doc = r.sim.document("s")
    old_messages = r.sim.statistics().in_flight_messages
    assert r.sim.discarded == 0
    r.apply(RestoreSnapshotEvent("s"))

    # right after the restore: S's balances, fresh counters, S's in-flight money queued again
    recorded = {
        (c["from"], c["to"]): [m["amount"] for m in c["messages"]] for c in s_doc["channels"]
    }
    for node_id in r.ids:
        core = r.sim.core(node_id)
        assert core.epoch == 1
        assert core.balance == s_doc["nodes"][node_id]["balance"], node_id
        assert core.received == {p: 0 for p in core.incoming}
        assert core.sent == {p: len(recorded[(node_id, p)]) for p in core.outgoing}
    assert r.sim.statistics().in_flight_money == sum(sum(a) for a in recorded.values())
    r.ledger = {ch: list(amounts) for ch, amounts in recorded.items()}
    base = {
        node_id: s_doc["nodes"][node_id]["balance"]
        + sum(sum(recorded[(node_id, p)]) for p in r.outgoing[node_id])
        for node_id in r.ids
    }
    if not spec.paused:
        r.ops(spec.after)
    r.apply(SnapshotEvent((r.ids[spec.second_snapshot_at % len(r.ids)],), "t"))
    if not spec.paused:
        r.ops(spec.after[::-1])
    r.sim.run_until_quiet()
    assert r.sim.total_money() == r.total
    if spec.paused:
        credit = {n: sum(sum(recorded[(p, n)]) for p in r.ids if (p, n) in recorded) for n in r.ids}
        for node_id in r.ids:
            expected = s_doc["nodes"][node_id]["balance"] + credit[node_id]
            assert r.sim.core(node_id).balance == expected, f"{node_id} after the restore drained"
    # everything on the wire at the restore was of the old epoch: refused, none applied
    assert r.sim.discarded == old_messages
    check_cut(r.sim.document("t"), r.ledger, base, r.total)
    assert (s_doc["epoch"], r.sim.document("t")["epoch"]) == (0, 1)
    return r


@settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None if DERANDOMIZE else settings.default.database,
)
@given(spec=restore_runs())
def test_restoring_a_snapshot_gives_back_its_state(spec: RestoreRun) -> None:
    note(f"seed={spec.seed} channels={spec.channels}")
    runner: Runner | None = None
    try:
        runner = run_restore(spec)
    except AssertionError as error:
        replay = Runner(spec)
        raise AssertionError(
            f"{error}\n(seed {spec.seed}) scenario prefix:\n{replay.scenario_yaml()}"
        ) from error
    s_doc = runner.sim.document("s")
    event(f"in flight in S: {sum(len(c['messages']) for c in s_doc['channels']) > 0}")
    event(f"old messages refused: {runner.sim.discarded > 0}")
    event(f"paused: {spec.paused}")
    # the run replays from its scenario to the same documents
    scenario = Scenario(
        nodes=runner.nodes,
        channels=spec.channels,
        events=tuple(runner.events),
        seed=spec.seed,
        max_delay=spec.max_delay,
    )
    again = parse_scenario(scenario.to_dict()).run()
    assert again.completed_snapshots == runner.sim.completed_snapshots
    assert again.restores == runner.sim.restores


def test_restore_snapshot_scenario_event_and_errors() -> None:
    scenario = parse_scenario(
        {
            "seed": 3,
            "nodes": {"a": 100, "b": 0},
            "topology": "ring",
            "events": [
                {"transfer": {"from": "a", "to": "b", "amount": 40}},
                {"snapshot": {"node": "a", "id": "s1"}},
                {"transfer": {"from": "a", "to": "b", "amount": 10}},
                {"tick": 20},
                {"transfer": {"from": "b", "to": "a", "amount": 50}},
                {"restore_snapshot": {"id": "s1"}},
            ],
        },
        "x.yaml",
    )
    sim = scenario.run()
    doc = sim.document("s1")
    in_flight = {n: 0 for n in ("a", "b")}
    for ch in doc["channels"]:
        in_flight[ch["to"]] += sum(m["amount"] for m in ch["messages"])
    assert {n: sim.core(n).balance for n in ("a", "b")} == {
        n: doc["nodes"][n]["balance"] + in_flight[n] for n in ("a", "b")
    }
    assert sim.epoch == 1 and sim.restores[0]["outcome"] == "complete"
    assert parse_scenario(scenario.to_dict(), "x.yaml") == scenario
    with pytest.raises(RestoreRejected, match="never started"):
        sim.restore_snapshot("nope")
    sim.snapshot("a", "s2")
    with pytest.raises(RestoreRejected, match="still running"):
        sim.restore_snapshot("s1")
    from simulator.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"events\[0\].restore_snapshot.id"):
        parse_scenario(
            {
                "nodes": {"a": 1, "b": 1},
                "topology": "ring",
                "events": [{"restore_snapshot": {"id": "latest"}}],
            }
        )


def test_the_schedule_shows_the_restore_and_the_refused_old_messages() -> None:
    from simulator.engine import RefuseStep, RestoreSnapshotStep, step_to_dict

    sim = Scenario(nodes={"a": 100, "b": 0}, channels=(("a", "b"), ("b", "a")), seed=1).simulation()
    sim.transfer("a", "b", 30)
    sim.snapshot("a", "s1")
    sim.run_until_quiet()
    sim.transfer("a", "b", 20)  # in flight, in epoch 0, when the restore happens
    assert sim.restore_snapshot("s1") == 1
    sim.run_until_quiet()
    kinds = [step_to_dict(step) for step in sim.schedule]
    restore = [s for s in sim.schedule if isinstance(s, RestoreSnapshotStep)]
    refused = [s for s in sim.schedule if isinstance(s, RefuseStep)]
    assert [(s.snapshot_id, s.epoch) for s in restore] == [("s1", 1)]
    assert [(r.payload, r.epoch) for r in refused] == [(Transfer(2, 20), 0)]
    assert {"kind": "refuse", "epoch": 0}.items() <= kinds[refused[0].step].items()
    assert sim.discarded == 1 and sim.total_money() == 100
    assert (sim.core("a").balance, sim.core("b").balance) == (70, 30)
