"""The cgroup driver against the real kernel (man 7 cgroups).

Needs root. Runs on whatever detect() finds: cgroup v1 on the development
machines (cpu, cpuacct, memory, pids hierarchies), v2 on a pure-v2 host. Each
test works under its own top directory ``mctl-test-<random>`` at the root of
every hierarchy, never under the project's real "mctl" prefix, and a module
fixture checks at the end that no ``mctl-test-*`` directory is left anywhere.
"""

from __future__ import annotations

import glob
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from mctl.agent.runtime.cgroups import (
    CgroupDriver,
    ControllerUnavailable,
    Limits,
    V1Driver,
    V2Driver,
    detect,
)

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
]

MiB = 1 << 20
CGROUP_ROOT = "/sys/fs/cgroup"


def _leftovers() -> list[str]:
    return glob.glob(f"{CGROUP_ROOT}/mctl-test-*") + glob.glob(f"{CGROUP_ROOT}/*/mctl-test-*")


@pytest.fixture(scope="module", autouse=True)
def no_test_cgroups_left() -> Iterator[None]:
    assert _leftovers() == [], "stale test cgroups from an earlier run"
    yield
    assert _leftovers() == []


@pytest.fixture(scope="module")
def driver() -> CgroupDriver:
    try:
        return detect(CGROUP_ROOT)
    except ControllerUnavailable as e:
        pytest.skip(f"cgroup controllers missing: {e}")


@pytest.fixture
def prefix(driver: CgroupDriver) -> Iterator[str]:
    top = f"mctl-test-{secrets.token_hex(4)}"
    yield top
    # Whatever a failing test left: destroy() kills and removes nested cgroups too.
    driver.destroy(top, timeout=5.0)
    assert not driver.exists(top)


def kernel_file(driver: CgroupDriver, controller: str, path: str, name: str) -> str:
    if isinstance(driver, V1Driver):
        return os.path.join(driver.hierarchies[controller], path, name)
    assert isinstance(driver, V2Driver)
    return os.path.join(driver.root, path, name)


def read(driver: CgroupDriver, controller: str, path: str, name: str) -> str:
    with open(kernel_file(driver, controller, path, name)) as f:
        return f.read().strip()


def joiner(driver: CgroupDriver, path: str) -> Callable[[], None]:
    """A preexec_fn: the forked child writes "0" (itself) into each cgroup.procs."""
    files = driver.procs_files(path)

    def join() -> None:
        for procs in files:
            with open(procs, "w") as f:
                f.write("0")

    return join


def assert_unlimited(driver: CgroupDriver, path: str) -> None:
    """No cpu quota over a 100 ms period, no memory limit, pids "max"."""
    assert read(driver, "pids", path, "pids.max") == "max"
    if driver.mode == "v1":
        assert read(driver, "cpu", path, "cpu.cfs_quota_us") == "-1"
        assert read(driver, "cpu", path, "cpu.cfs_period_us") == "100000"
        assert int(read(driver, "memory", path, "memory.limit_in_bytes")) > 1 << 60
    else:
        assert read(driver, "cpu", path, "cpu.max") == "max 100000"
        assert read(driver, "memory", path, "memory.max") == "max"


def test_limits_read_back_from_the_kernel(driver, prefix):
    path = f"{prefix}/node1/c1"
    limits = Limits(cpu_quota_us=50_000, cpu_period_us=100_000, memory_bytes=32 * MiB, pids=16)
    driver.create(path, limits)
    driver.create(path, limits)  # idempotent
    assert driver.exists(path)
    if driver.mode == "v1":
        assert read(driver, "cpu", path, "cpu.cfs_quota_us") == "50000"
        assert read(driver, "cpu", path, "cpu.cfs_period_us") == "100000"
        assert read(driver, "memory", path, "memory.limit_in_bytes") == str(32 * MiB)
        if os.path.exists(kernel_file(driver, "memory", path, "memory.memsw.limit_in_bytes")):
            assert read(driver, "memory", path, "memory.memsw.limit_in_bytes") == str(32 * MiB)
    else:
        assert read(driver, "cpu", path, "cpu.max") == "50000 100000"
        assert read(driver, "memory", path, "memory.max") == str(32 * MiB)
        if os.path.exists(kernel_file(driver, "memory", path, "memory.swap.max")):
            assert read(driver, "memory", path, "memory.swap.max") == "0"
        assert read(driver, "memory", path, "memory.oom.group") == "1"
    assert read(driver, "pids", path, "pids.max") == "16"

    # Raising memory (memsw must move first on v1) then removing every limit.
    driver.update(path, Limits.from_millis(1500, 64 * MiB, 32))
    if driver.mode == "v1":
        assert read(driver, "cpu", path, "cpu.cfs_quota_us") == "150000"
        assert read(driver, "memory", path, "memory.limit_in_bytes") == str(64 * MiB)
    else:
        assert read(driver, "cpu", path, "cpu.max") == "150000 100000"
        assert read(driver, "memory", path, "memory.max") == str(64 * MiB)
    driver.update(path, Limits())
    assert_unlimited(driver, path)

    driver.destroy(path)
    assert not driver.exists(path)
    assert not driver.exists(prefix)  # empty parents went too
    assert not any(os.path.exists(os.path.join(r, prefix)) for r in driver.roots)


