"""Hypothesis profiles of the property suite, chosen with HYPOTHESIS_PROFILE.

fast     (default, what `make test` and CI run) a fixed, derandomized set of
         examples sized so the property suite (tests/test_simulator_properties.py
         and tests/test_oracle*.py) stays under ~2 minutes on a busy 2-core machine.
slow     new random examples every run, each property test's count multiplied
         by SLOW_SCALE: >= 100,000 executions in all (`make test-slow`).
mutants  what `make mutants` runs against each planted-bug core: derandomized,
         no shrinking (finding the bug is the point), fewer examples.

Every property test takes its example count from `examples(n)`, where n is
its count in the fast profile, so one switch scales the whole suite.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")
SLOW_SCALE = int(os.environ.get("CL_SLOW_SCALE", "120"))
MUTANT_SCALE = 0.5

_common = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
}
settings.register_profile("fast", derandomize=True, **_common)  # type: ignore[arg-type]
settings.register_profile("slow", derandomize=False, **_common)  # type: ignore[arg-type]
settings.register_profile(
    "mutants",
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    **_common,  # type: ignore[arg-type]
)
if PROFILE not in ("fast", "slow", "mutants"):
    raise RuntimeError(f"HYPOTHESIS_PROFILE={PROFILE!r}: expected fast, slow or mutants")
settings.load_profile(PROFILE)


def examples(fast: int) -> int:
    """A property test's example count in the active profile (`fast` in the fast one)."""
    if PROFILE == "slow":
        return fast * SLOW_SCALE
    if PROFILE == "mutants":
        return max(10, int(fast * MUTANT_SCALE))
    return fast


def property_settings(fast: int) -> settings:
    """The @settings of a property test that runs `fast` examples in the fast profile."""
    return settings(settings.get_profile(PROFILE), max_examples=examples(fast))
