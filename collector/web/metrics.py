"""The collector's Prometheus metrics, computed on scrape from what it already keeps.

    cl_snapshots_total{status}                 finished snapshots (complete | aborted)
    cl_snapshots_in_progress                   begun, not finished
    cl_snapshot_verification_failures_total    complete snapshots that failed verification
    cl_snapshot_duration_seconds{status}       histogram: begin to finish
    cl_collector_reports_received_total{outcome}   node reports, by what became of them

Nothing is counted on the report path except the outcome tally the servicer
keeps; everything else is derived from the snapshot index when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from collector.web.index import STATUSES, SnapshotIndex

# Snapshots take from milliseconds (loopback) to the abort timeout (30 s by default).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REPORT_OUTCOMES = ("accepted", "duplicate", "already_finished", "conflict", "invalid")


def histogram_buckets(
    values: list[float], bounds: tuple[float, ...]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets (with +Inf) and the sum of `values`."""
    buckets = [(floatToGoString(b), float(sum(1 for v in values if v <= b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


class CollectorMetrics(Collector):
    def __init__(
        self,
        index: SnapshotIndex,
        in_progress: Callable[[], int],
        report_outcomes: Callable[[], Mapping[str, int]],
    ) -> None:
        self.index = index
        self.in_progress = in_progress
        self.report_outcomes = report_outcomes

    def collect(self) -> Iterator[Any]:
        counts = self.index.counts(self.in_progress())
        total = CounterMetricFamily(
            "cl_snapshots", "Finished snapshots, by status.", labels=["status"]
        )
        total.add_metric(["complete"], counts.complete)
        total.add_metric(["aborted"], counts.aborted)
        yield total
        yield GaugeMetricFamily(
            "cl_snapshots_in_progress",
            "Snapshots begun and not finished yet.",
            value=counts.in_progress,
        )
        yield CounterMetricFamily(
            "cl_snapshot_verification_failures",
            "Complete snapshots that failed verification.",
            value=counts.verification_failures,
        )
        durations = HistogramMetricFamily(
            "cl_snapshot_duration_seconds",
            "Time from a snapshot's begin to its finish, by status.",
            labels=["status"],
        )
        for status in STATUSES:
            buckets, total_seconds = histogram_buckets(
                self.index.durations(status), DURATION_BUCKETS
            )
            durations.add_metric([status], buckets, total_seconds)
        yield durations
        reports = CounterMetricFamily(
            "cl_collector_reports_received",
            "Node reports received, by outcome.",
            labels=["outcome"],
        )
        tally = self.report_outcomes()
        for outcome in REPORT_OUTCOMES:
            reports.add_metric([outcome], tally.get(outcome, 0))
        yield reports


def collector_registry(metrics: CollectorMetrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry
