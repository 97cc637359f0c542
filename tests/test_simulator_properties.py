"""Property tests: every snapshot of every simulated run is a consistent cut.

Hypothesis draws a strongly connected topology (2-7 nodes), initial balances,
a simulator seed and delays, and a list of abstract operations that are
interpreted against the live state so that every one of them is valid:
transfers of amounts the sender has, snapshots (several at once, several
initiators of one id, started anywhere mid-traffic), clock ticks, and
save/restore of a node's core through JSON (to_dict/from_dict) plus the
recorded messages it emitted (MessageRecorded), as the node stores them.

The checks are written here, independently of collector/verify.py, from a
ledger of every transfer the test issued (and verify.py must agree):

* every snapshot completes, and every node and channel is in it;
* conservation: recorded balances + recorded in-flight amounts == total;
* per channel i -> j: the recorded messages are exactly transfers
  received_j[i]+1 .. sent_i[j], with the amounts the ledger says;
* per node: recorded balance == initial + what it had received - what it
  had sent, at its recorded counters (so the counters and the balance belong
  to the same instant).

These checks see whether a cut is consistent and correctly accounted, not
whether it is *the* cut Chandy-Lamport records for this execution:
tests/test_oracle_properties.py compares every snapshot with a reference
implementation replayed over the same schedule.

A failing example prints its RunSpec (seed included) and the same run as a
scenario YAML that `cl-simulate` replays. Example counts come from the
Hypothesis profile (tests/oracle/profiles.py): HYPOTHESIS_PROFILE=fast (the
default, a fixed derandomized set) or slow (new random examples, many more).
The core under test is node/core.py's, or a mutant (tests/oracle/core_under_test.py).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import Phase, event, given, note, settings
from hypothesis import strategies as st

from collector.verify import verify_snapshot
from node.core import LocalSnapshotDone, Marker, NodeCore, Send, Transfer
from simulator.engine import CoreFactory, Simulation, SimulationError
from simulator.scenario import (
    Event,
    RestoreEvent,
    RestoreSnapshotEvent,
    Scenario,
    SnapshotEvent,
    TickEvent,
    TransferEvent,
    apply_event,
)
from tests.mutants.cores import EarlyDoneCore, ForgetfulCore, LateMarkerCore
from tests.oracle import core_under_test
from tests.oracle.profiles import property_settings

Channel = tuple[str, str]

# Abstract operations; indices are taken modulo whatever they index.
#   ("transfer", src_index, dst_index, fraction_per_mille)
#   ("snapshot", node_index, join_existing)   join: a second initiator of a running id
#   ("multi", node_indices)                   several initiators of one new id at once
#   ("tick", ticks)
#   ("restore", node_index, mid_snapshot)   mid_snapshot: pick among nodes recording now
#   ("rollback", snapshot_index)     roll the cluster back to a complete snapshot
#                                    (restore_snapshot; only when none is running)
Op = tuple[Any, ...]
Shape = str  # "ring" | "ring+" (a ring plus random chords) | "star" | "complete"
SHAPES: tuple[Shape, ...] = ("ring+", "ring+", "ring", "star", "complete")


@dataclass(frozen=True)
class RunSpec:
    balances: tuple[int, ...]
    channels: tuple[Channel, ...]
    seed: int
    max_delay: int
    ops: tuple[Op, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(f"n{i + 1}" for i in range(len(self.balances)))


# ------------------------------------------------------------ generation


def strongly_connected(
    ids: Sequence[str], order: Sequence[int], extra: Iterable[Channel]
) -> list[Channel]:
    """A ring through `ids` in `order` (strongly connected) plus extra channels."""
    ring = [(ids[order[i]], ids[order[(i + 1) % len(order)]]) for i in range(len(order))]
    channels = dict.fromkeys(ring)
    for src, dst in extra:
        if src != dst:
            channels[(src, dst)] = None
    return sorted(channels)


@st.composite
def run_specs(
    draw: st.DrawFn,
    nodes: tuple[int, int] = (2, 7),
    shapes: Sequence[Shape] = SHAPES,
    ops: tuple[int, int] = (6, 80),
    restore_weight: int = 1,
    rollback_weight: int = 0,
) -> RunSpec:
    """A run on `nodes` (min, max) nodes of one of `shapes`, with `ops` operations."""
    n = draw(st.integers(*nodes), label="nodes")
    ids = [f"n{i + 1}" for i in range(n)]
    balance = st.one_of(st.integers(1, 1000), st.integers(1, 1000), st.just(0))
    balances = tuple(draw(st.lists(balance, min_size=n, max_size=n)))
    shape = draw(st.sampled_from(list(shapes)), label="shape")
    if shape == "star":
        channels = [e for leaf in ids[1:] for e in ((ids[0], leaf), (leaf, ids[0]))]
    elif shape == "complete":
        channels = [(a, b) for a in ids for b in ids if a != b]
    else:
        order = draw(st.permutations(range(n)))
        extra: list[Channel] = []
        if shape == "ring+":
            pairs = [(a, b) for a in ids for b in ids if a != b]
            extra = draw(st.lists(st.sampled_from(pairs), max_size=2 * n))
        channels = strongly_connected(ids, order, extra)
    index = st.integers(0, max(6, n - 1))
    by_kind = {
        "transfer": st.tuples(st.just("transfer"), index, index, st.integers(1, 1000)),
        "snapshot": st.tuples(st.just("snapshot"), index, st.booleans()),
        "multi": st.tuples(st.just("multi"), st.lists(index, min_size=2, max_size=4)),
        "tick": st.tuples(st.just("tick"), st.integers(0, 12)),
        "restore": st.tuples(st.just("restore"), index, st.booleans()),
        "rollback": st.tuples(st.just("rollback"), index),
    }
    kinds = ["transfer"] * 6 + ["tick"] * 2 + ["snapshot", "multi"] + ["restore"] * restore_weight
    kinds += ["rollback"] * rollback_weight
    op = st.sampled_from(kinds).flatmap(by_kind.__getitem__)
    drawn = draw(st.lists(op, min_size=ops[0], max_size=ops[1]))
    # every run takes at least one snapshot, somewhere in the traffic
    at = draw(st.integers(0, len(drawn)), label="first snapshot at")
    drawn = drawn[:at] + [("snapshot", draw(index), False)] + drawn[at:]
    return RunSpec(
        balances=balances,
        channels=tuple(channels),
        seed=draw(st.integers(0, 2**32 - 1), label="seed"),
        max_delay=draw(st.integers(1, 10), label="max_delay"),
        ops=tuple(drawn),
    )


def random_spec(rng: random.Random) -> RunSpec:
    """The same kind of run as `run_specs`, from a plain seeded generator."""
    n = rng.randint(2, 7)
    ids = [f"n{i + 1}" for i in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    pairs = [(a, b) for a in ids for b in ids if a != b]
    extra = rng.sample(pairs, rng.randint(0, min(len(pairs), 2 * n)))
    ops: list[Op] = []
    for _ in range(rng.randint(10, 60)):
        kind = rng.choice(["transfer"] * 3 + ["snapshot", "multi", "tick", "restore"])
        if kind == "transfer":
            ops.append((kind, rng.randrange(7), rng.randrange(7), rng.randint(1, 1000)))
        elif kind == "snapshot":
            ops.append((kind, rng.randrange(7), rng.random() < 0.3))
        elif kind == "multi":
            ops.append((kind, [rng.randrange(7) for _ in range(rng.randint(2, 4))]))
        elif kind == "tick":
            ops.append((kind, rng.randint(0, 12)))
        else:
            ops.append((kind, rng.randrange(7), rng.random() < 0.5))
    return RunSpec(
        balances=tuple(rng.randint(0, 1000) for _ in ids),
        channels=tuple(strongly_connected(ids, order, extra)),
        seed=rng.getrandbits(32),
        max_delay=rng.randint(1, 10),
        ops=tuple(ops),
    )


# ------------------------------------------------------------ running


@dataclass
class Outcome:
    scenario: Scenario
    documents: list[dict[str, Any]]
    ledger: dict[Channel, list[int]]  # channel -> amounts, transfer k at index k-1
    started: list[str]
    simulation: Simulation
    rollbacks: int = 0  # cluster restores (restore_snapshot): the ledger spans epochs then


RUNS = [0]  # how many runs this process simulated (tests/conftest.py reports it)
PROGRESS_FILE = os.environ.get("CL_PROGRESS_FILE")  # a line per 1000 runs, for long runs


def holds_recorded_messages(sim: Simulation, node: str) -> bool:
    """Whether a snapshot `node` is recording has recorded in-flight messages so far."""
    core = sim.core(node)
    for snapshot_id in core.active_snapshots:
        progress = core.progress(snapshot_id)
        if progress is not None and any(progress[0].channels.values()):
            return True
    return False


def run(spec: RunSpec, core_factory: CoreFactory | None = None) -> Outcome:
    """Interpret `spec`'s operations into concrete events, apply them, run until quiet.

    The core is `core_factory`, by default the core under test (node/core.py's)."""
    if core_factory is None:
        core_factory = core_under_test.current()
    RUNS[0] += 1
    if PROGRESS_FILE and RUNS[0] % 1000 == 0:
        with open(PROGRESS_FILE, "a") as progress:
            progress.write(f"{time.strftime('%H:%M:%S')} {RUNS[0]} runs\n")
    ids = spec.ids
    nodes = dict(zip(ids, spec.balances, strict=True))
    base = Scenario(nodes=nodes, channels=spec.channels, seed=spec.seed, max_delay=spec.max_delay)
    sim = base.simulation(core_factory=core_factory)
    events: list[Event] = []
    ledger: dict[Channel, list[int]] = {ch: [] for ch in spec.channels}
    started: list[str] = []
    rollbacks = 0
    outgoing = {node: [dst for src, dst in spec.channels if src == node] for node in ids}
    total = sum(spec.balances)

    def apply(event: Event) -> None:
        events.append(event)
        apply_event(sim, event)

    for op in spec.ops:
        kind = op[0]
        if kind == "transfer":
            src = ids[op[1] % len(ids)]
            dst = outgoing[src][op[2] % len(outgoing[src])]
            balance = sim.core(src).balance
            if balance == 0:
                continue
            amount = max(1, balance * op[3] // 1000)
            apply(TransferEvent(src, dst, amount))
            ledger[(src, dst)].append(amount)
        elif kind == "snapshot":
            node = ids[op[1] % len(ids)]
            pending = sim.pending_snapshots
            if op[2] and pending:
                apply(SnapshotEvent((node,), pending[op[1] % len(pending)]))
            else:
                started.append(f"p{len(started) + 1}")
                apply(SnapshotEvent((node,), started[-1]))
        elif kind == "multi":
            initiators = tuple(dict.fromkeys(ids[i % len(ids)] for i in op[1]))
            started.append(f"p{len(started) + 1}")
            apply(SnapshotEvent(initiators, started[-1]))
        elif kind == "tick":
            apply(TickEvent(op[1]))
        elif kind == "rollback":
            done = [d["snapshot_id"] for d in sim.completed_snapshots]
            if sim.pending_snapshots or not done:
                continue
            apply(RestoreSnapshotEvent(done[op[1] % len(done)]))
            rollbacks += 1
        else:
            pool: Sequence[str] = ids
            if len(op) > 2 and op[2]:
                # mid-snapshot: at a node whose recording holds in-flight messages,
                # letting a few ticks pass for one to appear if a snapshot is running
                for _ in range(2 * spec.max_delay):
                    recording = [n for n in ids if sim.core(n).active_snapshots]
                    holding = [n for n in recording if holds_recorded_messages(sim, n)]
                    if holding or not recording:
                        break
                    apply(TickEvent(1))
                pool = holding or recording or ids
            apply(RestoreEvent(pool[op[1] % len(pool)]))
        assert sim.total_money() == total, "the live system lost or created money"
    sim.run_until_quiet()
    assert sim.total_money() == total
    assert sim.pending_snapshots == (), f"snapshots never completed: {sim.pending_snapshots}"
    scenario = Scenario(
        nodes=nodes,
        channels=spec.channels,
        events=tuple(events),
        seed=spec.seed,
        max_delay=spec.max_delay,
    )
    return Outcome(scenario, sim.completed_snapshots, ledger, started, sim, rollbacks)


def check(outcome: Outcome, spec: RunSpec) -> None:
    """The consistent-cut properties, computed from the ledger (not verify.py)."""
    assert outcome.rollbacks == 0, "check() needs one ledger: a run without restore_snapshot"
    ids = spec.ids
    initial = dict(zip(ids, spec.balances, strict=True))
    total = sum(spec.balances)
    assert sorted(d["snapshot_id"] for d in outcome.documents) == sorted(outcome.started)
    for doc in outcome.documents:
        sid = doc["snapshot_id"]
        assert doc["status"] == "complete", sid
        nodes = doc["nodes"]
        assert sorted(nodes) == sorted(ids), sid
        assert sorted((c["from"], c["to"]) for c in doc["channels"]) == sorted(spec.channels)
        in_flight = 0
        for channel in doc["channels"]:
            src, dst = channel["from"], channel["to"]
            sent = nodes[src]["sent"][dst]
            received = nodes[dst]["received"][src]
            seqs = [m["seq"] for m in channel["messages"]]
            where = f"snapshot {sid} channel {src}->{dst}"
            assert len(seqs) == sent - received, f"{where}: {len(seqs)} != {sent} - {received}"
            assert seqs == list(range(received + 1, sent + 1)), f"{where}: seqs {seqs}"
            amounts = [m["amount"] for m in channel["messages"]]
            assert amounts == outcome.ledger[(src, dst)][received:sent], f"{where}: amounts"
            in_flight += sum(amounts)
        for node_id, node in nodes.items():
            came_in = sum(
                sum(outcome.ledger[(peer, node_id)][:count])
                for peer, count in node["received"].items()
            )
            went_out = sum(
                sum(outcome.ledger[(node_id, peer)][:count]) for peer, count in node["sent"].items()
            )
            assert node["balance"] == initial[node_id] + came_in - went_out, (
                f"snapshot {sid}: balance of {node_id} does not match its counters"
            )
        balances = sum(node["balance"] for node in nodes.values())
        assert balances + in_flight == total, f"snapshot {sid}: money not conserved"
        # collector/verify.py must agree, both in the document and recomputed
        assert doc["verification"]["ok"] is True, sid
        assert verify_snapshot(total, nodes, doc["channels"], initiators=doc["initiators"])[
            "ok"
        ] is True


def replay_hint(outcome: Outcome) -> str:
    """How to replay a run: its seed and the scenario YAML for `cl-simulate`."""
    return (
        f"(seed {outcome.scenario.seed}) replay with `cl-simulate FILE.yaml`:\n"
        f"{outcome.scenario.to_yaml()}"
    )


def run_and_check(spec: RunSpec, core_factory: CoreFactory | None = None) -> Outcome:
    """Run and check `spec`; a failure carries the run as a replayable scenario."""
    outcome = run(spec, core_factory)
    try:
        check(outcome, spec)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{replay_hint(outcome)}") from error
    return outcome


# ------------------------------------------------------------ properties


@property_settings(300)
@given(spec=run_specs())
def test_every_snapshot_is_a_consistent_cut(spec: RunSpec) -> None:
    note(f"RunSpec seed={spec.seed} max_delay={spec.max_delay} channels={spec.channels}")
    outcome = run_and_check(spec)
    # what the examples covered (pytest --hypothesis-show-statistics)
    docs = outcome.documents
    event(f"snapshots: {min(len(docs), 5)}{'+' if len(docs) >= 5 else ''}")
    recorded = sum(len(c["messages"]) for d in docs for c in d["channels"])
    size = "0" if not recorded else "1-9" if recorded < 10 else "10+"
    event(f"recorded in-flight messages: {size}")
    multi = any(len(d["initiators"]) > 1 for d in docs)
    event(f"several initiators of one id: {multi}")
    overlap = any(
        a["snapshot_id"] != b["snapshot_id"]
        and a["started_at"] < b["completed_at"]
        and b["started_at"] < a["completed_at"]
        for a in docs
        for b in docs
    )
    event(f"overlapping snapshots: {overlap}")
    event(f"restores: {any(isinstance(e, RestoreEvent) for e in outcome.scenario.events)}")


def test_random_runs_are_consistent_cuts() -> None:
    """The plain-random generator (used for the broken cores) passes with the real core."""
    for seed in range(60):
        spec = random_spec(random.Random(seed))
        try:
            run_and_check(spec)
        except (AssertionError, SimulationError) as error:
            raise AssertionError(f"random_spec(random.Random({seed})): {error}") from error


def test_simulator_is_deterministic() -> None:
    for seed in range(20):
        spec = random_spec(random.Random(1000 + seed))
        first = run(spec)
        second = run(spec)
        assert first.documents == second.documents
        assert first.scenario == second.scenario
        # and the dumped scenario replays to the very same documents
        replayed = first.scenario.run(core_factory=core_under_test.current())
        assert replayed.completed_snapshots == first.documents


def test_different_seeds_give_different_interleavings() -> None:
    spec = random_spec(random.Random(7))
    runs = {
        repr(run(RunSpec(spec.balances, spec.channels, s, 10, spec.ops)).documents)
        for s in range(10)
    }
    assert len(runs) > 1


# ------------------------------------------------------------ broken cores


@pytest.mark.parametrize("broken", [ForgetfulCore, LateMarkerCore, EarlyDoneCore])
def test_a_broken_core_is_caught(broken: type[NodeCore]) -> None:
    """The property check fails for cores that get the algorithm wrong."""
    inconsistent = 0
    for seed in range(100):
        spec = random_spec(random.Random(seed))
        try:
            outcome = run(spec, broken)
        except (AssertionError, SimulationError):
            continue  # caught too, but not by the cut checks we want to exercise
        try:
            check(outcome, spec)
        except AssertionError as error:
            assert "channel" in str(error) or "conserved" in str(error) or "balance" in str(error)
            inconsistent += 1
    # an inconsistent cut, not merely an incomplete snapshot, in a good share of runs
    assert inconsistent >= 10, f"{broken.__name__}: only {inconsistent} of 100 runs caught"


def test_the_hypothesis_property_catches_a_broken_core() -> None:
    """The @given property itself (not just the helpers) fails, with a replayable seed."""

    @settings(
        max_examples=200,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # finding it is the point; shrinking only costs time
    )
    @given(spec=run_specs())
    def property_with_forgetful_core(spec: RunSpec) -> None:
        run_and_check(spec, ForgetfulCore)

    with pytest.raises(AssertionError, match=r"\(seed \d+\) replay with `cl-simulate"):
        property_with_forgetful_core()


def test_a_broken_core_is_caught_with_an_independent_check_not_only_verify() -> None:
    """The test's own checks (not only verify.py) see the forgetful core."""
    for seed in range(100):
        spec = random_spec(random.Random(seed))
        outcome = run(spec, ForgetfulCore)
        bad = [d for d in outcome.documents if not d["verification"]["ok"]]
        if bad:
            for doc in bad:
                doc["verification"] = {"ok": True}  # pretend verify.py said yes
            with pytest.raises(AssertionError, match="channel|conserved|balance"):
                check(outcome, spec)
            return
    pytest.fail("ForgetfulCore produced no bad snapshot in 100 runs")


def test_late_marker_core_really_sends_markers_late() -> None:
    """Sanity check of the broken core itself: it puts a transfer before the marker."""
    c = LateMarkerCore("n1", 100, ["n2"], ["n2"])
    assert c.initiate_snapshot("s1")[1:] == []
    actions = c.send_transfer("n2", 5)
    assert actions[0] == Send("n2", Transfer(1, 5)) and actions[1] == Send("n2", Marker("s1"))
    assert not any(isinstance(a, LocalSnapshotDone) for a in actions)
