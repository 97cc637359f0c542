"""The reference oracle itself: right on a hand-worked run, and it sees what it must."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from simulator.engine import Simulation, step_to_dict
from tests.oracle.compare import oracle_mismatches
from tests.oracle.reference import replay

RING = [("n1", "n2"), ("n2", "n3"), ("n3", "n1")]
BALANCES = {"n1": 100, "n2": 50, "n3": 0}


class Steps:
    """Builds a schedule's JSON steps by hand, numbering them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.tick = 0
        self.index: dict[tuple[str, str], int] = {}

    def add(self, kind: str, **fields: Any) -> None:
        self.steps.append({"kind": kind, "step": len(self.steps), "tick": self.tick, **fields})

    def send(self, src: str, dst: str, message: dict[str, Any]) -> None:
        self.index[(src, dst)] = self.index.get((src, dst), 0) + 1
        self.add("send", **{"from": src, "to": dst}, index=self.index[(src, dst)],
                 message=message, deliver_at=self.tick + 1)

    def deliver(self, src: str, dst: str, index: int, message: dict[str, Any]) -> None:
        self.add("deliver", **{"from": src, "to": dst}, index=index, message=message)


def transfer(seq: int, amount: int) -> dict[str, Any]:
    return {"type": "transfer", "seq": seq, "amount": amount}


MARKER = {"type": "marker", "snapshot_id": "s1"}


def textbook() -> Steps:
    """n1 initiates on the ring with 30 in flight to n2 (delivered before the marker:
    not in the cut) and n3 sending 5 to n1 before it records (in flight in the cut)."""
    s = Steps()
    s.send("n1", "n2", transfer(1, 30))
    s.add("initiate", node="n1", snapshot_id="s1")
    s.add("record", node="n1", snapshot_id="s1")
    s.send("n1", "n2", MARKER)
    s.send("n2", "n3", transfer(1, 20))
    s.tick = 1
    s.deliver("n1", "n2", 1, transfer(1, 30))
    s.deliver("n1", "n2", 2, MARKER)
    s.add("record", node="n2", snapshot_id="s1")
    s.send("n2", "n3", MARKER)
    s.add("finish", node="n2", snapshot_id="s1")
    s.deliver("n2", "n3", 1, transfer(1, 20))
    s.send("n3", "n1", transfer(1, 5))
    s.tick = 2
    s.deliver("n2", "n3", 2, MARKER)
    s.add("record", node="n3", snapshot_id="s1")
    s.send("n3", "n1", MARKER)
    s.add("finish", node="n3", snapshot_id="s1")
    s.tick = 3
    s.deliver("n3", "n1", 1, transfer(1, 5))
    s.deliver("n3", "n1", 2, MARKER)
    s.add("finish", node="n1", snapshot_id="s1")
    return s


def test_the_textbook_ring() -> None:
    result = replay(BALANCES, RING, textbook().steps)
    assert result.divergences == []
    snap = result.snapshots["s1"]
    assert snap.complete and snap.initiators == {"n1"}
    assert snap.started_tick == 0 and snap.completed_tick == 3
    states = snap.states
    assert {n: (s.balance, s.sent, s.received, s.initiated) for n, s in states.items()} == {
        "n1": (70, {"n2": 1}, {"n3": 0}, True),
        "n2": (60, {"n3": 1}, {"n1": 1}, False),
        "n3": (15, {"n1": 1}, {"n2": 1}, False),
    }
    assert states["n1"].channels == {"n3": [(1, 5)]}  # in flight across the cut
    assert states["n2"].channels == {"n1": []} and states["n3"].channels == {"n2": []}
    assert [states[n].recorded_tick for n in ("n1", "n2", "n3")] == [0, 1, 2]
    assert [states[n].finished_tick for n in ("n1", "n2", "n3")] == [3, 1, 2]
    assert result.balances == {"n1": 75, "n2": 60, "n3": 15}
    assert result.in_flight == {}


def test_a_reordered_delivery_is_a_divergence() -> None:
    steps = textbook().steps
    first, second = steps[5], steps[6]  # transfer then marker on n1 -> n2
    first["message"], second["message"] = second["message"], first["message"]
    result = replay(BALANCES, RING, steps)
    assert result.divergences[0] == (
        "step 5 (tick 1, deliver): n1 -> n2 delivered marker s1; "
        "by the paper the next message on it is transfer #1 of 30"
    )


def test_a_transfer_sent_ahead_of_the_marker_is_a_divergence() -> None:
    s = Steps()
    s.add("initiate", node="n1", snapshot_id="s1")
    s.send("n1", "n2", transfer(1, 10))  # the marker should have gone first
    result = replay(BALANCES, RING, s.steps)
    assert result.divergences[0].startswith(
        "step 1 (tick 0, send): n1 -> n2: the core sent transfer #1 of 10 as message #1; "
        "by the paper message #2 is transfer #1 of 10"
    )


