"""Directed channel sets for named topologies, and a reachability check."""

from __future__ import annotations

from collections.abc import Sequence

TOPOLOGIES = ("complete", "ring", "star", "random")

Channel = tuple[str, str]


def build_channels(kind: str, ids: Sequence[str], seed: int = 0) -> list[Channel]:
    """Channels of a `kind` topology over `ids`; every result is strongly connected.

    complete: every ordered pair. ring: ids[0] -> ids[1] -> ... -> ids[0], one
    direction. star: ids[0] is the hub, with a channel each way to every other
    node. random: a ring in a seeded random order plus seeded extra channels.
    """
    ids = list(ids)
    if len(ids) < 2:
        return []
    if kind == "complete":
        return [(a, b) for a in ids for b in ids if a != b]
    if kind == "ring":
        return [(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))]
    if kind == "star":
        hub = ids[0]
        return [edge for leaf in ids[1:] for edge in ((hub, leaf), (leaf, hub))]
    if kind == "random":
        import random  # only this topology needs it (keeps CLI start-up light)

        rng = random.Random(seed)
        order = ids[:]
        rng.shuffle(order)
        channels = {(order[i], order[(i + 1) % len(order)]) for i in range(len(order))}
        for a in ids:
            for b in ids:
                if a != b and rng.random() < 0.3:
                    channels.add((a, b))
        return sorted(channels)
    raise ValueError(f"unknown topology {kind!r} (known: {', '.join(TOPOLOGIES)})")


def unreachable_pairs(ids: Sequence[str], channels: Sequence[Channel]) -> list[Channel]:
    """(src, dst) pairs such that no directed path leads from src to dst."""
    successors: dict[str, set[str]] = {node: set() for node in ids}
    for src, dst in channels:
        successors[src].add(dst)
    missing: list[Channel] = []
    for start in ids:
        seen = {start}
        frontier = [start]
        while frontier:
            for nxt in successors[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        missing += [(start, node) for node in ids if node not in seen]
    return missing
