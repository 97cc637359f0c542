"""Unit tests of the pure Chandy-Lamport state machine (node/core.py)."""

from __future__ import annotations

import json

import pytest

from node.core import (
    InsufficientFunds,
    InvalidSnapshotId,
    InvalidState,
    LocalSnapshot,
    LocalSnapshotDone,
    Marker,
    MessageRecorded,
    NodeCore,
    ProtocolViolation,
    RecordedMessage,
    Send,
    SnapshotRecorded,
    Transfer,
    validate_snapshot_id,
)


def core(
    node_id: str = "n1", balance: int = 100, peers: tuple[str, ...] = ("n2", "n3")
) -> NodeCore:
    """A node of a complete graph: a channel each way to every peer."""
    return NodeCore(node_id, balance, incoming=peers, outgoing=peers)


def done(actions: list) -> LocalSnapshot:
    finished = [a for a in actions if isinstance(a, LocalSnapshotDone)]
    assert len(finished) == 1, actions
    return finished[0].snapshot


def markers(actions: list) -> list[tuple[str, str]]:
    return [
        (a.to, a.payload.snapshot_id)
        for a in actions
        if isinstance(a, Send) and isinstance(a.payload, Marker)
    ]


def state(c: NodeCore) -> str:
    """What the node saves on every event, plus what active snapshots recorded so far."""
    progress = {sid: repr(c.progress(sid)) for sid in c.active_snapshots}
    return json.dumps([c.to_dict(), progress], sort_keys=True)


def recorded_by(actions: list) -> dict[str, dict[str, list[RecordedMessage]]]:
    """What a node's store keeps from `actions`: MessageRecorded of unfinished snapshots."""
    kept: dict[str, dict[str, list[RecordedMessage]]] = {}
    for action in actions:
        if isinstance(action, MessageRecorded):
            kept.setdefault(action.snapshot_id, {}).setdefault(action.sender, [])
            kept[action.snapshot_id][action.sender].append(action.message)
        elif isinstance(action, LocalSnapshotDone):
            kept.pop(action.snapshot.snapshot_id, None)
    return kept


def finished_by(actions: list) -> list[str]:
    """What a node's store keeps from `actions`: the ids of finished snapshots, in order."""
    return [a.snapshot.snapshot_id for a in actions if isinstance(a, LocalSnapshotDone)]


# ---------------------------------------------------------------- transfers


def test_send_transfer_debits_and_numbers_per_channel() -> None:
    c = core()
    assert c.send_transfer("n2", 30) == [Send("n2", Transfer(1, 30))]
    assert c.send_transfer("n2", 5) == [Send("n2", Transfer(2, 5))]
    assert c.send_transfer("n3", 1) == [Send("n3", Transfer(1, 1))]
    assert c.balance == 64
    assert c.sent == {"n2": 2, "n3": 1}


def test_receive_transfer_credits_and_counts() -> None:
    c = core()
    assert c.receive("n2", Transfer(1, 10)) == []
    assert c.receive("n2", Transfer(2, 15)) == []
    assert c.balance == 125
    assert c.received == {"n2": 2, "n3": 0}


def test_overdraw_raises_insufficient_funds_and_changes_nothing() -> None:
    c = core(balance=10)
    before = state(c)
    with pytest.raises(InsufficientFunds, match="cannot send 11: balance is 10"):
        c.send_transfer("n2", 11)
    assert state(c) == before
    assert c.send_transfer("n2", 10) == [Send("n2", Transfer(1, 10))]  # exactly all is fine
    assert c.balance == 0


@pytest.mark.parametrize("amount", [0, -5])
def test_non_positive_amount_is_refused(amount: int) -> None:
    c = core()
    with pytest.raises(ValueError, match="positive"):
        c.send_transfer("n2", amount)
    assert c.balance == 100 and c.sent == {"n2": 0, "n3": 0}


def test_transfer_to_a_node_without_channel_is_refused() -> None:
    c = NodeCore("n1", 100, incoming=["n3"], outgoing=["n2"])
    with pytest.raises(ValueError, match="no outgoing channel to 'n3'"):
        c.send_transfer("n3", 1)


def test_negative_initial_balance_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        NodeCore("n1", -1, [], [])


# --------------------------------------------------------- protocol errors


