"""How many examples a property test asks for, scaled by the hypothesis profile.

A test that needs more examples than the default writes
`@settings(max_examples=examples(300))`. An explicit max_examples overrides
the profile, so on its own it would run 300 examples under every profile;
examples() keeps 300 under "ci" (100 examples by default) and scales it as
the loaded profile scales the default: a tenth under "fast". The profiles
are registered and loaded in tests/conftest.py, before test modules import.
"""

from __future__ import annotations

from hypothesis import settings


def examples(ci: int) -> int:
    """`ci` examples under "ci", as many in proportion under the loaded profile (at least 1)."""
    baseline = settings.get_profile("ci").max_examples
    return max(1, ci * settings.default.max_examples // baseline)
