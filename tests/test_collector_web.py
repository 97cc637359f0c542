"""The collector's HTTP side over a real collector: dashboard, pages, diagrams, API, /metrics."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.server import CollectorServer
from collector.testing import consistent_reports, report_to_pb, small_cluster
from collector.web.cluster import NodeLive
from collector.web.index import Restores, SnapshotIndex, duration_stats, summarize
from common.files import atomic_write_json
from protos import chandy_lamport_pb2 as pb
from protos import chandy_lamport_pb2_grpc as pb_grpc
from tests.diagram_documents import aborted_document, three_node_document
from tests.pngcheck import assert_not_blank


class Running:
    def __init__(self, directory: Path, timeout: float = 1.0) -> None:
        self.config = small_cluster(timeout=timeout)
        self.server = CollectorServer(self.config, str(directory), "127.0.0.1", 0, http_port=0)
        self.server.start()
        assert self.server.web is not None
        self.url = f"http://127.0.0.1:{self.server.web.port}"
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.CollectorStub(self.channel)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def snapshot(self, snapshot_id: str) -> None:
        self.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id=snapshot_id, initiators=["n1"]))
        for report in consistent_reports(self.config, snapshot_id).values():
            self.stub.ReportLocalSnapshot(report_to_pb(report), timeout=5)

    def close(self) -> None:
        self.http.close()
        self.channel.close()
        self.server.stop(grace=0.5)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    collector = Running(tmp_path / "snapshots")
    yield collector
    collector.close()


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_dashboard_history_page_diagram_and_api(running: Running) -> None:
    running.snapshot("s1")
    page = running.http.get("/")
    assert page.status_code == 200
    assert (
        'data-snapshot="s1"' in page.text and 'data-count="complete"><div class="n">1' in page.text
    )
    # The fragment the page polls carries the same history.
    assert 'data-snapshot="s1"' in running.http.get("/fragments/dashboard").text

    listing = running.http.get("/api/snapshots").json()
    assert listing["total"] == 1
    (row,) = listing["snapshots"]
    assert row["snapshot_id"] == "s1" and row["status"] == "complete" and row["verified"] is True
    on_disk = json.loads((running.server.service.store.directory / "s1.json").read_text())
    assert running.http.get("/api/snapshots/s1").json() == on_disk

    detail = running.http.get("/snapshots/s1")
    assert detail.status_code == 200
    for needle in ('class="lane"', 'class="cut"', 'class="topology"', 'id="checks"', "s1"):
        assert needle in detail.text

    svg = running.http.get("/snapshots/s1.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(svg.text)
    lanes = [e for e in root.iter() if (e.get("class") or "") == "lane"]
    assert [lane.get("data-node") for lane in lanes] == list(running.config.node_ids)

    png = running.http.get("/snapshots/s1.png")
    assert png.headers["content-type"] == "image/png"
    assert_not_blank(png.content)


def test_pending_and_aborted_snapshots(running: Running) -> None:
    running.stub.BeginSnapshot(pb.BeginSnapshotRequest(snapshot_id="slow", initiators=["n1"]))
    assert running.http.get("/api/snapshots/slow").json()["status"] == "pending"
    assert "in progress" in running.http.get("/snapshots/slow").text
    assert 'data-status="pending"' in running.http.get("/").text
    deadline = time.monotonic() + 15
    while running.http.get("/api/snapshots/slow").json()["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page = running.http.get("/snapshots/slow").text
    assert 'class="lane missing"' in page and "never recorded" in page
    summary = running.http.get("/api/summary").json()
    assert summary["counts"]["aborted"] == 1
    assert summary["latest"]["aborted"]["snapshot_id"] == "slow"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/snapshots?page=0", 400, "page must be between 1"),
        ("/api/snapshots?limit=x", 400, "limit must be an integer"),
        ("/api/snapshots?status=weird", 400, "status must be one of"),
        ("/?status=weird", 400, "status must be one of"),
        ("/api/snapshots/bad%20id", 400, "snapshot id"),
        ("/snapshots/nope.svg", 404, "unknown snapshot nope"),
        ("/snapshots/nope", 404, "unknown snapshot nope"),
        ("/api/snapshots/nope", 404, "unknown snapshot nope"),
        ("/snapshots/s1?axis=sideways", 400, "axis must be wall or lamport"),
    ],
)
def test_bad_requests_get_one_clear_error(
    running: Running, path: str, status: int, message: str
) -> None:
    running.snapshot("s1")
    reply = running.http.get(path)
    assert reply.status_code == status
    assert message in reply.text
    assert running.server.web is not None
    assert len(running.server.web.source.index) == 1  # nothing changed


def test_metrics_families_move(running: Running) -> None:
    before = metric_values(running.http.get("/metrics").text)
    assert before[("cl_snapshots_total", (("status", "complete"),))] == 0
    running.snapshot("m1")
    running.snapshot("m2")
    after = metric_values(running.http.get("/metrics").text)
    assert after[("cl_snapshots_total", (("status", "complete"),))] == 2
    assert after[("cl_snapshot_duration_seconds_count", (("status", "complete"),))] == 2
    assert after[("cl_collector_reports_received_total", (("outcome", "accepted"),))] == 2 * len(
        running.config.node_ids
    )
    assert after[("cl_snapshots_in_progress", ())] == 0


def test_history_is_served_from_the_index_not_the_files(tmp_path: Path) -> None:
    """1,000 stored snapshots: read once at start, never again to page the history."""
    directory = tmp_path / "snapshots"
    directory.mkdir()
    base = three_node_document()
    for k in range(1000):
        document = dict(
            base,
            snapshot_id=f"h{k:04d}",
            completed_at=f"2026-11-21T10:{k // 60 % 60:02d}:{k % 60:02d}.000+00:00",
        )
        if k % 10 == 0:
            document = dict(
                aborted_document(), snapshot_id=f"h{k:04d}", completed_at=document["completed_at"]
            )
        atomic_write_json(directory / f"h{k:04d}.json", document)
    collector = Running(directory)
    try:
        store = collector.server.service.store
        reads = []
        original = store.read_text
        store.read_text = lambda sid: reads.append(sid) or original(sid)  # type: ignore[method-assign]
        first = collector.http.get("/")
        assert first.status_code == 200 and first.text.count("<tr data-snapshot=") == 20
        last = collector.http.get("/api/snapshots?page=50&limit=20").json()
        assert last["total"] == 1000 and len(last["snapshots"]) == 20
        assert last["snapshots"][-1]["snapshot_id"] == "h0000"
        aborted = collector.http.get("/api/snapshots?status=aborted&limit=200").json()
        assert aborted["total"] == 100
        assert reads == []
    finally:
        collector.close()


def test_index_summaries_paging_and_statistics() -> None:
    summary = summarize(three_node_document())
    assert (summary.money_in_flight, summary.messages_in_flight, summary.verified) == (30, 1, True)
    assert summarize(aborted_document()).verified is None
    index = SnapshotIndex()
    for k in range(5):
        index.add(dict(three_node_document(), snapshot_id=f"c{k}", duration_seconds=float(k + 1)))
    index.add(aborted_document())
    rows, total = index.page(0, 2)
    assert total == 6 and [r.snapshot_id for r in rows] == ["n4-down", "c4"]
    rows, total = index.page(4, 2)
    assert [r.snapshot_id for r in rows] == ["c1", "c0"]
    assert [r.snapshot_id for r in index.page(5, 2)[0]] == ["c0"]
    assert index.page(0, 10, "aborted")[1] == 1
    counts = index.counts(in_progress=2)
    assert (counts.begun, counts.complete, counts.aborted, counts.in_progress) == (8, 5, 1, 2)
    stats = duration_stats(index.durations())
    assert stats is not None
    assert (stats.min, stats.avg, stats.max, stats.p50, stats.p95) == (1.0, 3.0, 5.0, 3.0, 5.0)
    assert duration_stats([]) is None


def test_restores_tile_once_restores_exist(running: Running) -> None:
    from collector.restore import RestoreRecord
    from collector.restores import RestoreLog

    assert 'data-count="restores"' not in running.http.get("/").text
    directory = running.server.service.store.directory
    RestoreLog(directory).write(RestoreRecord(1, "s1", 1, 0, "2026-12-01T10:00:00.000+00:00", {}))
    page = running.http.get("/").text
    assert 'data-count="restores"><div class="n">1' in page
    assert "latest: s1 preparing" in page
    assert running.http.get("/api/summary").json()["restores"]["count"] == 1


class DocumentsSource:
    """The app's data interface over a dict of documents (no collector needed)."""

    def __init__(self, documents: list[dict[str, object]]) -> None:
        self._index = SnapshotIndex()
        self.texts = {}
        for document in documents:
            self._index.add(document)
            self.texts[str(document["snapshot_id"])] = json.dumps(document)

    @property
    def index(self) -> SnapshotIndex:
        return self._index

    def pending(self) -> list[str]:
        return []

    def read_text(self, snapshot_id: str) -> str | None:
        return self.texts.get(snapshot_id)

    def cluster(self) -> list[NodeLive]:
        return [NodeLive("n1", "127.0.0.1:1", healthy=False, error="<b>refused</b>")]

    def restores(self) -> Restores:
        return Restores(0)


