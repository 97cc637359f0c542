"""The attacks of issue 9 against a real mutual-TLS cluster (processes on loopback).

Each attack is made for real, over gRPC, and must be refused with nothing
applied: the cluster's money (no workload runs, so every balance is fixed),
the snapshot files and the collector's pending state are compared before
and after. A plaintext cluster, attacked the same way, shows that the
impersonation test would catch the hole (money is created there).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from certs import identity
from certs.store import CertDir
from collector.testing import consistent_reports, report_to_pb
from common.tls import TlsFiles, open_channel
from demo.local_cluster import LocalCluster
from initiator.client import begin_snapshot, take_snapshot
from node import wire
from node.channels import SENDER_METADATA
from node.core import Transfer
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc
from tests.snapshot_check import assert_verified_snapshot

pytestmark = pytest.mark.slow

NODES = 3
TOTAL = 3000
KEEP = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = tmp_path_factory.mktemp("secure")
    with LocalCluster(
        workdir,
        nodes=NODES,
        transfer_rate=0,  # balances stand still: any change is the attack's doing
        snapshot_timeout=3,
        env={"CL_KEEP_SNAPSHOTS": str(KEEP)},
    ) as running:
        now = dt.datetime.now(dt.UTC)
        running.certs.issue(identity.operator("old"), now - dt.timedelta(days=30), days=2)
        CertDir(workdir / "other-ca").ensure(
            [identity.node("n2"), identity.operator()], now
        )  # the same names, from a CA the cluster never heard of
        running.start()
        yield running


def files(cluster: LocalCluster, who: identity.Identity) -> TlsFiles:
    return TlsFiles.in_dir(cluster.certs.identity_dir(who))


def foreign(cluster: LocalCluster, who: identity.Identity) -> TlsFiles:
    """A certificate from another CA, presented by a client that trusts the cluster's CA."""
    other = cluster.workdir / "other-ca" / who.directory
    return TlsFiles(cluster.certs.ca_cert_path, other / "tls.crt", other / "tls.key")


def state(cluster: LocalCluster) -> tuple[dict[str, int | None], list[str], list[str]]:
    """Balances, snapshot files, pending snapshots: what an attack must not change."""
    snapshots = sorted(p.name for p in cluster.snapshot_dir.glob("*.json"))
    pending_dir = cluster.snapshot_dir / ".pending"
    pending = sorted(str(p.relative_to(pending_dir)) for p in pending_dir.rglob("*"))
    return cluster.balances(), snapshots, pending


def forged_transfer(sender: str, receiver: str, seq: int, amount: int) -> pb.Frame:
    return wire.frame_for(sender, receiver, seq, Transfer(seq, amount))


def open_stream(
    cluster: LocalCluster, target: str, tls: TlsFiles | None, claim: str, frames: list[pb.Frame]
) -> grpc.RpcError:
    """Send `frames` on a Channel stream to `target` claiming to be `claim`; the refusal."""
    with open_channel(cluster.address(target), tls, "node", target) as channel:
        call = pb_grpc.NodeStub(channel).Channel(
            iter(frames), metadata=((SENDER_METADATA, claim),), timeout=5
        )
        with pytest.raises(grpc.RpcError) as caught:
            for _ in call:
                pass
    return caught.value


def collector_stub(cluster: LocalCluster, tls: TlsFiles | None) -> tuple[grpc.Channel, object]:
    channel = open_channel(cluster.collector_address, tls, "collector", "collector")
    return channel, pb_grpc.CollectorStub(channel)


