"""cl-initiator against a real collector and fake nodes (gRPC servers that report at once).

Everything speaks mutual TLS with the certificates `cl-certs ensure` writes
next to the cluster file, where cl-initiator finds its operator certificate
without being told.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import structlog
import yaml

from certs import identity
from certs.store import CertDir, cluster_identities
from collector.server import CollectorServer
from collector.testing import consistent_reports, report_to_pb
from common.config import load_cluster
from common.tls import TlsFiles, add_port, open_channel
from initiator.__main__ import main
from initiator.client import take_snapshot
from node.testing import free_port
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc


class FakeNodes(pb_grpc.NodeServicer):
    """Every node of the cluster; a StartSnapshot anywhere makes every live node report."""

    def __init__(self, cluster_file: Path, down: set[str]) -> None:
        self.config = load_cluster(cluster_file)
        self.certs = cluster_file.parent / "tls"
        self.down = down
        # (sender, receiver) -> (frames, amount) the sender holds unacknowledged.
        self.queued: dict[tuple[str, str], tuple[int, int]] = {}
        self.started: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.servers = []
        for spec in self.config.nodes:
            if spec.id in down:
                continue
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            pb_grpc.add_NodeServicer_to_server(_Node(self, spec.id), server)
            add_port(server, spec.address, self.tls(identity.node(spec.id)))
            server.start()
            self.servers.append(server)

    def tls(self, who: identity.Identity) -> TlsFiles:
        return TlsFiles.in_dir(self.certs / who.directory)

    def on_start(self, node_id: str, snapshot_id: str) -> bool:
        with self.lock:
            first = all(sid != snapshot_id for _, sid in self.started)
            self.started.append((node_id, snapshot_id))
        if first:
            reports = consistent_reports(self.config, snapshot_id, initiator=node_id)
            for node, report in reports.items():
                if node in self.down:
                    continue
                # Each node reports with its own certificate: the collector checks it.
                address = self.config.collector_address
                tls = self.tls(identity.node(node))
                with open_channel(address, tls, "collector", "collector") as channel:
                    stub = pb_grpc.CollectorStub(channel)
                    stub.ReportLocalSnapshot(report_to_pb(report), timeout=5)
        return not first

    def stop(self) -> None:
        for server in self.servers:
            server.stop(0)


class _Node(pb_grpc.NodeServicer):
    def __init__(self, nodes: FakeNodes, node_id: str) -> None:
        self.nodes, self.node_id = nodes, node_id

    def StartSnapshot(self, request, context):  # type: ignore[no-untyped-def]
        already = self.nodes.on_start(self.node_id, request.snapshot_id)
        return pb.StartSnapshotReply(snapshot_id=request.snapshot_id, already_recorded=already)

    def GetStatus(self, request, context):  # type: ignore[no-untyped-def]
        config, queued = self.nodes.config, self.nodes.queued
        channels = []
        for peer in config.outgoing(self.node_id):
            frames, amount = queued.get((self.node_id, peer), (0, 0))
            channels.append(
                pb.ChannelStatus(
                    peer=peer, direction="out", unacked=frames, unacked_amount=amount,
                    connected=peer not in self.nodes.down,
                )  # fmt: skip
            )
        return pb.NodeStatus(node_id=self.node_id, channels=channels)


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """The in-process collector must not write its logs into the captured stdout."""
    structlog.configure(
        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False
    )
    yield
    structlog.reset_defaults()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    collector_port = free_port()
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {"id": f"n{i}", "address": f"127.0.0.1:{free_port()}", "balance": 100}
                    for i in range(1, 4)
                ],
                "collector": f"127.0.0.1:{collector_port}",
                "snapshot_timeout": 1.5,
            }
        )
    )
    config = load_cluster(path)
    certs = CertDir(tmp_path / "tls")
    certs.ensure(cluster_identities(config.node_ids), dt.datetime.now(dt.UTC))
    server = CollectorServer(
        config,
        str(tmp_path / "snaps"),
        "127.0.0.1",
        collector_port,
        tls=TlsFiles.in_dir(certs.identity_dir(identity.collector())),
    )
    server.start()
    yield path, tmp_path / "snaps"
    server.stop(0.5)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_one_snapshot_summary_and_exit_0(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, snaps = cluster
    nodes = FakeNodes(path, down=set())
    try:
        code, out, err = _run(capsys, "--cluster", str(path), "--snapshot-id", "one")
    finally:
        nodes.stop()
    assert code == 0, err
    assert out.startswith("snapshot one: COMPLETE (initiated by n1)")
    assert "verification: PASSED" in out
    assert "waiting for one: " in err
    assert nodes.started == [("n1", "one")]
    assert json.loads((snaps / "one.json").read_text())["status"] == "complete"


def test_json_count_and_two_initiators(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _ = cluster
    nodes = FakeNodes(path, down=set())
    try:
        code, out, err = _run(
            capsys,
            "--cluster",
            str(path),
            "--node",
            "n2",
            "--node",
            "n3",
            "--count",
            "2",
            "--interval",
            "0",
            "--json",
            "--snapshot-id",
            "multi",
        )
    finally:
        nodes.stop()
    assert code == 0, err
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(out.strip()):
        document, index = decoder.raw_decode(out, index)
        documents.append(document)
        index += 1
    assert [d["snapshot_id"] for d in documents] == ["multi-1", "multi-2"]
    assert sorted(node for node, _ in nodes.started) == ["n2", "n2", "n3", "n3"]
    assert all(d["initiators"] == ["n2", "n3"] for d in documents)


def test_no_wait_prints_the_id(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _ = cluster
    nodes = FakeNodes(path, down=set())
    try:
        code, out, _ = _run(capsys, "--cluster", str(path), "--no-wait")
    finally:
        nodes.stop()
    assert code == 0
    assert out.strip().startswith("snap-") and len(out.strip().splitlines()) == 1


def test_unreachable_chosen_node_stops_the_snapshot_before_it_begins(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, snaps = cluster
    nodes = FakeNodes(path, down={"n3"})
    address = load_cluster(path).node("n3").address
    try:
        code, out, err = _run(
            capsys, "--cluster", str(path), "--node", "n1", "--node", "n3", "--snapshot-id", "ab"
        )
        listed = _run(capsys, "--cluster", str(path), "--list")
    finally:
        nodes.stop()
    assert code == 5, err
    assert f"cannot reach n3 ({address}): UNAVAILABLE" in err
    assert "snapshot ab not started" in err
    assert out == ""
    # Nothing began: no node was asked, the collector knows no "ab", no file.
    assert nodes.started == []
    assert listed[1].splitlines()[1:] == ["(no snapshot)"]
    assert not (snaps / "ab.json").exists()


def test_down_node_is_named_alike_in_progress_and_summary_with_what_is_queued_to_it(
    cluster, capsys
) -> None:  # type: ignore[no-untyped-def]
    path, _ = cluster
    nodes = FakeNodes(path, down={"n3"})
    nodes.queued = {("n1", "n3"): (4, 120), ("n2", "n3"): (1, 7), ("n1", "n2"): (2, 9)}
    try:
        code, out, err = _run(capsys, "--cluster", str(path), "--snapshot-id", "ab")
    finally:
        nodes.stop()
    assert code == 3, err
    assert "warning: n3 (" in err and "does not answer (UNAVAILABLE" in err
    progress = [line for line in err.splitlines() if line.startswith("waiting for ab: ")]
    assert progress and all("(missing: n3)" in line for line in progress[-1:])
    assert "2/3 complete (missing: n3)" in progress[-1]
    assert "snapshot ab: ABORTED" in out
    assert "  missing: n3 (never recorded its state)" in out
    assert "channels not recorded" in out  # not a bare "in flight: 0"
    # Live status of n1 and n2: what they hold toward n3 (not n1->n2: n2 is up).
    assert (
        "  unreachable now: n3; queued toward it: amount 127 in 5 unacknowledged frames "
        "(n1->n3: 120, n2->n3: 7), resent when it is back"
    ) in out.splitlines()


def test_node_unreachable_at_start_after_the_probe_exits_5(cluster) -> None:  # type: ignore[no-untyped-def]
    """The probe passed but StartSnapshot failed (the node went down between):
    the snapshot was begun, so the collector stores it aborted after its timeout."""
    path, _ = cluster
    config = load_cluster(path)
    tls = TlsFiles.in_dir(path.parent / "tls" / identity.operator("admin").directory)
    outcome = take_snapshot(config, config.collector_address, ["n2"], "x", tls=tls)
    assert outcome.exit_code == 5
    assert [s.node_id for s in outcome.start_errors] == ["n2"]
    assert "UNAVAILABLE" in outcome.start_errors[0].error


def test_reused_snapshot_id_is_refused_and_nothing_changes(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, snaps = cluster
    nodes = FakeNodes(path, down=set())
    try:
        assert _run(capsys, "--cluster", str(path), "--snapshot-id", "once")[0] == 0
        before = (snaps / "once.json").read_bytes()
        code, out, err = _run(capsys, "--cluster", str(path), "--snapshot-id", "once")
        assert code == 2
        assert out == ""
        assert "snapshot once exists already (complete, started " in err
        assert "choose another --snapshot-id" in err and "--show once" in err
        # --count: "once-2" taken; refused before "once-1" starts.
        assert _run(capsys, "--cluster", str(path), "--snapshot-id", "once-2")[0] == 0
        code, _, err = _run(
            capsys, "--cluster", str(path), "--snapshot-id", "once", "--count", "2"
        )
        assert code == 2 and "snapshot once-2 exists already" in err
    finally:
        nodes.stop()
    assert nodes.started == [("n1", "once"), ("n1", "once-2")]
    assert (snaps / "once.json").read_bytes() == before
    assert not (snaps / "once-1.json").exists()


def test_usage_errors_exit_2(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _ = cluster
    assert _run(capsys, "--cluster", str(path), "--snapshot-id", "../bad")[0] == 2
    code, _, err = _run(capsys, "--cluster", str(path), "--node", "n9")
    assert code == 2 and "'n9' is not in the cluster" in err
    code, _, err = _run(capsys, "--cluster", str(path.parent / "nope.yaml"))
    assert code == 2 and "cannot read" in err


def test_collector_unreachable_exits_1(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {"id": "n1", "address": "127.0.0.1:1", "balance": 1},
                    {"id": "n2", "address": "127.0.0.1:2", "balance": 1},
                ],
                "collector": f"127.0.0.1:{free_port()}",
            }
        )
    )
    code, _, err = _run(capsys, "--cluster", str(path), "--timeout", "1")
    assert code == 2  # no certificate yet: refused before dialling anyone
    assert "operator-admin/ca.crt: missing; create it with `cl-certs ensure" in err
    CertDir(tmp_path / "tls").ensure(cluster_identities(["n1", "n2"]), dt.datetime.now(dt.UTC))
    code, _, err = _run(capsys, "--cluster", str(path), "--timeout", "1")
    assert code == 1
    assert "collector at 127.0.0.1:" in err
    # The certificate itself is checked when a call fails (not before every
    # call: that check imports cryptography): an expired one is named then.
    now = dt.datetime.now(dt.UTC)
    CertDir(tmp_path / "tls").issue(identity.operator(), now - dt.timedelta(days=30), days=2)
    code, _, err = _run(capsys, "--cluster", str(path), "--timeout", "1")
    assert code == 2
    assert "operator-admin/tls.crt: certificate expired on" in err


def test_show_and_list_read_what_the_collector_stored(cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    path, snaps = cluster
    code, out, err = _run(capsys, "--cluster", str(path), "--list")
    assert code == 0, err
    assert out.splitlines()[1:] == ["(no snapshot)"]
    nodes = FakeNodes(path, down={"n3"})
    try:
        assert _run(capsys, "--cluster", str(path), "--snapshot-id", "n3-down")[0] == 3
        nodes.down.clear()  # n3 reports again from the next snapshot on
        assert _run(capsys, "--cluster", str(path), "--snapshot-id", "after")[0] == 0
    finally:
        nodes.stop()
    code, out, err = _run(capsys, "--cluster", str(path), "--list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split("  ")[0] == "id" and "money in flight" in header and "verified" in header
    assert [row.split()[:2] for row in rows] == [["n3-down", "aborted"], ["after", "complete"]]
    assert rows[0].endswith("-") and rows[1].endswith("yes")
    code, out, _ = _run(capsys, "--cluster", str(path), "--list", "--limit", "1")
    assert [line.split()[0] for line in out.splitlines()] == ["id", "after", "(1"]
    code, out, _ = _run(capsys, "--cluster", str(path), "--list", "--status", "aborted")
    assert [line.split()[0] for line in out.splitlines()] == ["id", "n3-down"]
    code, _, err = _run(capsys, "--cluster", str(path), "--list", "--limit", "-1")
    assert code == 2 and "--limit must be >= 0" in err
    code, _, err = _run(capsys, "--cluster", str(path), "--limit", "3")
    assert code == 2 and "go with --list" in err

    code, out, _ = _run(capsys, "--cluster", str(path), "--show", "latest")
    assert code == 0 and out.startswith("snapshot after: COMPLETE")
    code, out, _ = _run(capsys, "--cluster", str(path), "--show", "n3-down", "--json")
    assert code == 3
    assert json.loads(out) == json.loads((snaps / "n3-down.json").read_text())

    code, out, err = _run(capsys, "--cluster", str(path), "--show", "never-taken")
    assert code == 6 and out == ""
    assert "cl-initiator: error: no snapshot never-taken at the collector" in err
    assert "NOT_FOUND" not in err and "unreachable" not in err
    code, _, err = _run(capsys, "--cluster", str(path), "--show", "../etc/passwd")
    assert code == 2 and "invalid snapshot id" in err


def test_count_ends_with_durations_and_svg_files(cluster, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, _ = cluster
    nodes = FakeNodes(path, down=set())
    try:
        code, out, err = _run(
            capsys, "--cluster", str(path), "--count", "3", "--interval", "0",
            "--snapshot-id", "d", "--svg", str(tmp_path / "pic.svg"),
        )  # fmt: skip
        single = _run(capsys, "--cluster", str(path), "--svg", str(tmp_path / "one.svg"))
    finally:
        nodes.stop()
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("durations over 3 complete snapshots: min ")
    assert "avg" in last and "max" in last and "(3 complete, 0 aborted)" in last
    for k in (1, 2, 3):
        svg = (tmp_path / f"pic-d-{k}.svg").read_text()
        assert svg.startswith("<svg") and 'data-snapshot="d-' in svg
    assert single[0] == 0 and (tmp_path / "one.svg").read_text().startswith("<svg")
    assert "durations" not in single[1]
    code, _, err = _run(capsys, "--cluster", str(path), "--show", "d-1", "--svg", "/proc/x.svg")
    assert code == 2 and "cannot write /proc/x.svg" in err
