"""The operator commands' command lines and texts (no cluster needed)."""

from __future__ import annotations

from deploy.cli import parse_args
from initiator import operations, options
from initiator.__main__ import build_parser, main
from protos import chandy_lamport_pb2 as pb


def test_status_alone_is_the_live_cluster_and_with_a_value_filters_the_list() -> None:
    parser = build_parser()
    live = parser.parse_args(["--status"])
    assert live.status is options.LIVE_STATUS and options.wanted(live)
    filtered = parser.parse_args(["--list", "--status", "complete"])
    assert filtered.status == "complete" and not options.wanted(filtered)


def test_operations_exclude_each_other(capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        build_parser().parse_args(["--pause-workload", "--restore", "s1"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_status_filter_without_list_is_refused(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--status", "aborted"]) == 2
    assert "--limit and --status go with --list" in capsys.readouterr().err


def test_cl_deploy_snapshot_passes_restore_and_pause_to_the_initiator() -> None:
    assert parse_args(["snapshot", "--restore", "s1"]).initiator_args == ["--restore", "s1"]
    assert parse_args(["snapshot", "--pause-workload"]).initiator_args == ["--pause-workload"]


def test_status_text_names_phase_backlog_and_reason() -> None:
    ok = pb.NodeStatus(
        node_id="n1", balance=900, epoch=2, workload_running=False, restore_phase="serving",
        channels=[pb.ChannelStatus(peer="n2", direction="out", unacked=3)],
        unacknowledged_frames=3,
    )  # fmt: skip
    stale = pb.NodeStatus(
        node_id="n2", balance=1000, epoch=0, restore_phase="stale",
        not_serving_reason="n1 has applied 5 frames on n2->n1 but n2 has sent only 0",
    )  # fmt: skip
    text = operations.format_status(
        [operations.NodeAnswer("n1", ok), operations.NodeAnswer("n2", stale)]
    )
    assert "n1" in text and "paused" in text and "->n2 3" in text
    assert "not serving: n1 has applied 5 frames" in text
    assert "epochs differ: [0, 2]" in text


def test_restore_text_and_exit_codes() -> None:
    record = {
        "restore": 1, "snapshot_id": "s1", "epoch": 1, "from_epoch": 0, "phase": "complete",
        "outcome": "complete", "started": "t0", "completed": "t1", "reason": "",
        "nodes": {}, "expected_balances": {"n1": 5, "n2": 7},
    }  # fmt: skip
    text = operations.format_restore(record)
    assert text.startswith("restore 1: snapshot s1 -> epoch 1 (from 0): complete")
    assert "n1 5, n2 7" in text
    assert operations.restore_exit_code(record) == 0
    assert operations.restore_exit_code({**record, "outcome": "aborted"}) == 3
    assert operations.format_restores([]) == "no restore yet"
