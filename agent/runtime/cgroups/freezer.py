"""The freezer: `mctl-runtime pause` stops every process of a container, `resume` lets them run.

A frozen process is stopped where it stands without being signalled (no
SIGSTOP for it to see or block), so a pause is invisible to the container.

v1: the freezer hierarchy (cgroup-v1/freezer-subsystem.rst). Writing
FROZEN to freezer.state starts the freeze; the state reads FREEZING until
every task is stopped, then FROZEN. As runc does, the write is repeated
until FROZEN is read or a deadline passes, then undone. THAWED resumes.
Every mctl-runtime container is made in this hierarchy (`setup`).

v2: cgroup.freeze holds 1 or 0 in every cgroup; the "frozen" key of
cgroup.events turns 1 once all is stopped (cgroup-v2.rst, "Core Interface
Files").

`state` is read by `mctl-runtime state` on every call (cli_state.py), so it
is a plain file read with no driver and no imports.
"""

from __future__ import annotations

import os
import time

from .base import CgroupDriver, CgroupWriteError, read_text

FROZEN, THAWED = "FROZEN", "THAWED"


def setup(driver: CgroupDriver, path: str) -> None:
    """Makes the container's cgroup in the v1 freezer hierarchy (nothing to do on v2)."""
    from .v1 import V1Driver

    if isinstance(driver, V1Driver) and "freezer" in driver.optional:
        driver.make_in("freezer", path)


def is_frozen(cgroup: str, root: str = "/sys/fs/cgroup") -> bool:
    """Whether the container's cgroup is frozen (or freezing); False if it has none."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        target = os.path.join(root, cgroup, "cgroup.freeze")
    else:
        target = os.path.join(root, "freezer", cgroup, "freezer.state")
    try:
        with open(target, "rb") as f:
            value = f.read().strip()
    except OSError:
        return False
    return value in (b"1", b"FROZEN", b"FREEZING")


def freeze(driver: CgroupDriver, path: str, timeout: float = 5.0) -> None:
    """Freezes every process in the cgroup; OSError if they are not all stopped in time."""
    if driver.mode == "v1":
        state = _v1_file(driver, path)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            _write(driver, state, FROZEN)
            if read_text(state).strip() == FROZEN:
                return
            if time.monotonic() >= deadline:
                _write(driver, state, THAWED)
                raise OSError(f"cgroup {path}: not frozen within {timeout}s (still FREEZING)")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    _write(driver, driver.file("", path, "cgroup.freeze"), "1")
    if not _wait_v2(driver, path, "1", timeout):
        _write(driver, driver.file("", path, "cgroup.freeze"), "0")
        raise OSError(f"cgroup {path}: not frozen within {timeout}s")


def thaw(driver: CgroupDriver, path: str, timeout: float = 5.0) -> None:
    """Lets every process of the cgroup run again."""
    if driver.mode == "v1":
        _write(driver, _v1_file(driver, path), THAWED)
        return
    _write(driver, driver.file("", path, "cgroup.freeze"), "0")
    _wait_v2(driver, path, "0", timeout)


def _v1_file(driver: CgroupDriver, path: str) -> str:
    state = driver.file("freezer", path, "freezer.state")
    if not os.path.exists(state):
        raise OSError(f"cgroup {path} is not in the freezer hierarchy "
                      "(the container was not created by mctl-runtime)")
    return state


def _wait_v2(driver: CgroupDriver, path: str, want: str, timeout: float) -> bool:
    events = driver.file("", path, "cgroup.events")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        for line in read_text(events).splitlines():
            key, _, value = line.partition(" ")
            if key == "frozen" and value.strip() == want:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _write(driver: CgroupDriver, target: str, value: str) -> None:
    try:
        driver.write_file(target, value)
    except CgroupWriteError as e:
        raise OSError(str(e)) from None
