"""The dashboard with a long history: page load times at 1,000 stored snapshots.

    .venv/bin/python -m benchmarks.dashboard [--snapshots 1000] [--rounds 20]

Writes N snapshot files (3-node documents with timelines, one in ten aborted)
into a temporary directory, starts a real collector with its HTTP server on
it (the index reads every file once, at start), and measures, over real HTTP:
the dashboard page (first and last history page), the JSON history, one
snapshot page with its diagram, and the diagram as SVG and PNG. With
Chromium installed it also loads the dashboard in headless Chromium and
reports the browser's own load time (navigation start to load event).
Prints a Markdown table of medians; the goal is well under 1 s per page.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from collector.server import CollectorServer
from collector.testing import small_cluster
from common.files import atomic_write_json
from tests.diagram_documents import aborted_document, three_node_document


def write_history(directory: Path, count: int) -> None:
    complete, aborted = three_node_document(), aborted_document()
    for k in range(count):
        base = aborted if k % 10 == 0 else complete
        stamp = f"2026-11-21T{10 + k // 3600:02d}:{k // 60 % 60:02d}:{k % 60:02d}.000+00:00"
        document = dict(base, snapshot_id=f"h{k:05d}", completed_at=stamp)
        atomic_write_json(directory / f"h{k:05d}.json", document)


def timed(client: httpx.Client, path: str, rounds: int) -> tuple[float, int]:
    samples = []
    size = 0
    for _ in range(rounds):
        start = time.perf_counter()
        reply = client.get(path)
        samples.append(time.perf_counter() - start)
        reply.raise_for_status()
        size = len(reply.content)
    return statistics.median(samples), size


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard")
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "snapshots"
        directory.mkdir()
        write_history(directory, args.snapshots)
        started = time.perf_counter()
        server = CollectorServer(small_cluster(), str(directory), "127.0.0.1", 0, http_port=0)
        server.start()
        load = time.perf_counter() - started
        assert server.web is not None
        url = f"http://127.0.0.1:{server.web.port}"
        last_page = -(-args.snapshots // 20)
        rows = [
            ("dashboard, newest page", "/"),
            (f"dashboard, page {last_page} (oldest)", f"/?page={last_page}"),
            ("dashboard, aborted only", "/?status=aborted"),
            ("history JSON, 200 rows", "/api/snapshots?limit=200&page=2"),
            ("snapshot page + diagram", "/snapshots/h00501"),
            ("diagram SVG", "/snapshots/h00501.svg"),
            ("diagram PNG", "/snapshots/h00501.png"),
        ]
        print(f"{args.snapshots} stored snapshots; collector start with index load {load:.2f} s")
        print()
        print(f"| request | median of {args.rounds} | bytes |")
        print("| --- | --- | --- |")
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                for label, path in rows:
                    seconds, size = timed(client, path, args.rounds)
                    print(f"| {label} `{path}` | {seconds * 1000:.1f} ms | {size} |")
            browser_load(url)
        finally:
            server.stop(0.5)


def browser_load(url: str) -> None:
    from tests.browser import Browser, chromium_path

    if chromium_path() is None:
        print("\n(no Chromium: browser load time not measured)")
        return
    samples = []
    with Browser.launch() as browser:
        for _ in range(5):
            browser.goto(url + "/")
            samples.append(
                browser.evaluate(
                    "(() => { const t = performance.getEntriesByType('navigation')[0];"
                    " return t.loadEventEnd - t.startTime; })()"
                )
            )
    print(
        f"| dashboard in headless Chromium, navigation to load event | "
        f"{statistics.median(samples):.0f} ms (median of 5) | |"
    )


if __name__ == "__main__":
    main()
