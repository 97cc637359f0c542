"""Property tests: every snapshot is exactly the cut the paper's algorithm records.

Each run is simulated with the core under test (node/core.py's), then its
schedule (every send, delivery, initiation and restore, in order) is replayed
through the reference oracle (tests/oracle/reference.py, a naive
Chandy-Lamport written from the paper). For every snapshot, the recorded
balances, counters, in-flight messages (seq, amount, order), `initiated` per
node, the initiators, and when each node recorded and finished must be the
oracle's, exactly (tests/oracle/compare.py).

The runs: 2 to 30 nodes, rings with chords, stars and complete graphs (12 to
30 nodes), concurrent snapshots, several initiators of one id, node restores
(a node restarted from its saved state), many of them mid-snapshot, and
cluster rollbacks to a complete snapshot (restore_snapshot, a new epoch).
Example counts: tests/oracle/profiles.py (HYPOTHESIS_PROFILE=fast|slow).
A failure lists the differences and prints the run as a scenario YAML with
its seed, which `cl-simulate` replays.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from node.core import Marker
from simulator.engine import (
    DeliverStep,
    FinishStep,
    RecordStep,
    RestoreStep,
    Simulation,
    SimulationError,
)
from simulator.scenario import RestoreEvent, load_scenario, parse_scenario
from tests.mutants.cores import DropsMessageOnRestore, InitialStateCut
from tests.oracle import core_under_test
from tests.oracle.compare import oracle_mismatches
from tests.oracle.profiles import property_settings
from tests.test_simulator_properties import (
    Outcome,
    RunSpec,
    random_spec,
    replay_hint,
    run,
    run_specs,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"

SMALL = run_specs()
LARGE = run_specs(nodes=(8, 30), shapes=("ring+", "ring+", "ring", "star"), ops=(20, 120))
COMPLETE = run_specs(nodes=(12, 30), shapes=("complete",), ops=(10, 60))
RESTORES = run_specs(nodes=(2, 12), ops=(10, 80), restore_weight=4, rollback_weight=1)


def assert_oracle_agrees(spec: RunSpec) -> Outcome:
    """Run `spec` with the core under test; its snapshots must be the oracle's."""
    outcome = run(spec)
    problems = oracle_mismatches(outcome.simulation)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise AssertionError(
            f"the core's snapshots differ from the reference oracle's:\n{listed}\n"
            f"{replay_hint(outcome)}"
        )
    return outcome


def describe(outcome: Outcome) -> None:
    """What an example covered (pytest --hypothesis-show-statistics)."""
    docs = outcome.documents
    sim = outcome.simulation
    n = len(sim.node_ids)
    event(f"nodes: {'2-7' if n < 8 else '8-15' if n < 16 else '16-30'}")
    event(f"restores mid-snapshot with recorded messages: {restores_mid_recording(sim) > 0}")
    event(f"snapshots: {min(len(docs), 5)}{'+' if len(docs) >= 5 else ''}")
    event(f"several initiators of one id: {any(len(d['initiators']) > 1 for d in docs)}")
    event(f"restores: {sum(isinstance(e, RestoreEvent) for e in outcome.scenario.events) > 0}")
    event(f"cluster rolled back to a snapshot: {outcome.rollbacks > 0}")


@property_settings(300)
@given(spec=SMALL)
def test_the_oracle_agrees_on_small_topologies(spec: RunSpec) -> None:
    describe(assert_oracle_agrees(spec))


@property_settings(60)
@given(spec=LARGE)
def test_the_oracle_agrees_on_large_topologies(spec: RunSpec) -> None:
    describe(assert_oracle_agrees(spec))


@property_settings(25)
@given(spec=COMPLETE)
def test_the_oracle_agrees_on_complete_graphs(spec: RunSpec) -> None:
    describe(assert_oracle_agrees(spec))


@property_settings(200)
@given(spec=RESTORES)
def test_the_oracle_agrees_with_restores_mid_snapshot(spec: RunSpec) -> None:
    describe(assert_oracle_agrees(spec))


def test_the_oracle_agrees_on_random_runs() -> None:
    """The plain seeded generator of test_simulator_properties, through the oracle."""
    for seed in range(60):
        try:
            assert_oracle_agrees(random_spec(random.Random(seed)))
        except AssertionError as error:
            raise AssertionError(f"random_spec(random.Random({seed})): {error}") from error


@pytest.mark.parametrize("name", ["ring-3.yaml", "concurrent.yaml", "star-5.yaml"])
def test_the_oracle_agrees_on_the_shipped_scenarios(name: str) -> None:
    sim = load_scenario(SCENARIOS / name).run(core_factory=core_under_test.current())
    assert sim.completed_snapshots
    assert oracle_mismatches(sim) == []


