"""The cpuset controller: which CPUs and memory nodes a container may use.

config.json's `linux.resources.cpu.cpus` and `.mems` are kernel cpu lists
("0-3,6"); the kernel checks them against the parent's and refuses the rest.

v1: a hierarchy of its own, where a new cgroup starts with EMPTY
cpuset.cpus and cpuset.mems, and a process cannot join a cgroup whose cpus
or mems are empty (ENOSPC). So, as runc does, every directory made on the
way down (``mctl-runtime``, then the container's) first copies its parent's
values, and only then are the container's own written. Every mctl-runtime
container is made in this hierarchy, as in runc, so its cpu data can be
read at its cgroup path (and through a `cgroup` mount inside it).

v2: the cpuset controller is enabled down to the container's cgroup
(V2Driver.enable) only when one of the fields is given; its cpuset.cpus and
cpuset.mems start empty meaning "the parent's", so nothing is copied.
"""

from __future__ import annotations

import os

from .base import CgroupDriver, CgroupError, CgroupWriteError, read_text

FIELDS = {"cpus": "cpuset.cpus", "mems": "cpuset.mems"}


def setup(driver: CgroupDriver, path: str, cpus: str | None, mems: str | None) -> None:
    """Puts the container's cgroup in the cpuset controller and writes cpus/mems if given."""
    from .v1 import V1Driver
    from .v2 import V2Driver

    if isinstance(driver, V1Driver):
        if "cpuset" not in driver.optional:
            if cpus is None and mems is None:
                return  # nothing asked for, and nowhere to put it
            raise OSError("linux.resources.cpu.cpus: the cpuset cgroup controller is not mounted")
        for d in driver.make_in("cpuset", path):
            _inherit(driver, d)
    elif isinstance(driver, V2Driver):
        if cpus is None and mems is None:
            return
        try:
            driver.enable(path, "cpuset")
        except (OSError, CgroupError) as e:
            raise OSError(f"linux.resources.cpu.cpus: {e}") from None
    update(driver, path, cpus, mems)


def update(driver: CgroupDriver, path: str, cpus: str | None, mems: str | None) -> None:
    """Writes the given values (create and `update`); OSError naming the field."""
    for field, value in (("cpus", cpus), ("mems", mems)):
        if value is None:
            continue
        try:
            driver.write_file(driver.file("cpuset", path, FIELDS[field]), value)
        except CgroupWriteError as e:
            raise OSError(f"linux.resources.cpu.{field}: {e}") from None


def _inherit(driver: CgroupDriver, d: str) -> None:
    """A v1 cpuset directory with empty cpus or mems gets its parent's (runc's copyIfNeeded)."""
    parent = os.path.dirname(d)
    for name in FIELDS.values():
        if read_text(os.path.join(d, name)).strip():
            continue
        value = read_text(os.path.join(parent, name)).strip()
        try:
            driver.write_file(os.path.join(d, name), value)
        except CgroupWriteError as e:
            raise OSError(f"cgroup {d}: {e}") from None
