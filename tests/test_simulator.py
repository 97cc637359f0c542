"""The deterministic simulator: engine, scenario files and the cl-simulate CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from node.core import Marker, Transfer
from simulator.__main__ import main
from simulator.engine import (
    DeliveryFailed,
    InvalidTopology,
    Simulation,
    SimulationError,
    SnapshotRejected,
    TransferRejected,
    UnknownNode,
    tick_timestamp,
)
from simulator.scenario import (
    Scenario,
    ScenarioError,
    SnapshotEvent,
    TickEvent,
    TransferEvent,
    load_scenario,
    parse_scenario,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"
RING = [("n1", "n2"), ("n2", "n3"), ("n3", "n1")]


def ring(seed: int = 0, max_delay: int = 5) -> Simulation:
    return Simulation({"n1": 100, "n2": 50, "n3": 0}, RING, seed=seed, max_delay=max_delay)


# ------------------------------------------------------------------ engine


def test_channels_are_fifo_whatever_the_delays() -> None:
    for seed in range(30):
        sim = ring(seed=seed, max_delay=20)
        for _ in range(10):
            sim.transfer("n1", "n2", 1)
            sim.tick(1)
        # n2's core raises ProtocolViolation on any out-of-order transfer
        sim.run_until_quiet()
        assert sim.core("n2").received == {"n1": 10}
        assert sim.core("n2").balance == 60


def test_messages_take_between_one_and_max_delay_ticks() -> None:
    sim = ring(seed=3, max_delay=4)
    sim.transfer("n1", "n2", 5)
    assert sim.in_flight("n1", "n2") == (Transfer(1, 5),)
    assert sim.total_money() == 150
    sim.tick(0)
    assert sim.in_flight("n1", "n2") == (Transfer(1, 5),)
    sim.tick(4)
    assert sim.in_flight("n1", "n2") == ()
    assert sim.core("n2").balance == 55
    assert sim.now == 4


def test_run_until_quiet_completes_a_snapshot_with_money_in_flight() -> None:
    sim = ring(seed=1, max_delay=5)
    sim.transfer("n1", "n2", 30)
    sim.transfer("n2", "n3", 20)
    sim.snapshot("n2", "s1")
    sim.transfer("n1", "n2", 5)
    assert sim.pending_snapshots == ("s1",)
    assert sim.in_flight("n2", "n3") == (Transfer(1, 20), Marker("s1"))
    used = sim.run_until_quiet()
    assert used == sim.now and sim.quiet
    assert sim.pending_snapshots == ()
    [doc] = sim.completed_snapshots
    assert doc["status"] == "complete" and doc["verification"]["ok"]
    assert doc["initiators"] == ["n2"]
    # n2 recorded before 30 and 5 arrived: both in flight on n1 -> n2
    assert [m["amount"] for c in doc["channels"] for m in c["messages"]] == [30, 5]
    assert doc["nodes"]["n2"]["balance"] == 30
    assert doc["started_at"] == "2000-01-01T00:00:00.000+00:00"
    assert sim.total_money() == 150


def test_timestamps_come_from_ticks() -> None:
    assert tick_timestamp(0) == "2000-01-01T00:00:00.000+00:00"
    assert tick_timestamp(1234) == "2000-01-01T00:00:01.234+00:00"
    sim = ring()
    sim.tick(7)
    sim.snapshot("n1", "s1")
    sim.run_until_quiet()
    doc = sim.document("s1")
    assert doc["started_at"] == tick_timestamp(7)
    assert doc["completed_at"] == tick_timestamp(sim.now)
    assert doc["duration_seconds"] == (sim.now - 7) / 1000


def test_document_of_an_unfinished_snapshot_says_who_waits_for_whom() -> None:
    sim = ring(max_delay=5)
    sim.tick(3)
    sim.snapshot("n1", "s1")  # n1 records at once; its marker needs >= 1 tick
    doc = sim.document("s1")
    assert doc["status"] == "aborted"
    assert doc["missing"] == ["n2", "n3"]
    assert doc["waiting"] == {"n1": ["n3"]}
    assert doc["nodes"]["n1"]["complete"] is False
    assert doc["nodes"]["n1"]["recorded_at"] == tick_timestamp(3)
    assert doc["verification"]["reason"] == (
        "n2, n3 never recorded their state; n1 was still waiting for a marker (from n3)"
    )
    sim.run_until_quiet()
    assert sim.document("s1")["status"] == "complete"


def test_same_seed_same_documents_different_seed_different_run() -> None:
    def go(seed: int) -> tuple[list[dict[str, Any]], int]:
        sim = Simulation(
            {"a": 500, "b": 500, "c": 500},
            [(x, y) for x in "abc" for y in "abc" if x != y],
            seed=seed,
            max_delay=9,
        )
        for i in range(12):
            sim.transfer("abc"[i % 3], "abc"[(i + 1) % 3], 10 + i)
            if i == 4:
                sim.snapshot("a", "s1")
            if i == 6:
                sim.snapshot("c", "s2")
                sim.snapshot("b", "s2")
            sim.tick(i % 3)
        sim.run_until_quiet()
        return sim.completed_snapshots, sim.now

    assert json.dumps(go(5)) == json.dumps(go(5))
    assert len({json.dumps(go(seed)) for seed in range(8)}) > 1


def test_snapshot_ids_generated_and_several_initiators() -> None:
    sim = ring()
    assert sim.snapshot("n1") == "snap-1"
    assert sim.snapshot("n3", "snap-1") == "snap-1"
    assert sim.snapshot("n2", "snap-2") == "snap-2"
    assert sim.snapshot("n3") == "snap-3"  # skips ids in use
    sim.run_until_quiet()
    docs = {d["snapshot_id"]: d for d in sim.completed_snapshots}
    assert docs["snap-1"]["initiators"] == ["n1", "n3"]
    assert all(d["verification"]["ok"] for d in docs.values())


def test_restore_keeps_the_run_identical() -> None:
    def go(restore: bool) -> list[dict[str, Any]]:
        sim = ring(seed=9)
        sim.transfer("n1", "n2", 40)
        sim.snapshot("n1", "s1")
        sim.tick(2)
        if restore:
            sim.restore("n2")
            sim.restore("n3")
        sim.transfer("n2", "n3", 10)
        sim.run_until_quiet()
        return sim.completed_snapshots

    assert go(True) == go(False)


def test_single_node_snapshot_completes_at_once() -> None:
    sim = Simulation({"solo": 9}, [])
    sim.snapshot("solo", "s1")
    [doc] = sim.completed_snapshots
    assert doc["nodes"]["solo"]["balance"] == 9 and doc["verification"]["ok"]


def test_statistics() -> None:
    sim = ring()
    sim.transfer("n1", "n2", 10)
    sim.snapshot("n1", "s1")
    stats = sim.statistics()
    assert (stats.tick, stats.delivered, stats.in_flight_messages, stats.in_flight_money) == (
        0,
        0,
        2,
        10,
    )
    assert stats.snapshots_pending == 1
    sim.run_until_quiet()
    assert sim.statistics().snapshots_completed == 1
    assert sim.statistics().delivered == 4


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: s.transfer("n1", "n2", 101), TransferRejected,
         "transfer n1 -> n2 of 101 at tick 0: n1 cannot send 101: balance is 100"),
        (lambda s: s.transfer("n1", "n3", 1), TransferRejected, "no channel n1 -> n3"),
        (lambda s: s.transfer("n1", "n2", 0), TransferRejected, "positive integer"),
        (lambda s: s.transfer("n9", "n2", 1), UnknownNode, "unknown node 'n9'"),
        (lambda s: s.snapshot("n7"), UnknownNode, "unknown node 'n7'"),
        (lambda s: s.snapshot("n1", "bad/id"), SnapshotRejected, "invalid snapshot id"),
        (lambda s: s.restore("x"), UnknownNode, "restore x at tick 0: unknown node 'x'"),
        (lambda s: s.tick(-1), SimulationError, "tick count"),
        (lambda s: s.in_flight("n2", "n1"), SimulationError, "no channel n2 -> n1"),
        (lambda s: s.document("nope"), SimulationError, "no snapshot 'nope'"),
    ],
)
def test_errors_name_the_event(call: Any, error: type[Exception], message: str) -> None:
    sim = ring()
    with pytest.raises(error, match=message.replace("(", r"\(")):
        call(sim)
    assert sim.total_money() == 150 and sim.quiet


def test_reusing_a_completed_snapshot_id_is_refused() -> None:
    sim = ring()
    sim.snapshot("n1", "s1")
    sim.run_until_quiet()
    with pytest.raises(SnapshotRejected, match="snapshot s1 already completed"):
        sim.snapshot("n2", "s1")


@pytest.mark.parametrize(
    ("nodes", "channels", "message"),
    [
        ({"a": 1, "b": 1}, [("a", "b")], "markers cannot reach a from b"),
        ({"a": 1, "b": 1}, [("a", "c"), ("b", "a")], "unknown node 'c'"),
        ({"a": 1, "b": 1}, [("a", "a")], "to itself"),
        ({"a": 1, "b": 1}, [("a", "b"), ("a", "b"), ("b", "a")], "duplicate"),
        ({}, [], "at least one node"),
    ],
)
def test_invalid_topologies(nodes: dict[str, int], channels: list, message: str) -> None:
    with pytest.raises(InvalidTopology, match=message):
        Simulation(nodes, channels)


def test_bad_parameters() -> None:
    with pytest.raises(SimulationError, match="max_delay"):
        Simulation({"a": 1}, [], max_delay=0)
    with pytest.raises(SimulationError, match="initial balance of a"):
        Simulation({"a": -1}, [])


def test_a_core_refusing_a_message_is_a_delivery_failure() -> None:
    sim = ring()
    sim.snapshot("n1", "s1")
    sim.core("n2").receive("n1", Marker("s1"))  # behind the simulator's back
    with pytest.raises(DeliveryFailed, match="n2 refused marker s1 on n1 -> n2"):
        sim.run_until_quiet()


# ---------------------------------------------------------------- scenarios


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_full_scenario() -> None:
    scenario = parse_scenario(
        {
            "seed": 4,
            "max_delay": 3,
            "nodes": [{"id": "a", "balance": 5, "address": "a:1"}, {"id": "b", "balance": 0}],
            "topology": "ring",
            "events": [
                {"transfer": {"from": "a", "to": "b", "amount": 5}},
                {"snapshot": {"node": "b"}},
                {"snapshot": {"nodes": ["a", "b"], "id": "s2"}},
                {"snapshot": "a"},
                {"tick": 2},
                {"restore": "a"},
            ],
        },
        "x.yaml",
    )
    assert scenario.nodes == {"a": 5, "b": 0}
    assert scenario.channels == (("a", "b"), ("b", "a"))
    assert scenario.events[:3] == (
        TransferEvent("a", "b", 5),
        SnapshotEvent(("b",), None),
        SnapshotEvent(("a", "b"), "s2"),
    )
    assert scenario.events[4] == TickEvent(2)
    sim = scenario.run()
    assert sorted(d["snapshot_id"] for d in sim.completed_snapshots) == ["s2", "snap-1", "snap-2"]
    # the YAML form round-trips
    assert parse_scenario(scenario.to_dict(), "x.yaml") == scenario


def test_default_topology_is_complete() -> None:
    scenario = parse_scenario({"nodes": {"a": 1, "b": 2, "c": 3}})
    assert len(scenario.channels) == 6
    assert scenario.seed == 0 and scenario.max_delay == 5 and scenario.events == ()


BAD = [
    ("nodes: [", "s.yaml: not valid YAML"),
    ("- 1", "s.yaml: expected a mapping at the top level"),
    ("nodes: {a: 1}\nspeed: 3", "s.yaml: speed: unknown field"),
    ("seed: 1", "s.yaml: nodes: missing or empty"),
    ("nodes: {a: x}", "s.yaml: nodes.a: expected a non-negative integer balance, got 'x'"),
    ("nodes: {a: -1}", "s.yaml: nodes.a: expected a non-negative integer balance"),
    ("nodes: {1a: 1}", "s.yaml: nodes.1a: '1a' is not a valid node id"),
    ("nodes: [{id: a}]", "s.yaml: nodes[0].balance: missing"),
    ("nodes: [{id: a, balance: 1}, {id: a, balance: 2}]", "s.yaml: nodes[1].id: duplicate"),
    ("nodes: [{id: a, balance: 1, colour: red}]", "s.yaml: nodes[0].colour: unknown field"),
    ("nodes: [{id: a, balance: true}]", "s.yaml: nodes[0].balance: expected a non-negative"),
    ("nodes: {a: 1}\nseed: x", "s.yaml: seed: expected an integer"),
    ("nodes: {a: 1}\nmax_delay: 0", "s.yaml: max_delay: expected an integer >= 1"),
    ("nodes: {a: 1, b: 1}\ntopology: mesh", "s.yaml: topology: 'mesh' is not one of"),
    ("nodes: {a: 1, b: 1}\ntopology: ring\nchannels: [[a, b]]", "s.yaml: channels: give either"),
    ("nodes: {a: 1, b: 1}\nchannels: [[a, b]]", "s.yaml: channels: markers cannot reach a from b"),
    ("nodes: {a: 1, b: 1}\nchannels: [[a, c]]", "s.yaml: channels[0]: unknown node 'c'"),
    ("nodes: {a: 1, b: 1}\nchannels: [[a, a]]", "s.yaml: channels[0]: channel from a to itself"),
    ("nodes: {a: 1}\nevents: {tick: 1}", "s.yaml: events: expected a list"),
    ("nodes: {a: 1}\nevents: [wait]", "s.yaml: events[0]: expected a mapping with exactly one"),
    ("nodes: {a: 1}\nevents: [{tick: 1, restore: a}]", "s.yaml: events[0]: expected a mapping"),
    ("nodes: {a: 1}\nevents: [{sleep: 1}]", "s.yaml: events[0].sleep: unknown event"),
    ("nodes: {a: 1}\nevents: [{tick: -2}]", "s.yaml: events[0].tick: expected a number of ticks"),
    ("nodes: {a: 1}\nevents: [{restore: b}]", "s.yaml: events[0].restore: unknown node 'b'"),
    (
        "nodes: {a: 1, b: 1}\nevents: [{tick: 1}, {transfer: {from: a, to: b}}]",
        "s.yaml: events[1].transfer.amount: missing",
    ),
    (
        "nodes: {a: 1, b: 1}\nevents: [{transfer: {from: a, to: b, amount: 1.5}}]",
        "s.yaml: events[0].transfer.amount: expected a positive integer, got 1.5",
    ),
    (
        "nodes: {a: 1, b: 1}\nevents: [{transfer: {from: a, to: z, amount: 1}}]",
        "s.yaml: events[0].transfer.to: unknown node 'z'",
    ),
    (
        "nodes: {a: 1, b: 1}\nevents: [{transfer: {from: a, to: b, amount: 1, memo: x}}]",
        "s.yaml: events[0].transfer.memo: unknown field",
    ),
    (
        "nodes: {a: 1, b: 1, c: 1}\ntopology: ring\n"
        "events: [{transfer: {from: a, to: c, amount: 1}}]",
        "s.yaml: events[0].transfer: there is no channel a -> c",
    ),
    ("nodes: {a: 1}\nevents: [{snapshot: {id: s1}}]", "s.yaml: events[0].snapshot: give exactly"),
    (
        "nodes: {a: 1}\nevents: [{snapshot: {node: a, id: ../x}}]",
        "s.yaml: events[0].snapshot.id: invalid snapshot id",
    ),
    (
        "nodes: {a: 1}\nevents: [{snapshot: {nodes: [a, q]}}]",
        "s.yaml: events[0].snapshot.nodes[1]: unknown node 'q'",
    ),
    (
        "nodes: {a: 1}\nevents: [{snapshot: {nodes: [a, a]}}]",
        "s.yaml: events[0].snapshot.nodes: a node is listed twice",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_scenarios_give_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    error = str(info.value)
    assert "\n" not in error
    assert error.startswith(str(tmp_path)), error
    assert message in error, error


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "nope.yaml")


def test_runtime_errors_name_the_event_index(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "nodes: {a: 10, b: 0}\nevents:\n"
        "  - transfer: {from: a, to: b, amount: 10}\n"
        "  - tick: 1\n"
        "  - transfer: {from: a, to: b, amount: 1}\n",
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(path).run()
    assert str(info.value) == (
        f"{path}: events[2]: transfer a -> b of 1 at tick 1: a cannot send 1: balance is 0"
    )


def test_reusing_a_finished_snapshot_id_in_a_scenario(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "nodes: {a: 1, b: 1}\nevents:\n"
        "  - snapshot: {node: a, id: s1}\n  - tick: 20\n  - snapshot: {node: b, id: s1}\n",
    )
    with pytest.raises(ScenarioError, match=r"events\[2\]: .*s1 already completed"):
        load_scenario(path).run()


# --------------------------------------------------------------------- CLI


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.yaml")))
def test_example_scenarios_run_green(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([str(SCENARIOS / name), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = sorted(out.iterdir())
    assert files and len(lines) == 1 + len(files)
    for path in files:
        doc = json.loads(path.read_text())
        assert doc["status"] == "complete" and doc["verification"]["ok"]
        summary = f"{doc['snapshot_id']}  complete  verified ok"
        assert any(line.startswith(summary) for line in lines)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_example_scenarios_cover_what_they_claim() -> None:
    ring3 = load_scenario(SCENARIOS / "ring-3.yaml").run()
    [doc] = ring3.completed_snapshots
    assert doc["verification"]["conservation"]["in_flight"] > 0
    concurrent = load_scenario(SCENARIOS / "concurrent.yaml").run()
    docs = {d["snapshot_id"]: d for d in concurrent.completed_snapshots}
    assert docs["s2"]["initiators"] == ["n1", "n3"]
    assert docs["s1"]["started_at"] < docs["s2"]["started_at"] < docs["s1"]["completed_at"]
    star = load_scenario(SCENARIOS / "star-5.yaml").run()
    assert len(star.completed_snapshots) == 2 and len(star.node_ids) == 5


README_SCENARIOS = ("ring-3.yaml", "concurrent.yaml", "star-5.yaml")


def test_readme_names_the_example_scenarios() -> None:
    readme = (SCENARIOS.parent.parent / "README.md").read_text()
    assert sorted(README_SCENARIOS) == sorted(p.name for p in SCENARIOS.glob("*.yaml"))
    assert all(f"`{name}`" in readme for name in README_SCENARIOS)


@pytest.mark.parametrize("name", README_SCENARIOS)
def test_example_scenarios_verify_for_every_seed(name: str) -> None:
    """The README's `--seed 42  # another interleaving` must work on its own
    examples: star-5 failed for seeds 1, 11, 13, ... (the hub spent all its
    money at tick 0 and had to send again before anything reached it)."""
    scenario = load_scenario(SCENARIOS / name)
    for seed in range(31):
        try:
            sim = scenario.run(seed=seed)
        except ScenarioError as error:
            raise AssertionError(f"{name} --seed {seed}: {error}") from error
        assert not sim.pending_snapshots, (name, seed)
        assert sim.completed_snapshots, (name, seed)
        for doc in sim.completed_snapshots:
            assert doc["status"] == "complete", (name, seed, doc["snapshot_id"])
            assert doc["verification"]["ok"], (name, seed, doc["snapshot_id"])


def test_cli_is_reproducible_and_seed_overrides(tmp_path: Path) -> None:
    scenario = SCENARIOS / "concurrent.yaml"
    for name, seed in (("a", []), ("b", []), ("c", ["--seed", "99"])):
        assert main([str(scenario), "--out", str(tmp_path / name), *seed]) == 0

    def files(name: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}

    assert files("a") == files("b")
    assert files("a") != files("c")


def test_cli_bad_scenario_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "nodes: {a: 1}\nevents: [{tick: x}]")
    assert main([str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"cl-simulate: {path}: events[0].tick: expected a number of ticks >= 0, got 'x'\n"
    assert not (tmp_path / "o").exists()


def test_cli_exits_1_when_verification_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "nodes: {a: 10, b: 0}\nevents: [{snapshot: a}]")
    original = Scenario.run

    def tampered(self: Scenario, seed: int | None = None, core_factory: Any = None) -> Simulation:
        sim = original(self, seed)
        sim.completed_snapshots[0]["verification"]["ok"] = False  # as if a check failed
        return sim

    monkeypatch.setattr(Scenario, "run", tampered)
    assert main([str(path), "--out", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "snap-1  complete  verification FAILED" in captured.out
    assert "1 of 1 snapshots failed" in captured.err
    assert (tmp_path / "o" / "snap-1.json").exists()


def test_cli_default_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([str(SCENARIOS / "ring-3.yaml")]) == 0
    # Each scenario writes into its own folder, so another one's s1 survives.
    assert (tmp_path / "snapshots" / "sim" / "ring-3" / "s1.json").is_file()


def test_cli_unwritable_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(SCENARIOS / "ring-3.yaml"), "--out", str(blocker / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["file"]