@pytest.mark.parametrize(
    ("sender", "payload", "message"),
    [
        ("n9", Transfer(3, 5), "no incoming channel from 'n9'"),
        ("n9", Marker("s1"), "no incoming channel from 'n9'"),
        ("n2", Transfer(4, 5), "transfer 4 on n2->n1, expected 3"),  # a gap
        ("n2", Transfer(2, 5), "transfer 2 on n2->n1, expected 3"),  # a replay
        ("n2", Transfer(3, 0), "non-positive transfer amount 0"),
        ("n2", Transfer(3, -4), "non-positive transfer amount -4"),
        ("n2", Marker("../etc/passwd"), "invalid snapshot id"),
        ("n3", Marker("s0"), "second marker for snapshot s0 on n3->n1"),
    ],
)
def test_protocol_violations_change_nothing(
    sender: str, payload: Transfer | Marker, message: str
) -> None:
    c = core()
    c.receive("n2", Transfer(1, 1))
    c.receive("n2", Transfer(2, 1))
    c.receive("n3", Marker("s0"))  # a snapshot in progress, n2 still open
    before = state(c)
    with pytest.raises(ProtocolViolation, match=message):
        c.receive(sender, payload)
    assert state(c) == before
    # and the core keeps working afterwards
    c.receive("n2", Transfer(3, 2))
    assert done(c.receive("n2", Marker("s0"))).channels["n2"] == (RecordedMessage(3, 2),)


def test_replayed_transfer_is_a_protocol_violation() -> None:
    c = core()
    c.receive("n2", Transfer(1, 7))
    before = state(c)
    with pytest.raises(ProtocolViolation, match="transfer 1 on n2->n1, expected 2"):
        c.receive("n2", Transfer(1, 7))
    assert state(c) == before


def test_duplicate_marker_while_recording_is_refused() -> None:
    c = core()
    c.receive("n2", Marker("s1"))  # first marker: n2 channel closed at once
    before = state(c)
    with pytest.raises(ProtocolViolation, match="second marker for snapshot s1 on n2->n1"):
        c.receive("n2", Marker("s1"))
    assert state(c) == before
    # the snapshot still finishes normally
    assert done(c.receive("n3", Marker("s1"))).channels == {"n2": (), "n3": ()}


def test_marker_for_finished_snapshot_is_refused() -> None:
    c = core()
    c.receive("n2", Marker("s1"))
    c.receive("n3", Marker("s1"))
    before = state(c)
    with pytest.raises(ProtocolViolation, match="finished snapshot s1"):
        c.receive("n2", Marker("s1"))
    assert state(c) == before


# ---------------------------------------------------------- snapshot ids


@pytest.mark.parametrize(
    "good", ["s1", "a", "0", "snap-2026.11.21_x", "A" * 64, "latest-1", "latest.json"]
)
def test_valid_snapshot_ids(good: str) -> None:
    assert validate_snapshot_id(good) == good


@pytest.mark.parametrize("bad", ["", "-s", ".hidden", "a/b", "../x", "a b", "A" * 65, "é", "s1\n"])
def test_invalid_snapshot_ids(bad: str) -> None:
    with pytest.raises(InvalidSnapshotId):
        validate_snapshot_id(bad)
    c = core()
    before = state(c)
    with pytest.raises(InvalidSnapshotId):
        c.initiate_snapshot(bad)
    assert state(c) == before


@pytest.mark.parametrize("reserved", ["latest", "LATEST", "Latest"])
def test_reserved_snapshot_id_is_refused_by_initiate_and_by_a_marker(reserved: str) -> None:
    with pytest.raises(InvalidSnapshotId, match="reserved"):
        validate_snapshot_id(reserved)
    c = core()
    before = state(c)
    with pytest.raises(InvalidSnapshotId, match="reserved"):
        c.initiate_snapshot(reserved)
    with pytest.raises(ProtocolViolation, match="reserved"):
        c.receive("n2", Marker(reserved))
    assert state(c) == before


# --------------------------------------------------------- the algorithm


def test_initiator_records_and_sends_a_marker_on_every_outgoing_channel() -> None:
    c = NodeCore("n1", 80, incoming=["n3"], outgoing=["n2", "n4"])
    c.send_transfer("n2", 30)
    actions = c.initiate_snapshot("s1")
    assert actions == [
        SnapshotRecorded("s1"),
        Send("n2", Marker("s1")),
        Send("n4", Marker("s1")),
    ]
    assert c.active_snapshots == ("s1",)
    assert c.has_recorded("s1")
    snap = done(c.receive("n3", Marker("s1")))
    assert snap == LocalSnapshot(
        snapshot_id="s1",
        node_id="n1",
        balance=50,
        sent={"n2": 1, "n4": 0},
        received={"n3": 0},
        channels={"n3": ()},
        initiated=True,
    )
    assert c.active_snapshots == ()


