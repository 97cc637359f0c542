"""Which core the simulation-based property tests drive: node/core.py's, or a mutant.

The property tests build their simulations with `current()`. `make mutants`
swaps in each planted-bug core of tests/mutants/ with `using(...)`; setting
CL_MUTANT=<name> (a key of tests.mutants.cores.MUTANTS) does the same for a
plain pytest run, to see how a mutant fails and replay its scenario.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from node.core import NodeCore
from simulator.engine import CoreFactory

_current: list[CoreFactory] = [NodeCore]


def current() -> CoreFactory:
    """The core factory the property tests use now."""
    if os.environ.get("CL_MUTANT") and _current[0] is NodeCore:
        from tests.mutants.cores import MUTANTS

        name = os.environ["CL_MUTANT"]
        if name not in MUTANTS:
            raise RuntimeError(f"CL_MUTANT={name!r}: expected one of {', '.join(MUTANTS)}")
        return MUTANTS[name].core
    return _current[0]


@contextmanager
def using(factory: CoreFactory) -> Iterator[None]:
    """Run the property tests against `factory` inside the block."""
    before = _current[0]
    _current[0] = factory
    try:
        yield
    finally:
        _current[0] = before
