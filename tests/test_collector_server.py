"""The Collector service over real gRPC, fed with fake node reports."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs.store import CertDir, cluster_identities
from collector.server import CollectorServer
from collector.testing import (
    as_progress,
    consistent_reports,
    report_to_pb,
    small_cluster,
)
from common.config import ClusterConfig
from common.tls import TlsFiles, open_channel
from node.testing import free_port
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc
from tests.snapshot_check import assert_verified_snapshot


class Running:
    def __init__(self, config: ClusterConfig, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.server = CollectorServer(config, str(directory), "127.0.0.1", 0)
        self.server.start()
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.CollectorStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=0.5)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    collector = Running(small_cluster(timeout=1.5), tmp_path / "snapshots")
    yield collector
    collector.close()


def _report_all(running: Running, snapshot_id: str) -> None:
    for report in consistent_reports(running.config, snapshot_id).values():
        running.stub.ReportLocalSnapshot(report_to_pb(report), timeout=5)


def test_complete_snapshot_is_stored_and_served(running: Running) -> None:
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    assert running.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="s1")).status == "pending"
    _report_all(running, "s1")
    reply = running.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="s1"))
    assert reply.status == "complete"
    document = json.loads(reply.json)
    config = running.config
    assert_verified_snapshot(document, config.expected_total, config.node_ids, config.channels)
    on_disk = json.loads((running.directory / "s1.json").read_text())
    assert on_disk == document
    assert json.loads((running.directory / "latest.json").read_text()) == document
    latest = running.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="latest"))
    assert latest.snapshot_id == "s1"
    listed = running.stub.ListSnapshots(pb.ListSnapshotsRequest()).snapshots
    assert [(s.snapshot_id, s.status, s.json) for s in listed] == [("s1", "complete", "")]
    assert not (running.directory / ".pending" / "s1").exists()


def test_get_unknown_snapshot_is_not_found(running: Running) -> None:
    for snapshot_id in ("nope", "latest"):
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=snapshot_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="../x"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_invalid_reports_are_refused_and_never_written(running: Running) -> None:
    good = report_to_pb(consistent_reports(running.config, "s1")["n1"])
    bad_id = pb.LocalSnapshot()
    bad_id.CopyFrom(good)
    bad_id.snapshot_id = "../../escape"
    unknown_node = pb.LocalSnapshot()
    unknown_node.CopyFrom(good)
    unknown_node.node_id = "n9"
    extra_channel = pb.LocalSnapshot()
    extra_channel.CopyFrom(good)
    extra_channel.channels.add(sender="n2")
    for bad, message in [
        (bad_id, "invalid snapshot id"),
        (unknown_node, "unknown node 'n9'"),
        (extra_channel, "reported twice"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.ReportLocalSnapshot(bad, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (caught.value.details() or "")
    assert list((running.directory / ".pending").iterdir()) == []
    assert not (running.directory / "escape.json").exists()
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="ok", initiators=["zz"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_duplicate_and_late_reports_do_not_rewrite(running: Running) -> None:
    reports = consistent_reports(running.config, "s1")
    n1 = report_to_pb(reports["n1"])
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    running.stub.ReportLocalSnapshot(n1)
    running.stub.ReportLocalSnapshot(n1)  # a retry: acknowledged, idempotent
    _report_all(running, "s1")
    path = running.directory / "s1.json"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    running.stub.ReportLocalSnapshot(n1)  # late: acknowledged and ignored
    changed = pb.LocalSnapshot()
    changed.CopyFrom(n1)
    changed.balance += 1
    running.stub.ReportLocalSnapshot(changed)  # late too: ignored, not a conflict
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_conflicting_report_refused(running: Running) -> None:
    n1 = report_to_pb(consistent_reports(running.config, "s1")["n1"])
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    running.stub.ReportLocalSnapshot(n1)
    n1.balance += 1
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.ReportLocalSnapshot(n1)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_snapshot_without_all_reports_is_aborted_after_timeout(running: Running) -> None:
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    running.stub.ReportLocalSnapshot(report_to_pb(consistent_reports(running.config, "s1")["n1"]))
    messages = list(running.stub.WaitSnapshot(pb.WaitSnapshotRequest(snapshot_id="s1"), timeout=10))
    last = messages[-1]
    assert last.status == "aborted"
    assert list(last.missing) == ["n2", "n3"]
    document = json.loads(last.json)
    assert document["missing"] == ["n2", "n3"]
    assert json.loads((running.directory / "s1.json").read_text()) == document


def test_progress_reports_name_the_culprit_of_an_aborted_snapshot(running: Running) -> None:
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    reports = consistent_reports(running.config, "s1")
    for node in ("n1", "n2"):
        early = report_to_pb(as_progress(reports[node], ["n3"]))
        running.stub.ReportLocalSnapshot(early)
        running.stub.ReportLocalSnapshot(early)  # a retry: acknowledged
    stream = running.stub.WaitSnapshot(pb.WaitSnapshotRequest(snapshot_id="s1"), timeout=10)
    first = next(stream)
    assert (first.status, list(first.reported), list(first.missing)) == (
        "pending",
        [],
        ["n1", "n2", "n3"],
    )
    last = list(stream)[-1]
    assert (last.status, list(last.reported), list(last.missing)) == (
        "aborted",
        [],
        ["n1", "n2", "n3"],
    )
    document = json.loads(last.json)
    assert document["missing"] == ["n3"]
    assert document["waiting"] == {"n1": ["n3"], "n2": ["n3"]}
    assert {n: state["complete"] for n, state in document["nodes"].items()} == {
        "n1": False,
        "n2": False,
    }
    assert document["verification"]["reason"] == (
        "n3 never recorded its state; n1, n2 were still waiting for markers (from n3)"
    )
    assert json.loads((running.directory / "s1.json").read_text()) == document


def test_final_report_replaces_the_progress_report(running: Running) -> None:
    reports = consistent_reports(running.config, "s1")
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    for node in running.config.node_ids:
        others = [n for n in running.config.node_ids if n != node]
        running.stub.ReportLocalSnapshot(report_to_pb(as_progress(reports[node], others)))
    saved = json.loads((running.directory / ".pending" / "s1" / "n1.json").read_text())
    assert (saved["complete"], saved["open_channels"]) == (False, ["n2", "n3"])
    running.stub.ReportLocalSnapshot(report_to_pb(reports["n1"]))
    saved = json.loads((running.directory / ".pending" / "s1" / "n1.json").read_text())
    assert (saved["complete"], saved["open_channels"]) == (True, [])
    contradicting = report_to_pb(reports["n2"])
    contradicting.balance += 1
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.ReportLocalSnapshot(contradicting)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    running.stub.ReportLocalSnapshot(report_to_pb(reports["n2"]))
    running.stub.ReportLocalSnapshot(report_to_pb(reports["n3"]))
    document = json.loads(running.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="s1")).json)
    assert document["status"] == "complete" and document["waiting"] == {}
    config = running.config
    assert_verified_snapshot(document, config.expected_total, config.node_ids, config.channels)
    stale = report_to_pb(as_progress(reports["n1"], ["n2"]))
    running.stub.ReportLocalSnapshot(stale)  # late: acknowledged and ignored


def test_wait_snapshot_streams_progress(running: Running) -> None:
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    stream = running.stub.WaitSnapshot(pb.WaitSnapshotRequest(snapshot_id="s1"), timeout=10)
    # In lock step: each report is sent only once the stream has shown the
    # previous state, so no two changes can fold into one message.
    received = [next(stream)]
    reports = consistent_reports(running.config, "s1")
    for node in running.config.node_ids:
        running.stub.ReportLocalSnapshot(report_to_pb(reports[node]))
        message = next(stream)
        while message.reported == received[-1].reported:  # a heartbeat, nothing new
            message = next(stream)
        received.append(message)
    assert list(stream) == []  # the final message ended the stream
    assert [len(m.reported) for m in received] == [0, 1, 2, 3]
    assert [list(m.missing) for m in received][:2] == [["n1", "n2", "n3"], ["n2", "n3"]]
    assert [m.status for m in received] == ["pending", "pending", "pending", "complete"]
    assert json.loads(received[-1].json)["status"] == "complete"
    assert all(not m.json for m in received[:-1])


def test_wait_unknown_snapshot_not_found(running: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(running.stub.WaitSnapshot(pb.WaitSnapshotRequest(snapshot_id="nope"), timeout=5))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_serving(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    for service in ("", "chandy_lamport.Collector"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_pending_reports_survive_a_restart(tmp_path: Path) -> None:
    config = small_cluster(timeout=30)
    directory = tmp_path / "snapshots"
    reports = consistent_reports(config, "s1")
    first = Running(config, directory)
    first.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n1"]))
    first.stub.ReportLocalSnapshot(report_to_pb(reports["n1"]))
    first.stub.ReportLocalSnapshot(report_to_pb(reports["n2"]))
    first.close()
    second = Running(config, directory)
    try:
        assert second.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="s1")).status == "pending"
        second.stub.ReportLocalSnapshot(report_to_pb(reports["n2"]))  # retried after restart
        second.stub.ReportLocalSnapshot(report_to_pb(reports["n3"]))
        document = json.loads(second.stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id="s1")).json)
        assert document["status"] == "complete" and document["initiators"] == ["n1"]
        assert sorted(document["nodes"]) == ["n1", "n2", "n3"]
        assert document["verification"]["ok"]
    finally:
        second.close()
    third = Running(config, directory)  # finished ones are known after a restart too
    try:
        listed = third.stub.ListSnapshots(pb.ListSnapshotsRequest()).snapshots
        assert [(s.snapshot_id, s.status) for s in listed] == [("s1", "complete")]
        third.stub.ReportLocalSnapshot(report_to_pb(reports["n3"]))  # late: ignored
    finally:
        third.close()


def test_restart_after_the_deadline_aborts_the_snapshot(tmp_path: Path) -> None:
    config = small_cluster(timeout=0.5)
    directory = tmp_path / "snapshots"
    first = Running(config, directory)
    first.server.service.stop()  # no ticker: the deadline passes while "down"
    first.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="s1", initiators=["n3"]))
    first.stub.ReportLocalSnapshot(report_to_pb(consistent_reports(config, "s1")["n3"]))
    first.close()
    time.sleep(0.6)
    second = Running(config, directory)
    try:
        document = json.loads((directory / "s1.json").read_text())
        assert document["status"] == "aborted" and document["missing"] == ["n1", "n2"]
    finally:
        second.close()


# ---------------------------------------------------------------- the process


def test_cli_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector", "--cluster", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "missing.yaml" in result.stderr and "cannot read" in result.stderr


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {"id": "n1", "address": "127.0.0.1:1", "balance": 10},
                    {"id": "n2", "address": "127.0.0.1:2", "balance": 10},
                ],
                "collector": f"127.0.0.1:{port}",
            }
        )
    )
    # Mutual TLS by default, with the certificates `cl-certs ensure` puts next to the file.
    CertDir(tmp_path / "tls").ensure(cluster_identities(["n1", "n2"]), dt.datetime.now(dt.UTC))
    operator_tls = TlsFiles.in_dir(tmp_path / "tls" / "operator-admin")
    env = {
        **os.environ,
        "CL_SNAPSHOT_DIR": str(tmp_path / "snaps"),
        "CL_LISTEN_HOST": "127.0.0.1",
        "CL_HTTP_PORT": "0",
    }
    env.pop("CL_TLS_DIR", None)
    env.pop("CL_PLAINTEXT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--cluster", str(cluster)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with open_channel(f"127.0.0.1:{port}", operator_tls, "collector", "collector") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events == [
        "snapshot index loaded",
        "dashboard listening",
        "collector listening",
        "collector stopped",
    ]
    assert (tmp_path / "snaps" / ".pending").is_dir()