# ------------------------------------------------- the generators reach the cases


class _Found(Exception):
    def __init__(self, spec: RunSpec) -> None:
        super().__init__("found")
        self.spec = spec


def _find(
    strategy: st.SearchStrategy[RunSpec], condition: Callable[[RunSpec], bool], tries: int = 200
) -> RunSpec:
    """The first of the derandomized examples of `strategy` that meets `condition`
    (no shrinking, unlike hypothesis.find: the example only has to exist)."""

    @settings(max_examples=tries, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(spec=strategy)
    def search(spec: RunSpec) -> None:
        if condition(spec):
            raise _Found(spec)

    try:
        search()
    except _Found as found:
        return found.spec
    raise AssertionError(f"none of {tries} examples of {strategy!r} meets the condition")


def test_the_generators_reach_30_nodes_and_complete_graphs_of_12_and_more() -> None:
    big = _find(LARGE, lambda s: len(s.balances) == 30)
    assert len(big.balances) == 30
    complete = _find(COMPLETE, lambda s: len(s.balances) >= 25)
    n = len(complete.balances)
    assert len(complete.channels) == n * (n - 1)


def restores_mid_recording(sim: Simulation) -> int:
    """How many restores hit a node while a snapshot it records holds in-flight messages."""
    open_channels: dict[tuple[str, str], set[str]] = {}  # (node, snapshot) -> still open
    holding: set[tuple[str, str]] = set()  # (node, snapshot) with messages recorded
    last_marker: tuple[str, str, str] | None = None
    hits = 0
    incoming = {n: {src for src, dst in sim.channels if dst == n} for n in sim.node_ids}
    for step in sim.schedule:
        if isinstance(step, DeliverStep):
            last_marker = None
            if isinstance(step.payload, Marker):
                last_marker = (step.src, step.dst, step.payload.snapshot_id)
                open_channels.get((step.dst, step.payload.snapshot_id), set()).discard(step.src)
            else:
                for (node, sid), still_open in open_channels.items():
                    if node == step.dst and step.src in still_open:
                        holding.add((node, sid))
        elif isinstance(step, RecordStep):
            still_open = set(incoming[step.node])
            if last_marker is not None and last_marker[1:] == (step.node, step.snapshot_id):
                still_open.discard(last_marker[0])
            open_channels[(step.node, step.snapshot_id)] = still_open
        elif isinstance(step, FinishStep):
            open_channels.pop((step.node, step.snapshot_id), None)
        elif isinstance(step, RestoreStep):
            hits += any(key[0] == step.node and key in holding for key in open_channels)
    return hits


def test_the_generators_reach_restores_mid_snapshot_and_concurrent_snapshots() -> None:
    """One example has it all: a node restarts while a snapshot it records holds
    recorded in-flight messages, overlapping snapshots, several initiators of one id."""

    def everything(spec: RunSpec) -> bool:
        outcome = run(spec, core_under_test.current())
        docs = outcome.documents
        overlapping = any(
            a["snapshot_id"] != b["snapshot_id"]
            and a["started_at"] < b["completed_at"]
            and b["started_at"] < a["completed_at"]
            for a in docs
            for b in docs
        )
        several = any(len(d["initiators"]) > 1 for d in docs)
        return restores_mid_recording(outcome.simulation) > 0 and overlapping and several

    assert everything(_find(RESTORES, everything))


# ----------------------------------------------------- the oracle can fail


def test_a_failure_prints_a_scenario_that_replays_it() -> None:
    """With a planted bug the property fails, and its YAML replays the same failure."""

    @settings(max_examples=50, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate])
    @given(spec=SMALL)
    def property_with_a_mutant(spec: RunSpec) -> None:
        assert_oracle_agrees(spec)

    with core_under_test.using(InitialStateCut), pytest.raises(AssertionError) as failure:
        property_with_a_mutant()
    message = str(failure.value)
    assert "differ from the reference oracle" in message
    assert "replay with `cl-simulate FILE.yaml`" in message
    scenario_yaml = message.split("replay with `cl-simulate FILE.yaml`:\n", 1)[1]
    scenario = parse_scenario(yaml.safe_load(scenario_yaml), "replay.yaml")
    assert oracle_mismatches(scenario.run(core_factory=InitialStateCut)) != []
    assert oracle_mismatches(scenario.run()) == []  # the real core passes the same run


def test_a_message_lost_on_restore_is_a_difference() -> None:
    def differences(spec: RunSpec) -> list[str]:
        try:
            return oracle_mismatches(run(spec, DropsMessageOnRestore).simulation)
        except SimulationError:
            return []  # a second restore trips the core's own check: not this test's point

    problems = differences(_find(RESTORES, lambda spec: bool(differences(spec))))
    assert any("channel" in p for p in problems), problems
