"""The simulator's schedule (Simulation.schedule): what the oracle and the diagrams replay."""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from node.core import Marker, Transfer
from simulator.engine import (
    DeliverStep,
    FinishStep,
    InitiateStep,
    RecordStep,
    RestoreStep,
    SendStep,
    Simulation,
    SnapshotRejected,
    Step,
    TransferRejected,
    step_to_dict,
)
from simulator.scenario import RestoreEvent, TransferEvent
from tests.test_simulator_properties import random_spec, run

PAIR = [("a", "b"), ("b", "a")]


def test_a_small_run_step_by_step() -> None:
    sim = Simulation({"a": 10, "b": 0}, PAIR, seed=0, max_delay=1)
    sim.transfer("a", "b", 4)
    sim.snapshot("a", "s1")
    sim.restore("b")
    sim.run_until_quiet()
    assert [step_to_dict(s) for s in sim.schedule] == [
        {"kind": "send", "step": 0, "tick": 0, "from": "a", "to": "b", "index": 1,
         "message": {"type": "transfer", "seq": 1, "amount": 4}, "deliver_at": 1},
        {"kind": "initiate", "step": 1, "tick": 0, "node": "a", "snapshot_id": "s1"},
        {"kind": "record", "step": 2, "tick": 0, "node": "a", "snapshot_id": "s1"},
        {"kind": "send", "step": 3, "tick": 0, "from": "a", "to": "b", "index": 2,
         "message": {"type": "marker", "snapshot_id": "s1"}, "deliver_at": 1},
        {"kind": "restore", "step": 4, "tick": 0, "node": "b"},
        {"kind": "deliver", "step": 5, "tick": 1, "from": "a", "to": "b", "index": 1,
         "message": {"type": "transfer", "seq": 1, "amount": 4}},
        {"kind": "deliver", "step": 6, "tick": 1, "from": "a", "to": "b", "index": 2,
         "message": {"type": "marker", "snapshot_id": "s1"}},
        {"kind": "record", "step": 7, "tick": 1, "node": "b", "snapshot_id": "s1"},
        {"kind": "send", "step": 8, "tick": 1, "from": "b", "to": "a", "index": 1,
         "message": {"type": "marker", "snapshot_id": "s1"}, "deliver_at": 2},
        {"kind": "finish", "step": 9, "tick": 1, "node": "b", "snapshot_id": "s1"},
        {"kind": "deliver", "step": 10, "tick": 2, "from": "b", "to": "a", "index": 1,
         "message": {"type": "marker", "snapshot_id": "s1"}},
        {"kind": "finish", "step": 11, "tick": 2, "node": "a", "snapshot_id": "s1"},
    ]
    assert sim.schedule[0] == SendStep(0, 0, "a", "b", 1, Transfer(1, 4), 1)
    assert sim.schedule[10] == DeliverStep(10, 2, "b", "a", 1, Marker("s1"))
    assert sim.initial_balances == {"a": 10, "b": 0}
    json.dumps([step_to_dict(s) for s in sim.schedule])  # JSON-ready


def test_rejected_requests_leave_no_step() -> None:
    sim = Simulation({"a": 10, "b": 0}, PAIR, seed=0, max_delay=1)
    with pytest.raises(TransferRejected):
        sim.transfer("b", "a", 1)
    sim.snapshot("a", "s1")
    sim.run_until_quiet()
    steps = len(sim.schedule)
    with pytest.raises(SnapshotRejected):
        sim.snapshot("b", "s1")
    assert len(sim.schedule) == steps
    assert not any(isinstance(s, SendStep) and isinstance(s.payload, Transfer)
                   for s in sim.schedule)


def test_a_second_initiation_is_a_step_even_when_it_does_nothing() -> None:
    sim = Simulation({"a": 10, "b": 0}, PAIR, seed=0, max_delay=3)
    sim.snapshot("a", "s1")
    sim.tick(3)  # b has recorded from a's marker by now
    sim.snapshot("b", "s1")
    sim.run_until_quiet()
    initiations = [s for s in sim.schedule if isinstance(s, InitiateStep)]
    assert [(s.node, s.snapshot_id) for s in initiations] == [("a", "s1"), ("b", "s1")]
    records = [s.node for s in sim.schedule if isinstance(s, RecordStep)]
    assert records == ["a", "b"]
    (document,) = sim.completed_snapshots
    assert document["initiators"] == ["a", "b"]
    assert document["nodes"]["b"]["initiated"] is False


def check_schedule(sim: Simulation) -> None:
    """The invariants the schedule documents, for any quiet simulation."""
    schedule: tuple[Step, ...] = sim.schedule
    assert [s.step for s in schedule] == list(range(len(schedule)))
    ticks = [s.tick for s in schedule]
    assert ticks == sorted(ticks) and ticks[-1] == sim.now
    sends: dict[tuple[str, str], list[SendStep]] = defaultdict(list)
    deliveries: dict[tuple[str, str], list[DeliverStep]] = defaultdict(list)
    for s in schedule:
        if isinstance(s, SendStep):
            sends[(s.src, s.dst)].append(s)
            assert s.deliver_at > s.tick
        elif isinstance(s, DeliverStep):
            deliveries[(s.src, s.dst)].append(s)
    assert set(sends) <= set(sim.channels)
    for channel, sent in sends.items():
        assert [s.index for s in sent] == list(range(1, len(sent) + 1))
        got = deliveries[channel]
        # FIFO, exactly once, at the tick the send said, after it was sent
        assert [d.index for d in got] == [s.index for s in sent], channel
        assert [d.payload for d in got] == [s.payload for s in sent], channel
        assert [d.tick for d in got] == [s.deliver_at for s in sent], channel
        assert all(d.step > s.step for d, s in zip(got, sent, strict=True))
    assert set(deliveries) <= set(sends)
    assert sum(len(d) for d in deliveries.values()) == sim.statistics().delivered
    for document in sim.completed_snapshots:
        sid = document["snapshot_id"]
        initiators = {s.node for s in schedule if isinstance(s, InitiateStep)
                      and s.snapshot_id == sid}
        assert sorted(initiators) == document["initiators"]
        finished = {s.node for s in schedule if isinstance(s, FinishStep)
                    and s.snapshot_id == sid}
        assert finished == set(sim.node_ids)


@pytest.mark.parametrize("seed", range(25))
def test_schedule_invariants_on_random_runs(seed: int) -> None:
    spec = random_spec(random.Random(seed))
    outcome = run(spec)
    sim = outcome.scenario.run()
    check_schedule(sim)
    restores = [e for e in outcome.scenario.events if isinstance(e, RestoreEvent)]
    assert len([s for s in sim.schedule if isinstance(s, RestoreStep)]) == len(restores)
    transfers = [s for s in sim.schedule if isinstance(s, SendStep)
                 and isinstance(s.payload, Transfer)]
    assert [s.payload.amount for s in transfers if isinstance(s.payload, Transfer)] == [
        e.amount for e in outcome.scenario.events if isinstance(e, TransferEvent)
    ]


def test_the_schedule_is_deterministic() -> None:
    spec = random_spec(random.Random(3))
    first = run(spec).scenario.run().schedule
    second = run(spec).scenario.run().schedule
    assert first == second and len(first) > 50