def refused(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


# ------------------------------------------------------- money from nothing


def test_stranger_opening_a_channel_as_n2_is_refused(cluster: LocalCluster) -> None:
    before = state(cluster)
    assert sum(before[0].values()) == TOTAL  # type: ignore[arg-type]
    frames = [forged_transfer("n2", "n1", 1, 999_999)]
    no_cert = open_stream(cluster, "n1", None, "n2", frames)  # plaintext, no certificate
    assert no_cert.code() == grpc.StatusCode.UNAVAILABLE
    other_ca = open_stream(cluster, "n1", foreign(cluster, identity.node("n2")), "n2", frames)
    assert other_ca.code() == grpc.StatusCode.UNAVAILABLE
    # The operator is allowed to talk to nodes, but never on a channel.
    operator = open_stream(cluster, "n1", files(cluster, identity.operator()), "n2", frames)
    assert operator.code() == grpc.StatusCode.PERMISSION_DENIED
    assert operator.details() == "operator admin may not make this call (only node)"
    assert state(cluster) == before


def test_node_with_n2_certificate_cannot_open_the_channel_of_n3(cluster: LocalCluster) -> None:
    before = state(cluster)
    n2 = files(cluster, identity.node("n2"))
    as_n3 = open_stream(cluster, "n1", n2, "n3", [forged_transfer("n3", "n1", 1, 500)])
    assert as_n3.code() == grpc.StatusCode.PERMISSION_DENIED
    assert as_n3.details() == "node n2 may not speak for node n3"
    # Its own channel, but a frame "from" n3 inside it: refused as well.
    inside = open_stream(cluster, "n1", n2, "n2", [forged_transfer("n3", "n1", 1, 500)])
    assert inside.code() == grpc.StatusCode.PERMISSION_DENIED
    assert state(cluster) == before
    log = cluster.log_path("n1").read_text()
    assert log.count('"reason": "node n2 may not speak for node n3"') == 1  # logged once


def test_rejected_frame_names_the_problem_not_the_expected_seq(cluster: LocalCluster) -> None:
    before = state(cluster)
    n2 = files(cluster, identity.node("n2"))
    gap = open_stream(cluster, "n1", n2, "n2", [forged_transfer("n2", "n1", 7, 1)])
    assert gap.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert gap.details() == "gap in sequence numbers"
    assert "frames 1..6 are missing" in cluster.log_path("n1").read_text()  # the detail: here
    assert state(cluster) == before


def test_expired_certificate_is_refused_naming_the_expiry(cluster: LocalCluster) -> None:
    before = state(cluster)
    expired = files(cluster, identity.operator("old"))
    with open_channel(cluster.address("n1"), expired, "node", "n1") as channel:
        error = refused(
            pb_grpc.NodeStub(channel).StartSnapshot,
            pb.StartSnapshotRequest(snapshot_id="by-expired"),
            timeout=5,
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate has expired" in cluster.log_path("n1").read_text()  # the TLS layer's log
    # Our own tools refuse it before dialling, saying when it expired and what to do.
    result = subprocess.run(
        [sys.executable, "-m", "initiator", "--cluster", str(cluster.config_path),
         "--operator", "old", "--snapshot-id", "by-expired"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "operator-old/tls.crt: certificate expired on" in result.stderr
    assert "cl-certs ensure" in result.stderr
    assert state(cluster) == before


# ----------------------------------------------------- forged snapshots


def test_begins_and_starts_by_strangers_are_refused(cluster: LocalCluster) -> None:
    before = state(cluster)
    n1 = files(cluster, identity.node("n1"))
    for tls, code in ((n1, grpc.StatusCode.PERMISSION_DENIED), (None, grpc.StatusCode.UNAVAILABLE)):
        channel, stub = collector_stub(cluster, tls)
        with channel:
            begin = pb.BeginSnapshotRequest(snapshot_id="stranger", initiators=["n1"])
            assert refused(stub.BeginSnapshot, begin, timeout=5).code() == code  # type: ignore[attr-defined]
            listing = pb.ListSnapshotsRequest()
            assert refused(stub.ListSnapshots, listing, timeout=5).code() == code  # type: ignore[attr-defined]
        with open_channel(cluster.address("n2"), tls, "node", "n2") as channel:
            start = pb.StartSnapshotRequest(snapshot_id="stranger")
            error = refused(pb_grpc.NodeStub(channel).StartSnapshot, start, timeout=5)
            assert error.code() == code
    assert state(cluster) == before


def test_forged_and_preempted_reports_are_refused(cluster: LocalCluster) -> None:
    operator = files(cluster, identity.operator())
    begin_snapshot(cluster.collector_address, "forged", ["n1"], tls=operator)
    before = state(cluster)
    reports = consistent_reports(cluster.config, "forged")
    invented = report_to_pb(reports["n3"])
    invented.balance += 1_000_000
    for tls, code in (
        (files(cluster, identity.node("n1")), grpc.StatusCode.PERMISSION_DENIED),  # n1 as n3
        (operator, grpc.StatusCode.PERMISSION_DENIED),
        (foreign(cluster, identity.node("n2")), grpc.StatusCode.UNAVAILABLE),
        (None, grpc.StatusCode.UNAVAILABLE),
    ):
        channel, stub = collector_stub(cluster, tls)
        with channel:
            for node_id in ("n2", "n3"):  # pre-empting n2, forging n3
                forged = report_to_pb(reports[node_id]) if node_id == "n2" else invented
                error = refused(stub.ReportLocalSnapshot, forged, timeout=5)  # type: ignore[attr-defined]
                assert error.code() == code
    assert state(cluster) == before  # no pending report stored
    # The real snapshot with that id still completes, from the real reports only.
    outcome = take_snapshot(
        cluster.config, cluster.collector_address, ["n1"], "forged", timeout=30, tls=operator
    )
    assert outcome.document is not None and outcome.document["status"] == "complete"
    assert_verified_snapshot(outcome.document, TOTAL, cluster.node_ids, cluster.config.channels)
    for _ in range(5):  # the issue's "pre-empting aborted 5 of 5": now every one completes
        sid = f"after-forgery-{_}"
        done = take_snapshot(
            cluster.config, cluster.collector_address, ["n2"], sid, timeout=30, tls=operator
        )
        assert done.document is not None and done.document["status"] == "complete"


def test_reports_for_snapshots_nobody_began_and_oversized_reports(cluster: LocalCluster) -> None:
    before = state(cluster)
    channel, stub = collector_stub(cluster, files(cluster, identity.node("n1")))
    with channel:
        report = report_to_pb(consistent_reports(cluster.config, "never-begun")["n1"])
        error = refused(stub.ReportLocalSnapshot, report, timeout=5)  # type: ignore[attr-defined]
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == "snapshot never-begun was not begun at this collector"
        operator = files(cluster, identity.operator())
        begin_snapshot(cluster.collector_address, "huge", ["n1"], tls=operator)
        after_begin = state(cluster)
        huge = report_to_pb(consistent_reports(cluster.config, "huge")["n1"])
        huge.open_channels.extend(["n2"] * 265_000)  # just over 1 MiB on the wire
        error = refused(stub.ReportLocalSnapshot, huge, timeout=10)  # type: ignore[attr-defined]
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details().startswith("report too large: ")
        assert "accepts at most 1048576 (CL_MAX_REPORT_BYTES)" in error.details()
        huge.open_channels.extend(["n2"] * 335_000)  # the issue's 2.4 MB: gRPC refuses it unread
        error = refused(stub.ReportLocalSnapshot, huge, timeout=10)  # type: ignore[attr-defined]
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Received message larger than max" in error.details()
    assert state(cluster)[0] == before[0]
    assert state(cluster) == after_begin  # the begin's file, and nothing of the report


def test_disk_fill_by_begins_is_rate_limited_and_files_bounded(cluster: LocalCluster) -> None:
    operator = files(cluster, identity.operator())
    channel, stub = collector_stub(cluster, operator)
    codes: list[grpc.StatusCode] = []
    started = time.monotonic()
    with channel:
        for index in range(300):
            try:
                stub.BeginSnapshot(  # type: ignore[attr-defined]
                    pb.BeginSnapshotRequest(snapshot_id=f"fill-{index}"), timeout=5
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
    elapsed = time.monotonic() - started
    accepted = codes.count(grpc.StatusCode.OK)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # At most the burst (20), then 5 per second; earlier tests spent some of the burst.
    assert 1 <= accepted <= 20 + 5 * elapsed + 1
    pending = cluster.snapshot_dir / ".pending"
    assert len([p for p in pending.iterdir() if p.name.startswith("fill-")]) == accepted

    # Nobody started them: they abort after 3 s, and retention keeps the newest KEEP files.
    def stored() -> list[str]:
        return [
            p.name
            for p in cluster.snapshot_dir.glob("*.json")
            if p.name != "latest.json" and not p.name.startswith(".")
        ]

    deadline = time.monotonic() + 30
    while any(p.name.startswith("fill-") for p in pending.iterdir()) or len(stored()) > KEEP:
        assert time.monotonic() < deadline, (elapsed, accepted, sorted(stored()))
        time.sleep(0.2)
    assert len(stored()) == KEEP, (elapsed, accepted)
    retention = json.loads((cluster.snapshot_dir / ".retention.json").read_text())
    assert retention["pruned"] >= accepted - KEEP
    lines = [json.loads(line) for line in cluster.log_path("collector").read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    logged = [
        e
        for e in lines
        if e.get("method") == "BeginSnapshot" and e.get("code") == "RESOURCE_EXHAUSTED"
    ]
    assert [e["times"] for e in logged] == [1, 10, 100]  # logged once, then only counted
    result = subprocess.run(
        [sys.executable, "-m", "initiator", "--cluster", str(cluster.config_path), "--list"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"({retention['pruned']} older snapshots pruned by the collector's retention" in (
        result.stdout
    )
    listed = [sid for sid in (p.removesuffix(".json") for p in stored()) if sid in result.stdout]
    assert len(listed) == KEEP  # the table shows what is left
    assert sum(v for v in cluster.balances().values() if v is not None) == TOTAL


# ---------------------------------------------- the same hole, in plaintext


def test_plaintext_cluster_is_open_which_is_why_tls_is_the_default(tmp_path: Path) -> None:
    """Control: the impersonation above, against an explicit plaintext cluster, creates money."""
    with LocalCluster(tmp_path, nodes=2, transfer_rate=0, tls=False) as plain:
        plain.start()
        assert "PLAINTEXT gRPC: mutual TLS is OFF" in plain.log_path("n1").read_text()
        with open_channel(plain.address("n1"), None, "node", "n1") as channel:
            call = pb_grpc.NodeStub(channel).Channel(
                iter([forged_transfer("n2", "n1", 1, 999)]),
                metadata=((SENDER_METADATA, "n2"),),
                timeout=5,
            )
            acks = [ack.seq for ack in call]
        assert acks == [0, 1]
        assert sum(v for v in plain.balances().values() if v is not None) == 2000 + 999
