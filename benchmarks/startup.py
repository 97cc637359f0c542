"""What a user waits for at every `cl-initiator`, and what each node process
holds in memory, each beside its floor measured in the same run.

    python -m benchmarks.startup [--rounds N]

A 3-node local cluster (mutual TLS, light workload) runs throughout. Then,
in interleaved rounds (so that the load of a shared machine hits every
command alike), wall time of:
  - `python -c pass`: the interpreter with this venv's site;
  - `python -c "import grpc"`: the floor of any gRPC client in Python;
  - `cl-initiator --help`: options only, no cluster file, no call;
  - `cl-initiator --snapshot-id ...`: one real snapshot at N=3, start to the
    printed verified summary, the figure issue 8 sets a goal for (<= 80 ms).
Each is printed with its ratio to the `import grpc` floor.

Memory of each node (VmRSS, Pss and Private from /proc/PID/smaps_rollup,
after the snapshots), beside a floor process started meanwhile of the same stack: an asyncio
loop serving one grpc.aio server on loopback, nothing else.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import table
from benchmarks.figures import memory_mb, rss_mb
from demo.local_cluster import LocalCluster

# The floor of a node's memory: what python + asyncio + a serving grpc.aio server hold.
FLOOR_SERVER = """
import asyncio, sys
import grpc.aio

async def main():
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print("serving", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def wall_seconds(commands: dict[str, list[str]], rounds: int) -> dict[str, list[float]]:
    """Wall time of each command, `rounds` times, interleaved; a failed run stops the benchmark."""
    env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for index in range(rounds + 1):
        for name, argv in commands.items():
            argv = [part.replace("{index}", str(index)) for part in argv]
            started = time.perf_counter()
            result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr}")
            if index:  # the first round warms the page cache
                times[name].append(seconds)
    return times


def floor_server_memory() -> dict[str, float]:
    process = subprocess.Popen(
        [sys.executable, "-c", FLOOR_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "serving"
        time.sleep(0.5)
        return {"Rss": rss_mb(process.pid), **memory_mb(process.pid)}
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command")
    args = parser.parse_args()
    python = sys.executable
    cli = Path(python).parent / "cl-initiator"
    initiator = [str(cli)] if cli.exists() else [python, "-m", "initiator"]
    print("# benchmarks.startup: cl-initiator wall time and node memory, beside their floors")
    with tempfile.TemporaryDirectory(prefix="cl-bench-startup-") as workdir:
        cluster = LocalCluster(Path(workdir), nodes=3, transfer_rate=5.0, snapshot_timeout=30)
        try:
            cluster.start(timeout=120)
            commands = {
                "python -c pass": [python, "-c", "pass"],
                'python -c "import grpc" (floor)': [python, "-c", "import grpc"],
                "cl-initiator --help": [*initiator, "--help"],
                "cl-initiator, one snapshot, N=3": [
                    *initiator, "--cluster", str(cluster.config_path),
                    "--snapshot-id", "startup-{index}",
                ],  # fmt: skip
            }
            times = wall_seconds(commands, args.rounds)
            floor = statistics.median(times['python -c "import grpc" (floor)'])
            table(
                f"Wall time, {args.rounds} interleaved rounds",
                ["command", "p50 ms", "min ms", "p50 / import-grpc floor"],
                [
                    [
                        name,
                        f"{statistics.median(samples) * 1e3:.0f}",
                        f"{min(samples) * 1e3:.0f}",
                        f"{statistics.median(samples) / floor:.2f}",
                    ]
                    for name, samples in times.items()
                ],
            )
            nodes = [
                {"Rss": rss_mb(cluster.processes[n].pid), **memory_mb(cluster.processes[n].pid)}
                for n in cluster.node_ids
            ]
            base = floor_server_memory()  # while the nodes run: PSS shares pages alike
        finally:
            cluster.stop()
    rows = [
        [
            f"node, mean of {len(nodes)}",
            *(f"{statistics.mean(m[key] for m in nodes):.1f}" for key in ("Rss", "Pss", "Private")),
            f"{statistics.mean(m['Rss'] for m in nodes) / base['Rss']:.2f}",
        ],
        [
            "floor: python + asyncio + one serving grpc.aio server",
            *(f"{base[key]:.1f}" for key in ("Rss", "Pss", "Private")),
            "1.00",
        ],
    ]
    table(
        "Memory per node process (goal: RSS <= 40 MB)",
        ["process", "RSS MB", "PSS MB", "private MB", "RSS / floor"],
        rows,
    )


if __name__ == "__main__":
    main()