def test_first_marker_records_closes_its_channel_and_records_the_others() -> None:
    c = core()
    c.receive("n3", Transfer(1, 5))  # before the cut: in the balance
    actions = c.receive("n2", Marker("s1"))
    assert actions == [SnapshotRecorded("s1"), Send("n2", Marker("s1")), Send("n3", Marker("s1"))]
    # in flight on n3 -> n1: recorded; n2 -> n1 is empty (its marker came first)
    c.receive("n3", Transfer(2, 7))
    c.receive("n3", Transfer(3, 8))
    c.receive("n2", Transfer(1, 100))  # after the cut on a closed channel: not recorded
    snap = done(c.receive("n3", Marker("s1")))
    assert snap.balance == 105
    assert snap.received == {"n2": 0, "n3": 1}
    assert snap.channels == {
        "n2": (),
        "n3": (RecordedMessage(2, 7), RecordedMessage(3, 8)),
    }
    assert snap.initiated is False
    # transfers after the marker on n3 are no longer recorded anywhere
    assert c.receive("n3", Transfer(4, 1)) == []
    assert c.balance == 221


def test_done_only_when_every_incoming_channel_is_closed() -> None:
    c = NodeCore("n1", 0, incoming=["a", "b", "c"], outgoing=["a"])
    c.initiate_snapshot("s1")
    assert c.receive("a", Marker("s1")) == []
    assert c.receive("c", Marker("s1")) == []
    assert c.active_snapshots == ("s1",)
    snap = done(c.receive("b", Marker("s1")))
    assert snap.channels == {"a": (), "b": (), "c": ()}


def test_node_with_a_single_incoming_channel_finishes_on_its_first_marker() -> None:
    c = NodeCore("n2", 10, incoming=["n1"], outgoing=["n3"])
    actions = c.receive("n1", Marker("s1"))
    assert actions[:2] == [SnapshotRecorded("s1"), Send("n3", Marker("s1"))]
    snap = done(actions)
    assert snap.channels == {"n1": ()} and snap.balance == 10


def test_initiator_with_a_single_incoming_channel_records_it() -> None:
    c = NodeCore("n1", 10, incoming=["n3"], outgoing=["n2"])
    c.initiate_snapshot("s1")
    c.receive("n3", Transfer(1, 4))
    snap = done(c.receive("n3", Marker("s1")))
    assert snap.channels == {"n3": (RecordedMessage(1, 4),)}
    assert snap.balance == 10


def test_single_node_without_channels_finishes_at_once() -> None:
    c = NodeCore("solo", 42, incoming=[], outgoing=[])
    actions = c.initiate_snapshot("s1")
    assert actions[0] == SnapshotRecorded("s1")
    assert done(actions).balance == 42


def test_directed_topology_markers_only_on_outgoing_channels() -> None:
    # n1 receives from n2 and n3, sends only to n4
    c = NodeCore("n1", 50, incoming=["n3", "n2"], outgoing=["n4"])
    assert c.incoming == ("n2", "n3") and c.outgoing == ("n4",)
    actions = c.receive("n3", Marker("s1"))
    assert markers(actions) == [("n4", "s1")]
    c.receive("n2", Transfer(1, 9))
    snap = done(c.receive("n2", Marker("s1")))
    assert snap.channels == {"n2": (RecordedMessage(1, 9),), "n3": ()}
    assert snap.sent == {"n4": 0}
    with pytest.raises(ProtocolViolation):
        c.receive("n4", Transfer(1, 1))


def test_transfers_are_recorded_only_on_open_channels() -> None:
    c = core()
    c.initiate_snapshot("s1")
    c.receive("n2", Transfer(1, 1))  # open: recorded
    c.receive("n2", Marker("s1"))  # closes n2
    c.receive("n2", Transfer(2, 2))  # closed: not recorded
    c.receive("n3", Transfer(1, 3))  # open: recorded
    snap = done(c.receive("n3", Marker("s1")))
    assert snap.channels == {"n2": (RecordedMessage(1, 1),), "n3": (RecordedMessage(1, 3),)}
    assert snap.balance == 100
    assert c.balance == 106


