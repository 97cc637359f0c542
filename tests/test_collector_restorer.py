"""The collector's restore driver with real files, real decisions and real cores.

The participants here are node/restore.py's decisions and a NodeCore each,
called directly instead of over gRPC (the transport is the one thing left
out); a node "down" raises Unreachable, a coordinator "killed" stops at a
chosen write to restores/<n>.json, and a new coordinator starts from the
files, as the collector does after a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.restore import RestorePhase, RestoreRecord, RestoreRefused, expected_balances
from collector.restorer import Refused, RestoreBusy, RestoreCoordinator, Unreachable
from collector.restores import RestoreLog
from node import restore as part
from node.core import NodeCore, Send
from node.restore import Participant, RestoreTarget
from simulator.scenario import Scenario

NODES = {"n1": 100, "n2": 50, "n3": 10}
RING = (("n1", "n2"), ("n2", "n3"), ("n3", "n1"), ("n1", "n3"))


def snapshot_document() -> dict[str, Any]:
    sim = Scenario(nodes=NODES, channels=RING, seed=5, max_delay=4).simulation()
    sim.transfer("n1", "n2", 30)
    sim.transfer("n1", "n3", 7)
    sim.snapshot("n2", "s1")
    sim.transfer("n3", "n1", 5)
    sim.transfer("n1", "n2", 11)
    sim.run_until_quiet()
    return sim.document("s1")


class Killed(BaseException):
    """The coordinator process died here."""


class Nodes:
    """Participants: the real decisions and cores, reached by direct calls."""

    def __init__(self) -> None:
        self.state = {n: Participant(n) for n in NODES}
        self.cores = {
            n: NodeCore(n, b, [s for s, d in RING if d == n], [d for s, d in RING if s == n])
            for n, b in NODES.items()
        }
        self.down: set[str] = set()
        self.sent: dict[str, list[Send]] = {n: [] for n in NODES}
        self.workload = dict.fromkeys(NODES, True)

    def _reach(self, node_id: str) -> None:
        if node_id in self.down:
            raise Unreachable(f"{node_id} is down")

    def epoch(self, node_id: str) -> int:
        self._reach(node_id)
        return self.state[node_id].epoch

    def prepare(self, node_id: str, target: RestoreTarget) -> tuple[bool, str]:
        self._reach(node_id)
        new, vote = part.prepare(
            self.state[node_id], target, self.cores[node_id].outgoing, self.workload[node_id]
        )
        self.state[node_id] = new
        if vote.ok:
            self.workload[node_id] = False
        return vote.ok, vote.reason

    def commit(self, node_id: str, restore: int, epoch: int) -> None:
        self._reach(node_id)
        new, outcome = part.commit(self.state[node_id], restore, epoch)
        if isinstance(outcome, part.Refuse):
            raise Refused(outcome.reason)
        if isinstance(outcome, part.Install):
            t = outcome.target
            actions = self.cores[node_id].install_restore(t.epoch, t.balance, t.resend)
            self.sent[node_id] = [a for a in actions if isinstance(a, Send)]
            self.workload[node_id] = outcome.resume_workload
        self.state[node_id] = new

    def abort(self, node_id: str, restore: int) -> None:
        self._reach(node_id)
        new, outcome = part.abort(self.state[node_id], restore)
        if isinstance(outcome, part.Resume):
            self.workload[node_id] = outcome.resume_workload
        self.state[node_id] = new


def coordinator(
    tmp_path: Path, nodes: Nodes, kill_at_write: int | None = None, **kw: Any
) -> RestoreCoordinator:
    writes = []

    def on_write(record: RestoreRecord) -> None:
        writes.append(record.phase)
        if kill_at_write is not None and len(writes) == kill_at_write:
            raise Killed(record.phase.value)

    return RestoreCoordinator(
        RestoreLog(tmp_path),
        nodes,
        list(NODES),
        RING,
        sum(NODES.values()),
        prepare_timeout=kw.pop("prepare_timeout", 2.0),
        on_write=on_write,
        **kw,
    )


def on_disk(tmp_path: Path, number: int = 1) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "restores" / f"{number}.json").read_text())
    return data


def assert_restored(nodes: Nodes, document: dict[str, Any], epoch: int = 1) -> None:
    recorded = {
        (c["from"], c["to"]): [m["amount"] for m in c["messages"]] for c in document["channels"]
    }
    for node_id, core in nodes.cores.items():
        assert core.epoch == epoch
        assert core.balance == document["nodes"][node_id]["balance"]
        resent = [(a.to, a.payload.amount) for a in nodes.sent[node_id]]  # type: ignore[union-attr]
        assert resent == [
            (d, x) for (s, d), xs in sorted(recorded.items()) if s == node_id for x in xs
        ]
    in_flight = sum(sum(v) for v in recorded.values())
    assert sum(c.balance for c in nodes.cores.values()) + in_flight == sum(NODES.values())


def assert_untouched(nodes: Nodes) -> None:
    for node_id, core in nodes.cores.items():
        assert (core.epoch, core.balance) == (0, NODES[node_id])
        assert nodes.state[node_id].prepared is None
        assert nodes.workload[node_id] is True, f"{node_id}: workload not resumed"


def test_a_restore_commits_everywhere_and_is_recorded(tmp_path: Path) -> None:
    document = snapshot_document()
    assert any(c["messages"] for c in document["channels"]), "the example needs in-flight money"
    nodes = Nodes()
    c = coordinator(tmp_path, nodes)
    record = c.drive(c.start(document))
    assert record.outcome == "complete"
    assert_restored(nodes, document)
    saved = on_disk(tmp_path)
    assert saved["outcome"] == "complete" and saved["epoch"] == 1 and saved["completed"]
    assert saved["snapshot_id"] == "s1" and sorted(saved["nodes"]) == sorted(NODES)
    assert saved["expected_balances"] == expected_balances(record.targets)
    # the workload ran before the prepare, so it runs again; paused before, it stays paused
    assert all(nodes.workload[n] is True for n in NODES)
    nodes.workload = dict.fromkeys(NODES, False)
    assert c.drive(c.start(document)).epoch == 2
    assert_restored(nodes, document, epoch=2)
    assert all(nodes.workload[n] is False for n in NODES)


def test_refused_plans_write_nothing(tmp_path: Path) -> None:
    nodes = Nodes()
    c = coordinator(tmp_path, nodes)
    with pytest.raises(RestoreRefused, match="only a complete"):
        c.start(dict(snapshot_document(), status="aborted"))
    nodes.down.add("n2")
    with pytest.raises(RestoreRefused, match="cannot reach n2"):
        c.start(snapshot_document())
    assert RestoreLog(tmp_path).numbers() == []


def test_a_node_down_at_prepare_aborts_and_everyone_resumes(tmp_path: Path) -> None:
    nodes = Nodes()
    c = coordinator(tmp_path, nodes, prepare_timeout=0.6)
    record = c.start(snapshot_document())
    nodes.down.add("n3")
    record = c.drive(record, timeout=3)
    # n3 never voted: decided abort, but it has to hear it too before "aborted"
    assert record.phase is RestorePhase.ABORTING and "n3" in record.reason
    nodes.down.clear()
    record = c.drive(record)
    assert record.outcome == "aborted"
    assert_untouched(nodes)


def test_a_refusing_node_aborts_the_restore(tmp_path: Path) -> None:
    nodes = Nodes()
    nodes.state["n2"] = Participant("n2", epoch=7)  # it has seen a newer epoch: its vote is no
    c = coordinator(tmp_path, nodes)
    # choose_epoch already goes past it; force the clash by pretending n2 reports epoch 0
    nodes.epoch = lambda node_id: 0  # type: ignore[method-assign]
    record = c.drive(c.start(snapshot_document()))
    assert record.outcome == "aborted" and "n2 refused to prepare" in record.reason
    assert all(nodes.cores[n].epoch == 0 for n in NODES)


@pytest.mark.parametrize("n3_slow", [False, True])
def test_coordinator_killed_before_the_commit_point_aborts_on_restart(
    tmp_path: Path, n3_slow: bool
) -> None:
    """Killed right after writing phase=preparing: either before any Prepare went
    out, or (n3 slow to answer) once n1 and n2 are prepared and paused."""
    nodes = Nodes()
    c = coordinator(tmp_path, nodes, kill_at_write=2 if n3_slow else 1)
    with pytest.raises(Killed, match="preparing"):
        record = c.start(snapshot_document())  # write 1
        nodes.down.add("n3")
        c.drive(record)  # write 2: n1 and n2 voted
    nodes.down.clear()
    if n3_slow:
        assert nodes.state["n1"].prepared is not None and nodes.workload["n1"] is False
    restarted = coordinator(tmp_path, nodes)
    record = restarted.recover()
    assert record is not None and record.phase is RestorePhase.ABORTING
    record = restarted.drive(record)
    assert record.outcome == "aborted" and "restarted" in record.reason
    assert_untouched(nodes)


def test_coordinator_killed_once_complete_has_nothing_to_recover(tmp_path: Path) -> None:
    nodes = Nodes()
    document = snapshot_document()
    c = coordinator(tmp_path, nodes, kill_at_write=3)  # preparing, committing, complete
    with pytest.raises(Killed, match="complete"):
        c.drive(c.start(document))
    assert coordinator(tmp_path, nodes).recover() is None
    assert_restored(nodes, document)


def test_coordinator_killed_after_the_commit_point_completes_on_restart(tmp_path: Path) -> None:
    nodes = Nodes()
    document = snapshot_document()
    c = coordinator(tmp_path, nodes)
    record = c.start(document)
    killer = coordinator(tmp_path, nodes, kill_at_write=1)  # its first write: committing
    with pytest.raises(Killed, match="committing"):
        killer.drive(record)
    assert on_disk(tmp_path)["phase"] == "committing"
    assert all(nodes.cores[n].epoch == 0 for n in NODES)  # nobody committed yet
    restarted = coordinator(tmp_path, nodes)
    recovered = restarted.recover()
    assert recovered is not None and recovered.phase is RestorePhase.COMMITTING
    assert restarted.drive(recovered).outcome == "complete"
    assert_restored(nodes, document)


def test_a_node_down_during_commit_gets_it_when_back(tmp_path: Path) -> None:
    nodes = Nodes()
    document = snapshot_document()
    c = coordinator(tmp_path, nodes)
    record = c.start(document)
    record = c.drive(record, timeout=0)  # one round: every vote in, committing written
    assert record.phase is RestorePhase.COMMITTING
    nodes.down.add("n2")
    record = c.drive(record, timeout=1.5)
    assert record.phase is RestorePhase.COMMITTING and record.waiting_for() == ("n2",)
    with pytest.raises(RestoreBusy, match="restore 1"):
        c.start(document)
    nodes.down.clear()
    assert c.drive(record).outcome == "complete"
    assert_restored(nodes, document)


def test_a_node_that_lost_its_prepared_state_is_prepared_again_after_the_commit_point(
    tmp_path: Path,
) -> None:
    nodes = Nodes()
    document = snapshot_document()
    c = coordinator(tmp_path, nodes)
    record = c.drive(c.start(document), timeout=0)
    assert record.phase is RestorePhase.COMMITTING
    nodes.state["n3"] = part.mark_stale(Participant("n3"), "data dir wiped")  # lost everything
    assert c.drive(record).outcome == "complete"
    assert_restored(nodes, document)
    assert nodes.state["n3"].serving
