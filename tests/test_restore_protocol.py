"""The restore protocol's pure parts: core install, participant, coordinator.

The last test model-checks the two-phase commit with Hypothesis: a
coordinator and N participants built from the real decision functions, with
lost messages, nodes killed before or after storing their answer, a
prepare deadline and coordinator restarts at any step. Whatever happens,
no restore is ever committed at one node and aborted at another, and once
messages flow again every restore finishes, all nodes on the same side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import restore as coord
from collector.restore import RestorePhase, RestoreRecord, RestoreRefused, plan_restore
from node import restore as part
from node.core import (
    InvalidRestore,
    Marker,
    NodeCore,
    RecordingAbandoned,
    Send,
    Transfer,
)
from node.restore import (
    Admission,
    Participant,
    ReceiverEnd,
    RestoreTarget,
    SenderEnd,
    Stale,
    judge_channel,
)
from simulator.scenario import Scenario

# ------------------------------------------------------------------- core


def test_install_restore_sets_balance_resets_counters_and_resends_in_order() -> None:
    core = NodeCore("n1", 100, ["n2", "n3"], ["n2", "n3"])
    core.send_transfer("n2", 10)
    core.receive("n3", Transfer(1, 5))
    actions = core.install_restore(1, 70, {"n3": [4, 6]})
    assert actions == [Send("n3", Transfer(1, 4)), Send("n3", Transfer(2, 6))]
    assert (core.epoch, core.balance) == (1, 70)
    assert core.sent == {"n2": 0, "n3": 2}
    assert core.received == {"n2": 0, "n3": 0}


def test_install_restore_abandons_active_recordings() -> None:
    core = NodeCore("n1", 100, ["n2"], ["n2"])
    core.initiate_snapshot("s1")
    actions = core.install_restore(3, 100, {})
    assert actions == [RecordingAbandoned("s1")]
    assert core.active_snapshots == ()
    # a snapshot in the new epoch records the new counters, and says its epoch
    core.initiate_snapshot("s2")
    done = core.receive("n2", Marker("s2"))
    snapshot = done[-1].snapshot  # type: ignore[union-attr]
    assert snapshot.epoch == 3 and snapshot.sent == {"n2": 0}


@pytest.mark.parametrize(
    ("epoch", "balance", "resend", "match"),
    [
        (0, 10, {}, "epoch"),
        (True, 10, {}, "epoch"),
        (2, -1, {}, "balance"),
        (2, 10, {"n9": [1]}, "no outgoing channel"),
        (2, 10, {"n2": [0]}, "positive"),
    ],
)
def test_install_restore_refuses_bad_targets_and_changes_nothing(
    epoch: object, balance: object, resend: object, match: str
) -> None:
    core = NodeCore("n1", 100, ["n2"], ["n2"])
    core.send_transfer("n2", 10)
    before = json.dumps(core.to_dict())
    with pytest.raises(InvalidRestore, match=match):
        core.install_restore(epoch, balance, resend)  # type: ignore[arg-type]
    assert json.dumps(core.to_dict()) == before


def test_epoch_survives_to_dict_and_old_saves_load_as_epoch_zero() -> None:
    core = NodeCore("n1", 100, ["n2"], ["n2"])
    core.install_restore(4, 50, {"n2": [5]})
    saved = json.loads(json.dumps(core.to_dict()))
    assert NodeCore.from_dict(saved).epoch == 4
    del saved["epoch"]
    assert NodeCore.from_dict(saved).epoch == 0


# ------------------------------------------------------------ participant


def target(
    restore: int = 1, epoch: int = 1, balance: int = 40, **resend: tuple[int, ...]
) -> RestoreTarget:
    return RestoreTarget(restore, epoch, "s1", balance, dict(resend))


def test_prepare_commit_moves_to_the_new_epoch_once() -> None:
    p = Participant("n1")
    p, vote = part.prepare(p, target(n2=(5,)), ["n2"], workload_running=True)
    assert vote.ok and p.phase is part.Phase.PREPARED
    assert part.may_originate(p) is not None  # no transfers or snapshot starts while prepared
    again, vote = part.prepare(p, target(n2=(5,)), ["n2"], workload_running=False)
    assert vote.ok and again == p  # idempotent, and keeps what the workload did before
    p, outcome = part.commit(p, 1, 1)
    assert outcome == part.Install(target(n2=(5,)), resume_workload=True)
    assert (p.epoch, p.last_restore, p.prepared) == (1, 1, None)
    same, outcome = part.commit(p, 1, 1)
    assert isinstance(outcome, part.Acknowledge) and same == p
    assert isinstance(part.commit(Participant("n2"), 1, 1)[1], part.Refuse)


def test_prepare_refusals() -> None:
    p, _ = part.prepare(Participant("n1"), target(), ["n2"], True)
    assert "prepared for restore 1" in part.prepare(p, target(2, 2), ["n2"], True)[1].reason
    assert not part.prepare(Participant("n1", epoch=3), target(1, 3), [], True)[1].ok
    assert not part.prepare(Participant("n1", last_restore=1, epoch=1), target(1, 2), [], True)[
        1
    ].ok
    refused = part.prepare(Participant("n1"), target(n9=(1,)), ["n2"], True)[1]
    assert not refused.ok and "n1->n9" in refused.reason


def test_abort_resumes_as_before_and_is_idempotent() -> None:
    p, _ = part.prepare(Participant("n1"), target(), [], workload_running=False)
    p, outcome = part.abort(p, 1)
    assert outcome == part.Resume(resume_workload=False) and p.phase is part.Phase.SERVING
    assert isinstance(part.abort(p, 1)[1], part.Acknowledge)


def test_participant_round_trips_through_json() -> None:
    p, _ = part.prepare(
        Participant("n1", epoch=2, last_restore=1), target(2, 3, n2=(1, 2)), ["n2"], False
    )
    p = part.mark_stale(p, "lost it")
    assert Participant.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_admission_by_epoch() -> None:
    serving = Participant("n1", epoch=2)
    assert part.admit(serving, 2) is Admission.APPLY
    assert part.admit(serving, 1) is Admission.OLD_EPOCH
    assert part.admit(serving, 3) is Admission.BEHIND
    prepared, _ = part.prepare(serving, target(1, 3), [], True)
    assert part.admit(prepared, 2) is Admission.APPLY  # the old epoch drains while prepared
    assert part.admit(prepared, 3) is Admission.NOT_YET
    assert part.admit(part.mark_stale(serving, "x"), 2) is Admission.NOT_SERVING


def test_a_stale_node_rejoins_by_commit_and_serves_again() -> None:
    p = part.mark_stale(Participant("n1"), "n2 has applied 50 frames on n1->n2 ...")
    assert not p.serving and part.may_originate(p) is not None
    p, vote = part.prepare(p, target(1, 4), [], workload_running=False)
    assert vote.ok
    p, outcome = part.commit(p, 1, 4)
    assert isinstance(outcome, part.Install) and p.serving and p.epoch == 4


def test_judge_channel_finds_wiped_or_old_data_dirs() -> None:
    ok = judge_channel("a", "b", SenderEnd(0, None, 50, 48), ReceiverEnd(0, None, 49))
    assert ok.flow and ok.stale is Stale.NOBODY
    # the sender's dir was wiped: it claims nothing sent, the receiver applied 50
    wiped_sender = judge_channel("a", "b", SenderEnd(0, None, 0, 1), ReceiverEnd(0, None, 50))
    assert wiped_sender.stale is Stale.SENDER and not wiped_sender.flow
    assert "a's data dir is stale" in wiped_sender.reason
    # the receiver's dir was wiped: the sender saw 40 acked, the receiver has 0
    wiped_receiver = judge_channel("a", "b", SenderEnd(0, None, 45, 41), ReceiverEnd(0, None, 0))
    assert wiped_receiver.stale is Stale.RECEIVER
    # an old copy of the receiver's dir: fewer applied than acked
    old_copy = judge_channel("a", "b", SenderEnd(0, None, 80, 71), ReceiverEnd(0, None, 30))
    assert old_copy.stale is Stale.RECEIVER
    # epochs: one end committed first -> wait; one end missed a restore -> stale
    assert (
        judge_channel("a", "b", SenderEnd(2, None, 1, 1), ReceiverEnd(1, 2, 9)).stale
        is Stale.NOBODY
    )
    behind = judge_channel("a", "b", SenderEnd(2, None, 1, 1), ReceiverEnd(1, None, 9))
    assert behind.stale is Stale.RECEIVER and "epoch 1" in behind.reason
    assert (
        judge_channel("a", "b", SenderEnd(0, None, 3, 4), ReceiverEnd(2, None, 0)).stale
        is Stale.SENDER
    )


# ------------------------------------------------------------ coordinator


def ring_document() -> dict[str, object]:
    scenario = Scenario(
        nodes={"n1": 100, "n2": 50, "n3": 10},
        channels=(("n1", "n2"), ("n2", "n3"), ("n3", "n1")),
    )
    sim = scenario.simulation()
    sim.transfer("n1", "n2", 30)
    sim.transfer("n2", "n3", 20)
    sim.snapshot("n1", "s1")
    sim.transfer("n3", "n1", 5)
    sim.run_until_quiet()
    return sim.document("s1")


RING = (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))


def test_plan_gives_each_sender_its_recorded_in_flight_transfers() -> None:
    document = ring_document()
    targets = plan_restore(document, ["n1", "n2", "n3"], RING, 160, restore=1, epoch=1)
    nodes = document["nodes"]  # type: ignore[index]
    for node, t in targets.items():
        assert t.balance == nodes[node]["balance"]
    for ch in document["channels"]:  # type: ignore[attr-defined]
        amounts = tuple(m["amount"] for m in ch["messages"])
        assert targets[ch["from"]].resend.get(ch["to"], ()) == amounts
    balances = coord.expected_balances(targets)
    assert sum(balances.values()) == 160
    assert any(t.resend for t in targets.values()), "the example must have money in flight"


def test_plan_refuses_what_cannot_be_restored() -> None:
    document = ring_document()
    with pytest.raises(RestoreRefused, match="nodes"):
        plan_restore(document, ["n1", "n2"], RING, 160, 1, 1)
    with pytest.raises(RestoreRefused, match="other channels"):
        plan_restore(document, ["n1", "n2", "n3"], RING[:2], 160, 1, 1)
    with pytest.raises(RestoreRefused, match="does not verify"):
        plan_restore(document, ["n1", "n2", "n3"], RING, 161, 1, 1)
    aborted = dict(document, status="aborted")
    with pytest.raises(RestoreRefused, match="only a complete"):
        plan_restore(aborted, ["n1", "n2", "n3"], RING, 160, 1, 1)
    tampered = json.loads(json.dumps(document))
    tampered["nodes"]["n1"]["balance"] += 1  # the stored verdict still says ok
    with pytest.raises(RestoreRefused, match="does not verify"):
        plan_restore(tampered, ["n1", "n2", "n3"], RING, 160, 1, 1)


def test_record_phases_and_json_round_trip() -> None:
    targets = {n: target(1, 2, balance=10) for n in ("n1", "n2")}
    r = coord.begin(1, "s1", 2, 1, targets, "t0")
    assert [m for _, m in coord.messages(r)] == [coord.Prepare(targets["n1"])] * 2
    r = coord.on_vote(r, "n1", True, "", "t1")
    assert r.phase is RestorePhase.PREPARING and r.waiting_for() == ("n2",)
    r = coord.on_vote(r, "n2", True, "", "t2")
    assert r.phase is RestorePhase.COMMITTING and r.decided == "commit"
    assert coord.recover(r, "t3") == r  # after the commit point a restart carries on
    r = coord.on_ack(r, "n1", "t4")
    r = coord.on_ack(r, "n2", "t5")
    assert (r.phase, r.outcome, r.completed) == (RestorePhase.COMPLETE, "complete", "t5")
    assert RestoreRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    early = coord.recover(coord.begin(2, "s1", 3, 2, targets, "t0"), "t1")
    assert early.phase is RestorePhase.ABORTING and "restarted" in early.reason
    refused = coord.on_vote(coord.begin(2, "s1", 3, 2, targets, "t0"), "n2", False, "busy", "t1")
    assert refused.decided == "abort" and "n2 refused to prepare: busy" in refused.reason
    assert coord.choose_epoch(2, [1, 5, 0]) == 6


# ------------------------------------------------- the protocol under crashes


@dataclass
class Node:
    state: Participant
    committed: set[int] = field(default_factory=set)  # restores installed here
    resumed: set[int] = field(default_factory=set)  # restores aborted here after a prepare


def deliver(node: Node, message: coord.Message, persisted: bool) -> tuple[str, bool, str] | None:
    """The node handles `message`; None if it was killed before answering.

    `persisted`: killed after storing its new state (the answer is lost),
    else before (nothing changed).
    """
    if isinstance(message, coord.Prepare):
        new, vote = part.prepare(node.state, message.target, [], workload_running=True)
        reply = ("vote", vote.ok, vote.reason)
    elif isinstance(message, coord.Commit):
        new, outcome = part.commit(node.state, message.restore, message.epoch)
        if isinstance(outcome, part.Refuse):
            raise AssertionError(f"a commit was refused: {outcome.reason}")
        if isinstance(outcome, part.Install) and persisted:
            node.committed.add(message.restore)
        reply = ("ack", True, "")
    else:
        new, result = part.abort(node.state, message.restore)
        if isinstance(result, part.Resume) and persisted:
            node.resumed.add(message.restore)
        reply = ("ack", True, "")
    if persisted:
        node.state = new
    return reply if persisted else None


step = st.tuples(
    st.sampled_from(
        ["deliver"] * 4 + ["lose", "kill-before", "kill-after", "deadline", "restart", "next"]
    ),
    st.integers(0, 4),
)


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(n=st.integers(1, 5), restores=st.integers(1, 3), steps=st.lists(step, max_size=60))
def test_two_phase_restore_is_atomic_under_crashes(
    n: int, restores: int, steps: list[tuple[str, int]]
) -> None:
    names = [f"n{i + 1}" for i in range(n)]
    nodes = {name: Node(Participant(name)) for name in names}
    schedule = iter(steps)
    for number in range(1, restores + 1):
        epoch = coord.choose_epoch(number - 1, (node.state.epoch for node in nodes.values()))
        targets = {name: RestoreTarget(number, epoch, "s", 10) for name in names}
        record = coord.begin(number, "s", epoch, epoch - 1, targets, "t")
        for kind, index in schedule:  # a chaotic stretch: this restore's share of the steps
            if record.finished or kind == "next":
                break
            pending = coord.messages(record)
            if kind == "deadline":
                record = coord.on_prepare_deadline(record, "t")
                continue
            if kind == "restart":
                record = coord.recover(record, "t")
                continue
            if not pending:
                continue
            name, message = pending[index % len(pending)]
            if kind == "lose":
                continue
            reply = deliver(nodes[name], message, persisted=kind != "kill-before")
            if reply is None or kind == "kill-after":
                continue
            if reply[0] == "vote":
                record = coord.on_vote(record, name, reply[1], reply[2], "t")
            else:
                record = coord.on_ack(record, name, "t")
            check_never_split(nodes)
        # then the network heals: every message is delivered until the restore ends
        for _ in range(4 * n + 4):
            if record.finished:
                break
            for name, message in coord.messages(record):
                reply = deliver(nodes[name], message, persisted=True)
                assert reply is not None
                if reply[0] == "vote":
                    record = coord.on_vote(record, name, reply[1], reply[2], "t")
                else:
                    record = coord.on_ack(record, name, "t")
            if record.phase is RestorePhase.PREPARING and not coord.messages(record):
                break
        assert record.finished, record
        check_never_split(nodes)
        states = [node.state for node in nodes.values()]
        assert all(s.prepared is None for s in states)
        if record.outcome == "complete":
            assert all(number in node.committed for node in nodes.values())
            assert {s.epoch for s in states} == {epoch}
        else:
            assert not any(number in node.committed for node in nodes.values())
            assert all(s.epoch < epoch for s in states)


def check_never_split(nodes: dict[str, Node]) -> None:
    committed = set().union(*(node.committed for node in nodes.values()))
    resumed = set().union(*(node.resumed for node in nodes.values()))
    assert not committed & resumed, f"restores both committed and aborted: {committed & resumed}"


def test_a_snapshot_recorded_across_two_epochs_is_aborted() -> None:
    from collector.document import NodeReport, build_document
    from node.core import LocalSnapshot

    def report(node: str, peer: str, epoch: int) -> NodeReport:
        return NodeReport(
            LocalSnapshot("s9", node, 10, {peer: 0}, {peer: 0}, {peer: ()}, False, epoch=epoch)
        )

    common = dict(
        snapshot_id="s9",
        initiators=["a"],
        started_at="",
        completed_at="",
        expected_total=20,
        node_ids=["a", "b"],
        channels=[("a", "b"), ("b", "a")],
    )
    same = build_document(**common, reports={"a": report("a", "b", 2), "b": report("b", "a", 2)})
    assert same["status"] == "complete" and same["epoch"] == 2
    mixed = build_document(**common, reports={"a": report("a", "b", 1), "b": report("b", "a", 2)})
    assert mixed["status"] == "aborted"
    assert "different epochs (a: 1, b: 2)" in mixed["verification"]["reason"]