def test_claims_the_paper_does_not_make_are_divergences() -> None:
    s = Steps()
    s.add("record", node="n2", snapshot_id="s1")
    s.add("initiate", node="n1", snapshot_id="s1")
    s.add("finish", node="n1", snapshot_id="s1")
    s.deliver("n2", "n3", 1, transfer(1, 5))
    s.send("n1", "n2", transfer(1, 500))
    problems = replay(BALANCES, RING, s.steps).divergences
    assert problems[:4] == [
        "step 0 (tick 0, record): the core claims n2 did record s1; by the paper it has not",
        "step 2 (tick 0, finish): the core claims n1 did finish s1; by the paper it has not",
        "step 3 (tick 0, deliver): n2 -> n3 delivered, but by the paper nothing is on it",
        "step 4 (tick 0, send): n1 sent 500 holding 100 by the paper",
    ]
    assert "end of the run: n1 recorded s1 by the paper, but the core never did" in problems


def test_a_restore_changes_nothing_in_the_paper() -> None:
    steps = textbook().steps
    with_restores: list[dict[str, Any]] = []
    for step in steps:
        with_restores.append(step)
        with_restores.append({"kind": "restore", "step": 0, "tick": step["tick"], "node": "n2"})
    assert replay(BALANCES, RING, with_restores).snapshots == replay(
        BALANCES, RING, steps).snapshots


# ------------------------------------------- compare.py sees every field


def simulated() -> Simulation:
    sim = Simulation({"a": 100, "b": 50, "c": 0}, [("a", "b"), ("b", "c"), ("c", "a"), ("b", "a")],
                     seed=4, max_delay=4)
    sim.transfer("a", "b", 30)
    sim.transfer("b", "a", 7)
    sim.snapshot("a", "s1")
    sim.transfer("a", "b", 5)
    sim.tick(2)
    sim.transfer("b", "c", 20)
    sim.snapshot("c", "s1")
    sim.snapshot("b", "s2")
    sim.restore("c")
    sim.transfer("c", "a", 1) if sim.core("c").balance else None
    sim.run_until_quiet()
    return sim


def test_the_real_core_matches_on_a_hand_driven_run() -> None:
    sim = simulated()
    assert len(sim.completed_snapshots) == 2
    assert oracle_mismatches(sim) == []
    in_flight = [m for d in sim.completed_snapshots for c in d["channels"] for m in c["messages"]]
    assert in_flight, "the run should have money in flight across some cut"


def _tampered(change: Any) -> list[str]:
    sim = simulated()
    doc = sim.completed_snapshots[0]
    change(doc)
    return oracle_mismatches(sim)


def _with_messages(doc: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in doc["channels"] if c["messages"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["nodes"]["b"].update(balance=d["nodes"]["b"]["balance"] + 1), "b.balance"),
        (lambda d: d["nodes"]["a"]["sent"].update(b=0), "a.sent"),
        (lambda d: d["nodes"]["a"]["received"].update(b=99), "a.received"),
        (lambda d: d["nodes"]["c"].update(initiated=not d["nodes"]["c"]["initiated"]),
         "c.initiated"),
        (lambda d: d.update(initiators=["a", "b", "c"]), "initiators"),
        (lambda d: d["nodes"]["b"].update(recorded_at="2000-01-01T00:00:09.999+00:00"),
         "b.recorded_at"),
        (lambda d: _with_messages(d)["messages"].append({"seq": 99, "amount": 1}), "channel "),
        (lambda d: _with_messages(d)["messages"][0].update(amount=12345), "channel "),
        (lambda d: d.update(status="aborted"), "complete"),
    ],
    ids=["balance", "sent", "received", "initiated", "initiators", "recorded_at",
         "extra-message", "amount", "status"],
)
def test_every_recorded_field_is_compared(change: Any, expected: str) -> None:
    problems = _tampered(change)
    assert problems and all(p.startswith("snapshot s1: ") for p in problems), problems
    assert any(expected in p for p in problems), problems


def test_the_order_of_in_flight_messages_is_compared() -> None:
    sim = Simulation({"a": 100, "b": 0}, [("a", "b"), ("b", "a")], seed=0, max_delay=5)
    sim.snapshot("b", "s1")
    for amount in (1, 2, 3):
        sim.transfer("a", "b", amount)
    sim.run_until_quiet()
    (doc,) = sim.completed_snapshots
    messages = _with_messages(doc)["messages"]
    assert [m["amount"] for m in messages] == [1, 2, 3]
    assert oracle_mismatches(sim) == []
    messages.reverse()
    (problem,) = oracle_mismatches(sim)
    assert problem.startswith("snapshot s1: channel a->b: core [{'seq': 3")


def test_the_schedule_json_round_trips_what_the_oracle_needs() -> None:
    sim = simulated()
    steps = [step_to_dict(s) for s in sim.schedule]
    assert replay(sim.initial_balances, sim.channels, copy.deepcopy(steps)).divergences == []