def test_later_sends_do_not_change_the_recorded_state() -> None:
    c = core()
    c.initiate_snapshot("s1")
    c.send_transfer("n2", 40)
    c.receive("n2", Marker("s1"))
    snap = done(c.receive("n3", Marker("s1")))
    assert snap.balance == 100 and snap.sent == {"n2": 0, "n3": 0}


def test_concurrent_snapshots_are_independent() -> None:
    c = core()
    c.initiate_snapshot("a")
    c.receive("n2", Transfer(1, 1))  # a: n2, n3 open
    assert markers(c.receive("n3", Marker("b"))) == [("n2", "b"), ("n3", "b")]
    assert c.active_snapshots == ("a", "b")
    assert c.receive("n2", Transfer(2, 2)) == [  # a and b record it
        MessageRecorded("a", "n2", RecordedMessage(2, 2)),
        MessageRecorded("b", "n2", RecordedMessage(2, 2)),
    ]
    assert c.receive("n3", Transfer(1, 3)) == [  # a records, b's n3 is closed
        MessageRecorded("a", "n3", RecordedMessage(1, 3)),
    ]
    assert c.receive("n2", Marker("a")) == []
    assert c.receive("n2", Transfer(3, 4)) == [MessageRecorded("b", "n2", RecordedMessage(3, 4))]
    snap_b = done(c.receive("n2", Marker("b")))
    snap_a = done(c.receive("n3", Marker("a")))
    assert snap_a.balance == 100 and snap_b.balance == 101
    assert snap_a.channels == {
        "n2": (RecordedMessage(1, 1), RecordedMessage(2, 2)),
        "n3": (RecordedMessage(1, 3),),
    }
    assert snap_b.channels == {"n2": (RecordedMessage(2, 2), RecordedMessage(3, 4)), "n3": ()}
    assert snap_a.initiated and not snap_b.initiated
    assert c.active_snapshots == ()


def test_second_initiator_of_the_same_id_after_a_marker_is_a_no_op() -> None:
    c = core()
    c.receive("n2", Marker("s1"))
    assert c.initiate_snapshot("s1") == []
    snap = done(c.receive("n3", Marker("s1")))
    assert snap.initiated is False


def test_initiating_twice_then_markers_from_another_initiator() -> None:
    c = core()
    first = c.initiate_snapshot("s1")
    assert c.initiate_snapshot("s1") == []
    assert len(markers(first)) == 2
    # the other initiator's markers close the channels, no second recording
    assert c.receive("n2", Marker("s1")) == []
    assert done(c.receive("n3", Marker("s1"))).initiated is True


def test_initiating_a_finished_snapshot_is_a_no_op() -> None:
    c = core()
    c.initiate_snapshot("s1")
    c.receive("n2", Marker("s1"))
    done(c.receive("n3", Marker("s1")))
    before = state(c)
    assert c.initiate_snapshot("s1") == []
    assert state(c) == before
    assert c.has_recorded("s1") and c.active_snapshots == ()


# ---------------------------------------------------------- persistence


def script(c: NodeCore, steps: list[tuple[str, object]]) -> list:
    out: list = []
    for kind, arg in steps:
        if kind == "send":
            to, amount = arg  # type: ignore[misc]
            out += c.send_transfer(to, amount)
        elif kind == "init":
            out += c.initiate_snapshot(arg)  # type: ignore[arg-type]
        else:
            sender, payload = arg  # type: ignore[misc]
            out += c.receive(sender, payload)
    return out


STEPS: list[tuple[str, object]] = [
    ("recv", ("n2", Transfer(1, 10))),
    ("init", "a"),
    ("send", ("n3", 20)),
    ("recv", ("n3", Marker("b"))),
    ("recv", ("n2", Transfer(2, 5))),
    ("recv", ("n3", Transfer(1, 6))),
    ("recv", ("n2", Marker("a"))),
    ("send", ("n2", 1)),
    ("recv", ("n2", Transfer(3, 2))),
    ("recv", ("n3", Marker("a"))),
    ("recv", ("n2", Marker("b"))),
]


@pytest.mark.parametrize("cut", range(len(STEPS) + 1))
def test_to_dict_from_dict_round_trip_mid_snapshot(cut: int) -> None:
    reference = core()
    expected = script(reference, STEPS)

    c = core()
    before = script(c, STEPS[:cut])
    saved = json.loads(json.dumps(c.to_dict()))  # really through JSON
    # the recorded messages come from the actions (what the node stores), not from c
    restored = NodeCore.from_dict(saved, recorded_by(before), finished_by(before))
    assert state(restored) == state(c)
    assert restored.active_snapshots == c.active_snapshots
    after = script(restored, STEPS[cut:])
    assert before + after == expected
    assert state(restored) == state(reference)
    # the restored core still refuses what the original refuses
    with pytest.raises(ProtocolViolation):
        restored.receive("n2", Marker("a"))


