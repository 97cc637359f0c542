"""cl-simulate --trace and --svg, per-scenario folders, and the schedule adapter of the diagram."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from diagram import layout
from diagram.from_schedule import from_schedule
from simulator.__main__ import main
from simulator.engine import Simulation, step_to_dict

SCENARIOS = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"


def test_trace_prints_the_run_tick_by_tick(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([str(SCENARIOS / "ring-3.yaml"), "--out", str(tmp_path), "--trace"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "t=1 n1 starts snapshot s1" in lines
    assert "t=1 n1 records balance 225 (s1)" in lines
    assert "t=6 n1→n2 marker s1" in lines
    assert "t=6 n2 records balance 220 (s1)" in lines
    assert "t=0 n1 sends transfer #1 amount 50 to n2 (arrives t=2)" in lines
    ticks = [int(line.split()[0][2:]) for line in lines if line.startswith("t=")]
    assert ticks == sorted(ticks)


def test_each_scenario_writes_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ring = SCENARIOS / "ring-3.yaml"
    other = tmp_path / "other.yaml"
    other.write_text(ring.read_text().replace("seed: 3", "seed: 4"))
    assert main([str(ring)]) == 0
    assert main([str(other)]) == 0
    first = (tmp_path / "snapshots/sim/ring-3/s1.json").read_text()
    second = (tmp_path / "snapshots/sim/other/s1.json").read_text()
    assert first != second


def test_svg_dir_gets_one_diagram_per_snapshot(tmp_path: Path) -> None:
    out, svgs = tmp_path / "json", tmp_path / "svg"
    assert main([str(SCENARIOS / "concurrent.yaml"), "--out", str(out), "--svg", str(svgs)]) == 0
    written = sorted(p.stem for p in svgs.glob("*.svg"))
    assert written == sorted(p.stem for p in out.glob("*.json"))
    root = ET.fromstring((svgs / f"{written[0]}.svg").read_text())
    lanes = [e for e in root.iter() if (e.get("class") or "").startswith("lane")]
    assert len(lanes) >= 2
    assert "ticks" in "".join(root.itertext())


def test_svg_dir_that_cannot_be_created_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert (
        main(
            [
                str(SCENARIOS / "ring-3.yaml"),
                "--out",
                str(tmp_path / "o"),
                "--svg",
                str(blocker / "x"),
            ]
        )
        == 2
    )
    assert "cannot create" in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(25))
def test_schedule_diagram_crosses_exactly_the_recorded_transfers(seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(1, rng.randint(2, 6) + 1)]
    channels = [(a, b) for a in ids for b in ids if a != b and rng.random() < 0.7]
    channels += [(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))]
    sim = Simulation({n: 200 for n in ids}, sorted(set(channels)), seed=seed, max_delay=6)
    snapshots = []
    for step in range(40):
        src, dst = rng.choice(sim.channels)
        if sim.core(src).balance > 0:
            sim.transfer(src, dst, rng.randint(1, min(20, sim.core(src).balance)))
        if step in (8, 22):
            snapshots.append(sim.snapshot(rng.choice(ids), f"s{step}"))
        sim.tick(rng.randint(0, 2))
    sim.run_until_quiet()
    steps = [step_to_dict(s) for s in sim.schedule]
    for document in sim.completed_snapshots:
        space = from_schedule(steps, document)
        placed = layout(space)
        recorded = {
            (c["from"], c["to"], m["seq"]) for c in document["channels"] for m in c["messages"]
        }
        crossed = {
            (a.message.src, a.message.dst, a.message.seq)
            for a in placed.arrows
            if a.crossing is not None
        }
        assert crossed == recorded
        markers = sorted((m.src, m.dst) for m in space.messages if m.kind == "marker")
        assert markers == sorted(sim.channels)  # one marker per channel
        by_node = {p.node: p for p in space.processes}
        for m in space.messages:
            if m.kind == "transfer" and m.sent_at is not None and m.received_at is not None:
                src_rec = by_node[m.src].recorded_at
                dst_rec = by_node[m.dst].recorded_at
                assert src_rec is not None and dst_rec is not None
                assert (m.sent_at < src_rec and m.received_at > dst_rec) == m.recorded


def test_trace_names_restores_and_refusals() -> None:
    from simulator.trace import format_step

    message = {"type": "transfer", "seq": 3, "amount": 7}
    refuse = {"kind": "refuse", "tick": 9, "from": "n1", "to": "n2", "index": 4,
              "message": message, "epoch": 1}  # fmt: skip
    expected = "t=9 n2 refuses transfer #3 amount 7 from n1 (sent in epoch 1)"
    assert format_step(refuse, {}) == expected
    rollback = {"kind": "restore_snapshot", "tick": 5, "snapshot_id": "s1", "epoch": 2}
    assert format_step(rollback, {}) == "t=5 the cluster is rolled back to snapshot s1 (epoch 2)"