def test_a_new_unlimited_cgroup_reads_back_unlimited(driver, prefix):
    # create() writes no default on a cgroup it has just made (v1), trusting
    # the kernel's values for a new cgroup: these, whatever the parent holds.
    parent = f"{prefix}/node1"
    driver.create(parent, Limits.from_millis(500, 64 * MiB, 16))
    path = f"{parent}/fresh"
    driver.create(path, Limits())
    assert_unlimited(driver, path)
    driver.destroy(path)
    driver.destroy(parent)
    assert not driver.exists(prefix)


def test_sleep_joins_is_seen_and_destroy_kills_it(driver, prefix):
    path = f"{prefix}/node1/sleeper"
    driver.create(path, Limits.from_millis(500, 64 * MiB, 16))
    sleeper = subprocess.Popen(["sleep", "1000"], preexec_fn=joiner(driver, path))
    other = subprocess.Popen(["sleep", "1000"])
    try:
        driver.add_process(path, other.pid)
        assert driver.pids(path) == sorted([sleeper.pid, other.pid])
        usage = driver.usage(path)
        assert usage.pids == 2
        assert usage.cpu_usage_ns > 0  # the exec of sleep ran inside the cgroup
        assert usage.memory_bytes > 0
        assert 0 <= usage.memory_working_set <= usage.memory_bytes
        assert driver.oom_killed(path) == 0

        driver.destroy(path)
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert other.wait(timeout=5) == -signal.SIGKILL
        assert not driver.exists(path)
        assert not any(os.path.exists(os.path.join(r, prefix)) for r in driver.roots)
    finally:
        for p in (sleeper, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_shared_parent_survives_until_its_last_child(driver, prefix):
    a, b = f"{prefix}/node1/a", f"{prefix}/node1/b"
    driver.create(a, Limits())
    driver.create(b, Limits())
    driver.destroy(a)
    assert driver.list_children(f"{prefix}/node1") == ["b"]
    driver.destroy(b)
    assert not driver.exists(prefix)
    driver.destroy(b)  # idempotent


def test_memory_hog_is_oom_killed(driver, prefix):
    path = f"{prefix}/node1/hog"
    driver.create(path, Limits(memory_bytes=32 * MiB))
    # bytes * n fills every page (a bytearray(n) would be lazily zero-mapped).
    hog = subprocess.Popen(
        [sys.executable, "-c", "b = b'x' * (256 << 20)"],
        preexec_fn=joiner(driver, path),
    )
    assert hog.wait(timeout=30) == -signal.SIGKILL
    assert driver.oom_killed(path) >= 1
    driver.destroy(path)


def test_pids_limit_stops_forks(driver, prefix):
    path = f"{prefix}/node1/forker"
    limit = 8
    driver.create(path, Limits(pids=limit))
    script = (
        "import os, signal\n"
        "kids = []\n"
        "try:\n"
        "    for _ in range(50):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            signal.pause()\n"
        "        kids.append(pid)\n"
        "except BlockingIOError:\n"  # fork(2) fails with EAGAIN at pids.max
        "    print(len(kids), flush=True)\n"
        "signal.pause()\n"
    )
    forker = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=joiner(driver, path),
    )
    try:
        assert forker.stdout is not None
        forked = int(forker.stdout.readline())
        # pids.max counts tasks: the forker itself plus its children.
        assert forked == limit - 1
        assert driver.usage(path).pids == limit
        driver.destroy(path)  # kills the forker and its paused children
        assert forker.wait(timeout=5) == -signal.SIGKILL
    finally:
        if forker.poll() is None:
            forker.kill()
            forker.wait()
