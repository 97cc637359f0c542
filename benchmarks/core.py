"""The pure state machine and the simulator: no I/O, no threads.

    python -m benchmarks.core

1. NodeCore.receive of transfers: events/s with no snapshot recording, and
   with 1 and 4 concurrent snapshots recording every incoming channel.
2. What the node persists on every event, json.dumps(core.to_dict()): time
   and size as the core remembers 0 / 100 / 1000 finished snapshot ids and
   as an active snapshot holds 1k / 10k recorded in-flight messages (which
   to_dict leaves out: each is persisted once, from its MessageRecorded
   action, so these rows should match the fresh core).
3. The simulator: deliveries/s on a 5-node complete graph, with and without
   snapshots being taken.
4. Memory (tracemalloc) of a core whose one active snapshot recorded N
   in-flight messages: bytes per recorded message.

Variants are timed in interleaved rounds and the best round of each is kept,
so the ratios printed compare numbers taken side by side in one run.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from functools import partial

from benchmarks._common import best_rate, best_seconds, table
from common.topology import build_channels
from node.core import FINISHED_MEMORY, Marker, NodeCore, Transfer
from simulator.engine import Simulation

NODE = "n1"
PEERS = ("n2", "n3", "n4", "n5")  # n1 of a 5-node complete graph
RECEIVES = 100_000
ROUNDS = 5


def new_core() -> NodeCore:
    return NodeCore(NODE, 10**12, PEERS, PEERS)


def transfers(count: int) -> list[tuple[str, Transfer]]:
    """`count` transfers arriving round-robin on every incoming channel, in seq order."""
    return [
        (PEERS[i % len(PEERS)], Transfer(i // len(PEERS) + 1, 1 + i % 50)) for i in range(count)
    ]


def finish_snapshots(core: NodeCore, count: int) -> None:
    """Run `count` snapshots to completion at `core` (initiate, then every marker)."""
    for i in range(count):
        sid = f"done-{i}"
        core.initiate_snapshot(sid)
        for peer in PEERS:
            core.receive(peer, Marker(sid))


# ------------------------------------------------------------------ receive


def bench_receive() -> float:
    """Returns the receive rate with no snapshot, for the summary line."""
    events = transfers(RECEIVES)

    def run(active: int) -> int:
        core = new_core()
        for i in range(active):
            core.initiate_snapshot(f"active-{i}")
        receive = core.receive
        for sender, transfer in events:
            receive(sender, transfer)
        return len(events)

    variants = (0, 1, 4)
    best = dict.fromkeys(variants, 0.0)
    for _ in range(ROUNDS):
        for active in variants:
            best[active] = max(best[active], best_rate(partial(run, active), 1))
    base = best[0]
    table(
        f"NodeCore.receive(transfer), {RECEIVES:,} events, best of {ROUNDS}",
        ["snapshots recording", "events/s", "us/event", "ratio vs none"],
        [
            [active, f"{rate:,.0f}", f"{1e6 / rate:.2f}", f"{rate / base:.2f}"]
            for active, rate in best.items()
        ],
    )
    return base


# -------------------------------------------------------------- persistence


def persist(core: NodeCore) -> str:
    """What NodeRuntime._apply and Store.commit do to the core on every event
    (plus one small row per MessageRecorded or LocalSnapshotDone, not measured
    here)."""
    return json.dumps(core.to_dict())


def bench_persist() -> float:
    """Returns the baseline seconds per persist, for the summary line."""
    cores: dict[str, NodeCore] = {}
    cores["fresh core"] = new_core()
    for finished in (100, FINISHED_MEMORY):
        core = new_core()
        finish_snapshots(core, finished)
        cores[f"{finished} finished ids"] = core
    for recorded in (1_000, 10_000):
        core = new_core()
        core.initiate_snapshot("active")
        for sender, transfer in transfers(recorded):
            core.receive(sender, transfer)
        cores[f"1 active, {recorded:,} recorded msgs"] = core
    core = new_core()
    finish_snapshots(core, FINISHED_MEMORY)
    core.initiate_snapshot("active")
    for sender, transfer in transfers(1_000):
        core.receive(sender, transfer)
    cores[f"{FINISHED_MEMORY} finished + 1 active, 1,000 msgs"] = core

    best = dict.fromkeys(cores, float("inf"))
    for _ in range(ROUNDS):
        for name, core in cores.items():
            repeat = 2_000 if "msgs" not in name else 50
            seconds = best_seconds(partial(persist, core), repeat, 1)
            best[name] = min(best[name], seconds)
    base = best["fresh core"]
    table(
        f"json.dumps(core.to_dict()), done once per event by the node, best of {ROUNDS}",
        ["core state", "us/persist", "JSON bytes", "ratio vs fresh"],
        [
            [name, f"{seconds * 1e6:,.1f}", f"{len(json.dumps(cores[name].to_dict())):,}",
             f"{seconds / base:,.1f}"]
            for name, seconds in best.items()
        ],
    )  # fmt: skip
    return base


# ---------------------------------------------------------------- simulator


def run_simulation(steps: int, snapshot_every: int) -> tuple[int, int, float]:
    """(deliveries, snapshots completed, seconds) of `steps` transfers, one tick each."""
    ids = [f"n{i}" for i in range(1, 6)]
    sim = Simulation(dict.fromkeys(ids, 10**9), build_channels("complete", ids), seed=7)
    rng = random.Random(7)
    peers = {src: [dst for s, dst in sim.channels if s == src] for src in ids}
    start = time.perf_counter()
    for step in range(steps):
        src = rng.choice(ids)
        sim.transfer(src, rng.choice(peers[src]), rng.randint(1, 50))
        if snapshot_every and step % snapshot_every == 0:
            sim.snapshot(rng.choice(ids))
        sim.tick()
    sim.run_until_quiet()
    seconds = time.perf_counter() - start
    stats = sim.statistics()
    return stats.delivered, stats.snapshots_completed, seconds


def bench_simulator() -> None:
    steps = 20_000
    variants = {"no snapshots": 0, "a snapshot every 100 transfers": 100,
                "a snapshot every 10 transfers": 10}  # fmt: skip
    best: dict[str, tuple[float, int, int]] = {name: (0.0, 0, 0) for name in variants}
    for _ in range(3):
        for name, every in variants.items():
            delivered, snapshots, seconds = run_simulation(steps, every)
            if delivered / seconds > best[name][0]:
                best[name] = (delivered / seconds, delivered, snapshots)
    base = best["no snapshots"][0]
    table(
        f"Simulator, 5-node complete graph, {steps:,} transfers (1 per tick), best of 3",
        ["variant", "deliveries", "snapshots", "deliveries/s", "ratio vs none"],
        [
            [name, f"{d:,}", s, f"{rate:,.0f}", f"{rate / base:.2f}"]
            for name, (rate, d, s) in best.items()
        ],
    )


# ------------------------------------------------------------------- memory


def traced_growth(active: int, count: int) -> tuple[int, int]:
    """(bytes kept, peak bytes) while a core with `active` snapshots receives `count`."""
    events = transfers(count)  # allocated before tracing: not counted
    core = new_core()
    for i in range(active):
        core.initiate_snapshot(f"active-{i}")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for sender, transfer in events:
        core.receive(sender, transfer)
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.reset_peak()
    before_persist = tracemalloc.get_traced_memory()[0]
    json.dumps(core.to_dict())
    persist_peak = tracemalloc.get_traced_memory()[1] - before_persist
    tracemalloc.stop()
    return kept, persist_peak


def bench_memory() -> None:
    count = 50_000
    rows = []
    for active in (0, 1, 4):
        kept, persist_peak = traced_growth(active, count)
        recorded = active * count
        rows.append([
            active,
            f"{kept / 1e6:,.2f}",
            f"{kept / count:,.0f}",
            f"{kept / recorded:,.0f}" if recorded else "-",
            f"{persist_peak / 1e6:,.2f}",
        ])  # fmt: skip
    table(
        f"tracemalloc: a core receives {count:,} transfers while snapshots record them",
        ["snapshots recording", "MB kept", "bytes per transfer",
         "bytes per recorded entry",
         "transient MB of one persist"],
        rows,
    )  # fmt: skip


def main() -> None:
    started = time.perf_counter()
    print("# benchmarks.core: pure NodeCore and simulator (no I/O)")
    receive_rate = bench_receive()
    persist_seconds = bench_persist()
    print(
        f"\nPersisting even a fresh core costs {persist_seconds * receive_rate:.1f}x "
        "the receive it follows (before SQLite is involved)."
    )
    bench_simulator()
    bench_memory()
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
