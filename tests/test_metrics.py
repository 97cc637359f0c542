"""common/metrics.py: a node's metrics over a real HTTP server, parsed as Prometheus text."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import MetricsServer, NodeMetrics, NodeReading, parse_metrics_port


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_reading_on_scrape_and_hot_path_instruments() -> None:
    sent = {"n2": 0, "n3": 0}
    metrics = NodeMetrics(["n2", "n3"])
    metrics.read_with(
        lambda: NodeReading(
            balance=100 - sum(sent.values()),
            sent=dict(sent),
            received={"n2": 4},
            unacked={"n2": 2, "n3": 0},
            connected={"n2": True, "n3": False},
            active_snapshots=1,
        )
    )
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    try:
        first = scrape(server.port)
        sent["n2"] += 3
        metrics.reconnects.labels("n3").inc()
        metrics.commit_seconds.observe(0.002)
        second = scrape(server.port)
    finally:
        server.stop()
    peer = (("peer", "n2"),)
    assert first["cl_node_transfers_sent_total"][peer] == 0
    assert second["cl_node_transfers_sent_total"][peer] == 3
    assert second["cl_node_balance"][()] == 97
    assert second["cl_node_unacked_frames"][peer] == 2
    assert second["cl_node_channel_connected"][(("peer", "n3"),)] == 0
    assert first["cl_node_reconnects_total"][(("peer", "n3"),)] == 0
    assert second["cl_node_reconnects_total"][(("peer", "n3"),)] == 1
    assert second["cl_node_commit_seconds_count"][()] == 1
    assert second["cl_node_commit_seconds_bucket"][(("le", "0.0025"),)] == 1


@pytest.mark.parametrize(
    ("text", "port"), [(None, None), ("", None), ("off", None), ("9100", 9100)]
)
def test_metrics_port_setting(text: str | None, port: int | None) -> None:
    assert parse_metrics_port(text) == port


def test_bad_metrics_port_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="'x' is not a port number or 'off' \\(CL_METRICS_PORT\\)"):
        parse_metrics_port("x")