def test_values_from_documents_and_nodes_are_escaped() -> None:
    import asyncio

    from collector.web.app import create_app

    hostile = aborted_document()
    hostile["verification"]["reason"] = "<script>alert(1)</script>"
    hostile["initiators"] = ["<img src=x>"]
    app = create_app(DocumentsSource([hostile]))

    async def fetch(path: str) -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get(path)).text

    page = asyncio.run(fetch("/snapshots/n4-down"))
    home = asyncio.run(fetch("/"))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "<img src=x>" not in home and "&lt;img src=x&gt;" in home
    assert "<b>refused</b>" not in home


class FinishingSource(DocumentsSource):
    """A snapshot that finishes while the app asks whether it is pending: the
    collector writes its document under the lock `pending()` waits for."""

    def __init__(self, document: dict[str, object]) -> None:
        super().__init__([])
        self.document = document

    def pending(self) -> list[str]:
        sid = str(self.document["snapshot_id"])
        self.texts[sid] = json.dumps(self.document)  # finished meanwhile
        return []


def test_a_snapshot_finishing_during_the_request_is_served_not_lost() -> None:
    import asyncio

    from collector.web.app import create_app

    document = aborted_document()
    sid = str(document["snapshot_id"])

    async def fetch(path: str) -> httpx.Response:
        app = create_app(FinishingSource(document))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    api = asyncio.run(fetch(f"/api/snapshots/{sid}"))
    assert api.status_code == 200 and api.json()["status"] == "aborted"
    page = asyncio.run(fetch(f"/snapshots/{sid}"))
    assert page.status_code == 200 and f'data-snapshot="{sid}"' in page.text
