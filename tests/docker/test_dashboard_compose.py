"""The dashboard of the compose stack in a real headless Chromium.

`compose up`, find where the collector's HTTP port is published, open the
dashboard, take a snapshot with the initiator container, wait for the page's
own refresh to list it, open its page and check the DOM; screenshots must
not be blank. Node metrics ports are scraped too.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.browser import Browser, chromium_path
from tests.docker.conftest import ComposeProject
from tests.pngcheck import assert_not_blank

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

NODES = ["n1", "n2", "n3", "n4", "n5"]


def published(project: ComposeProject, service: str, port: int) -> str:
    out = project.run("port", service, str(port)).stdout.strip().splitlines()[-1]
    host, _, number = out.rpartition(":")
    return f"{host or '127.0.0.1'}:{number}"


@pytest.fixture(scope="module")
def stack(compose_project: ComposeProject) -> ComposeProject:
    compose_project.run("up", "-d")
    compose_project.wait_healthy(["collector", *NODES])
    return compose_project


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.fail("no Chromium: run scripts/install-chromium.sh (make test does)")
    with Browser.launch() as running:
        yield running


def test_dashboard_of_the_compose_stack(
    stack: ComposeProject, browser: Browser, tmp_path: Path
) -> None:
    out = Path(os.environ.get("CL_SCREENSHOT_DIR") or tmp_path)
    url = "http://" + published(stack, "collector", 8080)
    browser.goto(url + "/")
    browser.wait_for("document.querySelectorAll('#cluster tr[data-node]:not(.down)').length === 5")
    result = stack.run("run", "--rm", "initiator", "--snapshot-id", "compose-browser", "--json",
                       timeout=180)  # fmt: skip
    document = json.loads(result.stdout)
    assert document["status"] == "complete"
    browser.wait_for("document.querySelector('tr[data-snapshot=\"compose-browser\"]') !== null")
    assert_not_blank(browser.screenshot(out / "compose-dashboard.png"))
    browser.goto(url + "/snapshots/compose-browser")
    lanes = browser.evaluate(
        "[...document.querySelectorAll('#spacetime g.lane')].map(g => g.dataset.node)"
    )
    assert lanes == NODES
    assert browser.evaluate("document.querySelectorAll('#spacetime path.cut').length") == 4
    recorded = sum(len(c["messages"]) for c in document["channels"])
    assert (
        browser.evaluate("document.querySelectorAll('#spacetime circle.crossing').length")
        == recorded
    )
    assert_not_blank(browser.screenshot(out / "compose-snapshot.png"))
    with urllib.request.urlopen(f"{url}/snapshots/compose-browser.png", timeout=30) as reply:
        assert reply.headers["Content-Type"] == "image/png"
        assert_not_blank(reply.read())

    with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    expected = {"cl_snapshots", "cl_snapshot_duration_seconds", "cl_collector_reports_received"}
    assert expected <= names

    node_url = "http://" + published(stack, "n1", 9100) + "/metrics"
    with urllib.request.urlopen(node_url, timeout=10) as reply:
        families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
    sent = families["cl_node_transfers_sent"]
    assert {s.labels["peer"] for s in sent.samples} == {"n2", "n3", "n4", "n5"}
    assert sum(s.value for s in sent.samples) > 0
    for name in ("cl_node_unacked_frames", "cl_node_reconnects", "cl_node_commit_seconds"):
        assert name in families, name

