"""The reconnect schedule of a channel sender (node/channels.py `Backoff`).

Peers that lose the same node must not retry in lockstep: each delay is drawn
from [d/2, d] where d doubles from `initial` up to `maximum`, and a success
starts over from `initial`.
"""

from __future__ import annotations

import random

import pytest

from node.channels import Backoff


@pytest.mark.parametrize("seed", range(20))
def test_each_delay_is_within_half_to_full_of_the_doubling_bound(seed: int) -> None:
    backoff = Backoff(0.2, 2.0, rng=random.Random(seed))
    bounds = [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]
    for bound in bounds:
        delay = backoff.next()
        assert bound / 2 <= delay <= bound, (seed, bound, delay)
    backoff.reset()
    assert 0.1 <= backoff.next() <= 0.2


def test_never_beyond_the_maximum_however_long_it_fails() -> None:
    backoff = Backoff(0.05, 1.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(200)]
    assert max(delays) <= 1.0
    assert min(delays[10:]) >= 0.5  # capped at 1.0, so drawn from [0.5, 1.0]


def test_peers_that_lost_the_same_node_spread_out() -> None:
    """Ten senders, default (unseeded) randomness: their first retries differ,
    and after a few failures they are spread over a good part of [d/2, d]."""
    senders = [Backoff() for _ in range(10)]
    first = [b.next() for b in senders]
    assert len(set(first)) == 10
    fourth = [[b.next() for _ in range(3)][-1] for b in senders]
    assert max(fourth) - min(fourth) > 0.1  # bound 1.6: draws from [0.8, 1.6]

