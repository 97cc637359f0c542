"""Helpers shared by the benchmarks: timing, tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def best_rate(run: Callable[[], int], rounds: int) -> float:
    """Events per second of `run` (which returns how many it did): best of `rounds`."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def best_seconds(run: Callable[[], object], repeat: int, rounds: int) -> float:
    """Seconds per call of `run`: the fastest of `rounds` rounds of `repeat` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            run()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table (so output pastes straight into the README)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
