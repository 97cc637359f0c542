"""Restore duration on real node processes (demo.local_cluster.LocalCluster, mutual TLS).

    python -m benchmarks.restore [N ...]        (default: 5 16)

For each cluster size N (complete graph, workload at 20 transfers/s per
node, 20 ms link delay so that snapshots record money in flight), ROUNDS
times: take a snapshot, let money move for a second, pause the workload,
then restore the snapshot and measure

- restore: `cl-initiator --restore` as the operator sees it (Collector.Restore:
  plan, prepare every node, commit point, commit every node, record complete);
- drained: from the request until every node has no unacknowledged frame
  (the resent in-flight transfers delivered and acknowledged);

and checks that the balances are then exactly the snapshot's plus its
in-flight money. Prints the medians per N and the N=16 / N=5 ratio.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import table
from demo.local_cluster import LocalCluster
from initiator import operations
from initiator.client import take_snapshot

ROUNDS = 3


def _expected(document: dict[str, Any]) -> dict[str, int]:
    balances = {node: int(state["balance"]) for node, state in document["nodes"].items()}
    for channel in document["channels"]:
        balances[channel["to"]] += sum(int(m["amount"]) for m in channel["messages"])
    return balances


def _drained(cluster: LocalCluster, timeout: float = 60.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [cluster.node_status(node) for node in cluster.node_ids]
        if not any(s.unacknowledged_frames for s in statuses):
            return {s.node_id: int(s.balance) for s in statuses}
        time.sleep(0.05)
    raise RuntimeError("channels did not drain")


def measure(nodes: int, workdir: Path) -> dict[str, Any]:
    restore_s: list[float] = []
    drained_s: list[float] = []
    in_flight = 0
    with LocalCluster(
        workdir, nodes=nodes, topology="complete", transfer_rate=20, link_delay_ms=20
    ) as cluster:
        cluster.start(timeout=120)
        tls = cluster.operator_tls
        for round_ in range(ROUNDS):
            operations.set_workload(cluster.config, True, tls=tls)
            time.sleep(1.0)
            outcome = take_snapshot(
                cluster.config, cluster.collector_address, ["n1"], f"bench-{round_}",
                timeout=60, tls=tls,
            )  # fmt: skip
            document = outcome.document
            assert document is not None and document["status"] == "complete", document
            in_flight += sum(len(ch["messages"]) for ch in document["channels"])
            time.sleep(1.0)
            operations.set_workload(cluster.config, False, tls=tls)
            _drained(cluster)
            started = time.perf_counter()
            record = operations.restore(
                cluster.collector_address, document["snapshot_id"], 60, tls=tls
            )
            restore_s.append(time.perf_counter() - started)
            assert record["outcome"] == "complete", record
            balances = _drained(cluster)
            drained_s.append(time.perf_counter() - started)
            assert balances == _expected(document), (balances, _expected(document))
    return {
        "nodes": nodes,
        "channels": nodes * (nodes - 1),
        "restore_s": statistics.median(restore_s),
        "drained_s": statistics.median(drained_s),
        "in_flight": in_flight / ROUNDS,
    }


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [5, 16]
    results = []
    with tempfile.TemporaryDirectory(prefix="cl-bench-restore-") as tmp:
        for n in sizes:
            results.append(measure(n, Path(tmp) / f"n{n}"))
    table(
        "Restore duration (complete graph, mutual TLS, loopback)",
        ["nodes", "channels", "restore (median s)", "until drained (median s)",
         "in flight per snapshot"],
        [
            [r["nodes"], r["channels"], f"{r['restore_s']:.3f}", f"{r['drained_s']:.3f}",
             f"{r['in_flight']:.1f}"]
            for r in results
        ],
    )  # fmt: skip
    if len(results) >= 2:
        first, last = results[0], results[-1]
        print(
            f"ratio N={last['nodes']} / N={first['nodes']}: restore "
            f"{last['restore_s'] / first['restore_s']:.2f}x, until drained "
            f"{last['drained_s'] / first['drained_s']:.2f}x"
        )
    print(f"{ROUNDS} rounds per size; every restore complete, balances exact")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
