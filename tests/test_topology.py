"""Named topologies and the reachability check (common/topology.py)."""

from __future__ import annotations

import pytest

from common.topology import TOPOLOGIES, build_channels, unreachable_pairs

IDS = ["n1", "n2", "n3", "n4", "n5"]


def test_complete() -> None:
    channels = build_channels("complete", IDS)
    assert len(channels) == 20 and len(set(channels)) == 20
    assert ("n1", "n5") in channels and ("n5", "n1") in channels


def test_ring_is_one_way() -> None:
    assert build_channels("ring", ["a", "b", "c"]) == [("a", "b"), ("b", "c"), ("c", "a")]


def test_star_hub_is_the_first_node() -> None:
    channels = build_channels("star", ["hub", "a", "b"])
    assert sorted(channels) == [("a", "hub"), ("b", "hub"), ("hub", "a"), ("hub", "b")]


def test_random_is_seeded() -> None:
    assert build_channels("random", IDS, seed=3) == build_channels("random", IDS, seed=3)
    variants = {tuple(build_channels("random", IDS, seed=s)) for s in range(20)}
    assert len(variants) > 1


@pytest.mark.parametrize("kind", TOPOLOGIES)
@pytest.mark.parametrize("n", range(2, 9))
def test_every_named_topology_is_strongly_connected(kind: str, n: int) -> None:
    ids = [f"n{i}" for i in range(n)]
    for seed in range(10 if kind == "random" else 1):
        channels = build_channels(kind, ids, seed=seed)
        assert unreachable_pairs(ids, channels) == []
        assert all(src != dst for src, dst in channels)
        assert len(set(channels)) == len(channels)
        assert {end for channel in channels for end in channel} == set(ids)


@pytest.mark.parametrize("kind", TOPOLOGIES)
def test_fewer_than_two_nodes_have_no_channels(kind: str) -> None:
    assert build_channels(kind, ["solo"]) == []
    assert build_channels(kind, []) == []


def test_unknown_topology() -> None:
    with pytest.raises(ValueError, match="unknown topology 'mesh'"):
        build_channels("mesh", IDS)


def test_unreachable_pairs() -> None:
    ids = ["a", "b", "c"]
    assert unreachable_pairs(ids, [("a", "b"), ("b", "c"), ("c", "a")]) == []
    assert unreachable_pairs(ids, [("a", "b"), ("b", "c")]) == [
        ("b", "a"),
        ("c", "a"),
        ("c", "b"),
    ]
    # two strongly connected halves joined one way
    halves = [("a", "b"), ("b", "a"), ("b", "c")]
    assert unreachable_pairs(ids, halves) == [("c", "a"), ("c", "b")]
    assert unreachable_pairs(["solo"], []) == []
    assert unreachable_pairs(["a", "b"], []) == [("a", "b"), ("b", "a")]
