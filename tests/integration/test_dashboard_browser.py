"""A real headless Chromium on the dashboard of a running local-process cluster.

The page is opened before the snapshot exists; the test then takes a snapshot
and waits until the page's own refresh shows it in the history (no reload),
opens its page, checks the DOM (history rows, one lifeline per node, the cut,
one highlight per recorded in-flight transfer), hovers and clicks the diagram,
and saves screenshots (to CL_SCREENSHOT_DIR when set: `make screenshots`
writes the README's docs/*.png) that must not be blank. /metrics is parsed
while the workload runs. Never skipped in CI: without Chromium it fails there.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from demo.local_cluster import LocalCluster
from initiator.client import take_snapshot
from tests.browser import Browser, chromium_path
from tests.pngcheck import assert_not_blank

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _need_chromium() -> None:
    if chromium_path() is None:
        message = "no Chromium: run scripts/install-chromium.sh (make test does)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    _need_chromium()
    workdir = tmp_path_factory.mktemp("browser")
    with LocalCluster(
        workdir, nodes=3, link_delay_ms=100, transfer_rate=10, snapshot_timeout=20
    ) as running:
        running.start()
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _need_chromium()
    with Browser.launch() as running:
        yield running


def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("CL_SCREENSHOT_DIR") or tmp_path)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bytes(reply.read())


def test_history_shows_a_new_snapshot_and_its_page_draws_the_cut(
    cluster: LocalCluster, browser: Browser, tmp_path: Path
) -> None:
    out = shots(tmp_path)
    browser.goto(cluster.http_url + "/")
    assert browser.evaluate("document.querySelector('#history-table') !== null")
    assert browser.evaluate("document.querySelectorAll('tr[data-snapshot]').length") == 0
    # Wait for the cluster-now table to show every node up.
    browser.wait_for(
        "document.querySelectorAll('#cluster tr[data-node]:not(.down)').length === 3"
    )

    snapshot_id = f"browser-{int(time.time())}"
    outcome = take_snapshot(
        cluster.config,
        cluster.collector_address,
        ["n1"],
        snapshot_id,
        timeout=60,
        tls=cluster.operator_tls,
    )
    assert outcome.document is not None and outcome.document["status"] == "complete"
    document = outcome.document
    # The page refreshes itself: the row appears without a reload.
    browser.wait_for(f"document.querySelector('tr[data-snapshot=\"{snapshot_id}\"]') !== null")
    assert browser.evaluate("document.querySelector('[data-count=complete] .n').textContent") == "1"
    for _ in range(2):  # more history for the picture
        take_snapshot(cluster.config, cluster.collector_address, ["n2"],
                      f"{snapshot_id}-{_ + 2}", timeout=60, tls=cluster.operator_tls)  # fmt: skip
    browser.wait_for("document.querySelectorAll('#history-table tr[data-snapshot]').length === 3")
    browser.wait_for("document.querySelector('#durations td[data-stat=p95]') !== null")
    assert_not_blank(browser.screenshot(out / "dashboard.png"))

    browser.evaluate(f"document.querySelector('a[href=\"/snapshots/{snapshot_id}\"]').click()")
    browser.wait_for(
        f"location.pathname === '/snapshots/{snapshot_id}' && document.readyState === 'complete'"
    )
    browser.wait_for("document.querySelector('#spacetime svg') !== null")
    lanes = browser.evaluate(
        "[...document.querySelectorAll('#spacetime g.lane')].map(g => g.dataset.node)"
    )
    assert lanes == ["n1", "n2", "n3"]
    assert browser.evaluate("document.querySelectorAll('#spacetime path.cut').length") == 2
    recorded = sum(len(c["messages"]) for c in document["channels"])
    crossings = browser.evaluate("document.querySelectorAll('#spacetime circle.crossing').length")
    assert crossings == recorded
    assert browser.evaluate("document.querySelectorAll('#nodes tr[data-node]').length") == 3
    assert browser.evaluate("document.querySelectorAll('#checks tr[data-check]').length") == 7
    assert browser.evaluate("document.querySelectorAll('#topology g.node').length") == 3
    has_timelines = all("timeline" in state for state in document["nodes"].values())
    if has_timelines:
        markers = browser.evaluate(
            "document.querySelectorAll('#spacetime line.msg[data-kind=marker]').length"
        )
        assert markers == len(document["channels"])  # one marker per channel
        # Hover a marker: its description appears under the diagram.
        info = browser.evaluate(
            "(() => { const m = document.querySelector('#spacetime line.msg[data-kind=marker]');"
            " m.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
            " return document.getElementById('info').textContent; })()"
        )
        assert info.startswith("marker ")
    # Click a lane: the diagram follows that node.
    browser.evaluate(
        "document.querySelector('#spacetime g.lane[data-node=n2]')"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    assert browser.evaluate("document.getElementById('spacetime').classList.contains('focus')")
    assert browser.evaluate("document.getElementById('info').textContent").startswith(
        "following n2"
    )
    browser.evaluate(
        "document.querySelector('#spacetime g.lane[data-node=n2]')"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    assert_not_blank(browser.screenshot(out / "snapshot.png"))

    png = get(f"{cluster.http_url}/snapshots/{snapshot_id}.png")
    assert_not_blank(png)
    (out / "diagram.png").write_bytes(png)
    svg = get(f"{cluster.http_url}/snapshots/{snapshot_id}.svg").decode()
    assert svg.count('class="lane"') == 3
    api = json.loads(get(f"{cluster.http_url}/api/snapshots/{snapshot_id}"))
    assert api == document


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = get(url).decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_collector_metrics_move_while_the_workload_runs(cluster: LocalCluster) -> None:
    before = samples(cluster.http_url + "/metrics")
    complete = ("cl_snapshots_total", (("status", "complete"),))
    reports = ("cl_collector_reports_received_total", (("outcome", "accepted"),))
    take_snapshot(
        cluster.config,
        cluster.collector_address,
        ["n3"],
        "metrics-1",
        timeout=60,
        tls=cluster.operator_tls,
    )
    after = samples(cluster.http_url + "/metrics")
    assert after[complete] == before.get(complete, 0) + 1
    assert after[reports] > before.get(reports, 0)
    count = ("cl_snapshot_duration_seconds_count", (("status", "complete"),))
    assert after[count] == after[complete]


def test_node_metrics_move_and_count_reconnects(cluster: LocalCluster) -> None:
    def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
        return sum(v for (n, _), v in values.items() if n == name)

    first = samples(cluster.metrics_url("n1"))
    peers = {dict(labels)["peer"] for (name, labels) in first if name == "cl_node_unacked_frames"}
    assert peers == {"n2", "n3"}
    for name in ("cl_node_balance", "cl_node_channel_connected", "cl_node_active_snapshots"):
        assert any(n == name for n, _ in first), name
    reconnects = ("cl_node_reconnects_total", (("peer", "n2"),))
    assert first[reconnects] == 0
    deadline = time.monotonic() + 30
    while True:  # the workload keeps sending and committing
        later = samples(cluster.metrics_url("n1"))
        if total(later, "cl_node_transfers_sent_total") > total(
            first, "cl_node_transfers_sent_total"
        ) and total(later, "cl_node_commit_seconds_count") > total(
            first, "cl_node_commit_seconds_count"
        ):
            break
        assert time.monotonic() < deadline, "node metrics did not move"
        time.sleep(0.3)
    assert total(later, "cl_node_transfers_received_total") > 0
    # n2 restarts: n1's stream to it comes back, and that is a reconnect.
    cluster.kill_node("n2")
    cluster.start_node("n2")
    cluster.wait_healthy()
    deadline = time.monotonic() + 60
    while samples(cluster.metrics_url("n1"))[reconnects] < 1:
        assert time.monotonic() < deadline, "no reconnect counted"
        time.sleep(0.3)
