"""Test tiers and hypothesis profiles for the whole suite.

Every test belongs to the tier its folder names, and is marked with it, so
one tier runs alone (`pytest -m unit`) and the gates of CI are explicit:

- unit: pure logic and loopback gRPC; no root, no kernel state, seconds.
- integration: a real etcd per module (store, cache, leader election).
- kernel: root and real kernel state (namespaces, cgroups, mounts, netlink);
  the files also mark themselves, with a skip when not root.
- e2e: real local clusters (etcd, schedulers, agents, containers, CLI).
- fault: real local clusters under faults (members killed, processes
  frozen, links down, a full disk), asserting nothing lost or doubled.

A test file elsewhere under tests/ is an error, not a test of no tier.

Property tests run under a hypothesis profile chosen by MCTL_HYPOTHESIS:
"ci" (the default: what deploy/test.sh runs) or "fast" (a tenth of the
examples, for the edit-test loop). Tests that ask for more examples than
the default write `max_examples=examples(N)` (tests/hypothesis_budget.py)
so that they shrink with the profile too, and keep N under "ci".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

TIERS = ("unit", "integration", "kernel", "e2e", "fault")
TESTS = Path(__file__).resolve().parent

# "ci" is hypothesis's own default (100 examples, 200 ms deadline), as every
# run before the profiles; "fast" keeps one example in ten.
settings.register_profile("ci", settings())
settings.register_profile("fast", settings(max_examples=10))
PROFILE = os.environ.get("MCTL_HYPOTHESIS", "ci")
if PROFILE not in ("ci", "fast"):
    raise pytest.UsageError(f"MCTL_HYPOTHESIS={PROFILE!r}: the profiles are ci and fast")
# Loaded while pytest reads this file, before any test module is imported,
# so examples() sees the profile when the tests' decorators run.
settings.load_profile(PROFILE)


def tier_of(path: Path) -> str | None:
    """The tier of a test file under tests/: the first folder, if it names one."""
    first = path.resolve().relative_to(TESTS).parts[0]
    return first if first in TIERS else None


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis profile: {PROFILE} (MCTL_HYPOTHESIS)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    outside: set[str] = set()
    for item in items:
        if not item.path.resolve().is_relative_to(TESTS):
            continue                   # not of this suite (pytest given another path too)
        tier = tier_of(item.path)
        if tier is None:
            outside.add(str(item.path.relative_to(TESTS.parent)))
        else:
            item.add_marker(getattr(pytest.mark, tier))
    if outside:
        raise pytest.UsageError("tests outside the tier folders of tests/ ("
                                + ", ".join(TIERS) + "): " + ", ".join(sorted(outside)))


# Cgroups the tests make for themselves are named mctl/test-*, in every
# hierarchy a runtime joins (runc and mctl-runtime also join cpuset,
# devices, freezer, blkio and name=systemd). A module's own leak check runs
# only if the module ends; this one covers the whole run: what is there at
# the end that was not there at the start is a leak (an earlier run's
# leftovers are reported by that run, not this one).
TEST_CGROUPS = "/sys/fs/cgroup/*/mctl/test-*"


def _test_cgroups() -> set[str]:
    import glob

    return set(glob.glob(TEST_CGROUPS))


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_CGROUPS_BEFORE] = _test_cgroups()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = sorted(_test_cgroups() - session.config.stash.get(_CGROUPS_BEFORE, set()))
    if left:
        session.config.get_terminal_writer().line(
            f"cgroups made by the tests and left behind: {', '.join(left)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_CGROUPS_BEFORE = pytest.StashKey[set[str]]()