def test_the_script_records_messages_across_cuts() -> None:
    """The round trip above really restores recorded messages at some cuts."""
    recorded_at_cut = [recorded_by(script(core(), STEPS[:cut])) for cut in range(len(STEPS) + 1)]
    assert recorded_at_cut[6] == {
        "a": {"n2": [RecordedMessage(2, 5)], "n3": [RecordedMessage(1, 6)]},
        "b": {"n2": [RecordedMessage(2, 5)]},
    }
    assert recorded_at_cut[-1] == {}  # both finished: nothing left to keep


def test_to_dict_leaves_out_recorded_messages_and_stays_small() -> None:
    c = core(balance=0)
    c.initiate_snapshot("s1")
    small = len(json.dumps(c.to_dict()))
    actions = [a for i in range(1, 1001) for a in c.receive("n2", Transfer(i, 7))]
    assert len(actions) == 1000
    assert actions[-1] == MessageRecorded("s1", "n2", RecordedMessage(1000, 7))
    data = c.to_dict()
    assert data["recordings"]["s1"]["recorded_counts"] == {"n2": 1000, "n3": 0}  # type: ignore[index]
    assert len(json.dumps(data)) < small + 20  # only the counter grew
    restored = NodeCore.from_dict(json.loads(json.dumps(data)), recorded_by(actions))
    for finishing in (c, restored):
        finishing.receive("n2", Marker("s1"))
    snap = done(restored.receive("n3", Marker("s1")))
    assert snap == done(c.receive("n3", Marker("s1")))
    assert snap.channels["n2"] == tuple(RecordedMessage(i, 7) for i in range(1, 1001))
    assert snap.balance == 0 and snap.received == {"n2": 0, "n3": 0}


def recording_core() -> tuple[NodeCore, dict[str, object], list]:
    """A core recording s1 with transfers 1..3 recorded on n2 -> n1."""
    c = core()
    c.receive("n2", Transfer(1, 4))  # before the cut
    actions = c.initiate_snapshot("s1")
    for seq in (2, 3, 4):
        actions += c.receive("n2", Transfer(seq, seq))
    return c, json.loads(json.dumps(c.to_dict())), actions


R = RecordedMessage


@pytest.mark.parametrize(
    ("recorded", "message"),
    [
        ({}, "recorded on n2->n1 transfers 2..4, but the messages restored are none"),
        ({"s1": {"n2": [R(2, 2), R(3, 3)]}}, "transfers 2..4, but the messages restored are 2..3"),
        ({"s1": {"n2": [R(3, 3), R(4, 4)]}}, "transfers 2..4, but the messages restored are 3..4"),
        ({"s1": {"n2": [R(2, 2), R(4, 4), R(3, 3)]}}, "restored are 2, 4, 3"),
        (
            {"s1": {"n2": [R(2, 2), R(3, 3), R(4, 4), R(5, 5)]}},
            "transfers 2..4, but the messages restored are 2..5",
        ),
        (
            {"s1": {"n2": [R(2, 2), R(3, 3), R(4, 4)], "n3": [R(1, 1)]}},
            "recorded on n3->n1 transfers none, but the messages restored are 1",
        ),
        ({"s1": {"n9": [R(1, 1)]}}, "recorded messages from n9, which has no channel to n1"),
        ({"s9": {"n2": [R(1, 1)]}}, "recorded messages for snapshots that are not recording: s9"),
    ],
)
def test_from_dict_refuses_recorded_messages_that_do_not_match(
    recorded: dict, message: str
) -> None:
    _, saved, _ = recording_core()
    with pytest.raises(InvalidState, match=message):
        NodeCore.from_dict(saved, recorded)


def test_from_dict_with_the_recorded_messages_finishes_like_the_original() -> None:
    c, saved, actions = recording_core()
    restored = NodeCore.from_dict(saved, recorded_by(actions))
    restored.receive("n2", Marker("s1"))
    c.receive("n2", Marker("s1"))
    assert done(restored.receive("n3", Marker("s1"))) == done(c.receive("n3", Marker("s1")))
