"""One node's runtime in-process: the core plus SQLite persistence, no gRPC.

    python -m benchmarks.runtime

Every batch of events a node applies runs `NodeRuntime.prepare` (the core
events, then one json.dumps(core.to_dict())), one SQLite transaction, and
`publish`. This times that path one event per transaction for received
transfer frames and for locally sent transfers, with SQLite synchronous
FULL (the default) / NORMAL / OFF; then received frames 16 and 256 per
transaction (what group commit does when events arrive together); and for received frames while
one snapshot records every incoming channel (each recorded message adds one
row to that event's transaction; the core JSON leaves them out, so the rate
over the last 10% of the run should match the whole run's). Ratios compare
with the same events applied to a bare NodeCore.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._common import table
from common.config import load_cluster
from common.logging import configure_logging
from node.core import NodeCore, Transfer
from node.runtime import NodeRuntime, ReceiveFrame
from node.storage import Store
from node.testing import write_cluster
from protos import chandy_lamport_pb2 as pb

NODE = "n1"
PEERS = ("n2", "n3", "n4", "n5")
EVENTS = 2_000
ROUNDS = 2
MODES = ("FULL", "NORMAL", "OFF")
GROUPS = (1, 16, 256)  # events per transaction (group commit)


def frames(count: int) -> list[pb.Frame]:
    """Transfer frames arriving round-robin from every peer, in seq order."""
    return [
        pb.Frame(
            sender=PEERS[i % len(PEERS)],
            receiver=NODE,
            seq=i // len(PEERS) + 1,
            transfer=pb.Transfer(transfer_seq=i // len(PEERS) + 1, amount=1 + i % 50),
        )
        for i in range(count)
    ]


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        cluster_file = workdir / "cluster.yaml"
        write_cluster(cluster_file, dict.fromkeys((NODE, *PEERS), 10**9))
        self.config = load_cluster(cluster_file, environ={})
        self.frames = frames(EVENTS)
        self.runs = 0

    def runtime(self, synchronous: str) -> tuple[NodeRuntime, Store]:
        self.runs += 1
        store = Store(self.workdir / f"data-{self.runs}", synchronous=synchronous)
        return NodeRuntime(self.config, NODE, store), store

    def receive(self, synchronous: str, snapshot: bool) -> tuple[float, float]:
        """(events/s over all EVENTS, events/s over the last tenth) of received frames."""
        runtime, store = self.runtime(synchronous)
        try:
            if snapshot:
                runtime.start_snapshot("bench")
            tail = len(self.frames) - len(self.frames) // 10
            start = time.perf_counter()
            for i, frame in enumerate(self.frames):
                if i == tail:
                    tail_start = time.perf_counter()
                runtime.receive(frame)
            end = time.perf_counter()
        finally:
            runtime.close()
            store.close()
        return len(self.frames) / (end - start), (len(self.frames) // 10) / (end - tail_start)

    def grouped(self, synchronous: str, size: int) -> float:
        """Events/s of received frames applied `size` at a time (group commit)."""
        runtime, store = self.runtime(synchronous)
        try:
            start = time.perf_counter()
            for i in range(0, len(self.frames), size):
                runtime.apply([ReceiveFrame(f) for f in self.frames[i : i + size]])
            return len(self.frames) / (time.perf_counter() - start)
        finally:
            runtime.close()
            store.close()

    def send(self, synchronous: str) -> float:
        runtime, store = self.runtime(synchronous)
        try:
            start = time.perf_counter()
            for i in range(EVENTS):
                runtime.send_transfer(PEERS[i % len(PEERS)], 1)
            return EVENTS / (time.perf_counter() - start)
        finally:
            runtime.close()
            store.close()


def core_rate() -> float:
    """Events/s of the same receives applied to a bare NodeCore."""
    events = [
        (PEERS[i % len(PEERS)], Transfer(i // len(PEERS) + 1, 1 + i % 50))
        for i in range(EVENTS * 10)
    ]
    best = 0.0
    for _ in range(5):
        core = NodeCore(NODE, 10**9, PEERS, PEERS)
        start = time.perf_counter()
        for sender, transfer in events:
            core.receive(sender, transfer)
        best = max(best, len(events) / (time.perf_counter() - start))
    return best


def main() -> None:
    started = time.perf_counter()
    configure_logging("WARNING", json=True)
    print(f"# benchmarks.runtime: NodeRuntime + SQLite in-process, {EVENTS:,} events per run")
    workdir = Path(tempfile.mkdtemp(prefix="cl-bench-runtime-"))
    try:
        bench = Bench(workdir)
        receive = {(m, s): (0.0, 0.0) for m in MODES for s in (False, True)}
        send = dict.fromkeys(MODES, 0.0)
        for _ in range(ROUNDS):
            for mode in MODES:
                send[mode] = max(send[mode], bench.send(mode))
                for snap in (False, True):
                    all_rate, tail_rate = bench.receive(mode, snap)
                    if all_rate > receive[(mode, snap)][0]:
                        receive[(mode, snap)] = (all_rate, tail_rate)
        grouped = {size: max(bench.grouped("FULL", size) for _ in range(ROUNDS)) for size in GROUPS}
        core = core_rate()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base = receive[("FULL", False)][0]
    rows = [["bare NodeCore.receive", "-", f"{core:,.0f}", "-", f"{core / base:,.0f}"]]
    for (mode, snap), (all_rate, tail_rate) in receive.items():
        rows.append([
            "receive, 1 snapshot recording" if snap else "receive",
            mode, f"{all_rate:,.0f}", f"{tail_rate:,.0f}", f"{all_rate / base:.2f}",
        ])  # fmt: skip
    for mode, rate in send.items():
        rows.append(["send_transfer", mode, f"{rate:,.0f}", "-", f"{rate / base:.2f}"])
    for size, rate in grouped.items():
        rows.append([
            f"receive, {size} per transaction (group commit)", "FULL", f"{rate:,.0f}", "-",
            f"{rate / base:.2f}",
        ])  # fmt: skip
    table(
        f"Events/s through NodeRuntime (best of {ROUNDS}); last 10% = the final "
        f"{EVENTS // 10} events of the run",
        ["event", "synchronous", "events/s", "events/s, last 10%", "ratio vs receive FULL"],
        rows,
    )
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
