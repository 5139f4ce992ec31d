"""Control groups: the cpu, memory and pids limits of a container (man 7 cgroups).

A cgroup is a directory in a cgroup filesystem. Processes listed in its
``cgroup.procs`` are accounted to it and held to the limits written into its
control files; child directories are child cgroups. Limits are hierarchical:
a child never gets more than its parent.

Linux has two versions, and machines differ in what they mount:

- v2 ("unified"): one hierarchy at /sys/fs/cgroup holding every controller,
  recognised by /sys/fs/cgroup/cgroup.controllers. Current distributions.
- v1: a hierarchy per controller (/sys/fs/cgroup/cpu, .../memory, .../pids),
  some possibly comounted (``cpu,cpuacct``), with /sys/fs/cgroup itself a
  tmpfs. A "hybrid" machine also mounts an (often controller-less) v2
  hierarchy at /sys/fs/cgroup/unified; this package leaves it alone.

Beyond cpu, memory and pids, `mctl-runtime` (as runc) also puts its
containers in the cpuset, devices, freezer and blkio controllers
(extras.py and the modules it names: cpuset.py, devices.py with
devices_bpf.py, blkio.py, freezer.py; stats.py reads them all for
`events`); the agent's own containers stay out of them.

`detect` probes once at agent start and returns the matching `CgroupDriver`;
everything else talks to that interface. mctl keeps its cgroups under a top
directory of its own at the root of each hierarchy, e.g.
``mctl/<node>/<container>``, because the agent itself may sit in some other
non-root cgroup.
"""

from __future__ import annotations

import os

from .base import (
    CgroupBusy,
    CgroupDriver,
    CgroupError,
    CgroupNotFound,
    CgroupWriteError,
    ControllerUnavailable,
    InvalidCgroupPath,
    KernelOps,
    Limits,
    Usage,
)
from .v1 import CONTROLLERS as _V1_REQUIRED
from .v1 import OPTIONAL_CONTROLLERS as _V1_OPTIONAL
from .v1 import V1Driver
from .v2 import V2Driver

__all__ = [
    "CgroupBusy",
    "CgroupDriver",
    "CgroupError",
    "CgroupNotFound",
    "CgroupWriteError",
    "ControllerUnavailable",
    "InvalidCgroupPath",
    "KernelOps",
    "Limits",
    "Usage",
    "V1Driver",
    "V2Driver",
    "detect",
    "v1_hierarchies",
]


def detect(
    root: str = "/sys/fs/cgroup",
    mountinfo: str = "/proc/self/mountinfo",
    ops: KernelOps | None = None,
) -> CgroupDriver:
    """Probe the cgroup layout under root once and return its driver.

    v2 if root itself is a unified mount (root/cgroup.controllers exists),
    otherwise v1 with each needed controller's hierarchy found by
    `v1_hierarchies`. Raises ControllerUnavailable if cpu, memory or pids (and
    cpuacct on v1) cannot be found, so an agent never runs containers unlimited.
    """
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return V2Driver(root, ops=ops)
    return V1Driver(v1_hierarchies(root, mountinfo), ops=ops)


V1_CONTROLLERS = (*_V1_REQUIRED, *_V1_OPTIONAL)


def v1_hierarchies(root: str, mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """{controller: mount directory} for the v1 controllers mctl uses (required or optional).

    Reads the cgroup (v1) mounts directly under root from mountinfo (man 5
    proc), whose super options name the controllers of each mount. When
    nothing under root is mounted (a test's temporary tree), falls back to the
    directory names: ``cpu,cpuacct`` serves both cpu and cpuacct. Real
    directories win over symlinks such as ``cpu -> cpu,cpuacct``.
    """
    found = _from_mountinfo(root, mountinfo)
    if found:
        return found
    try:
        entries = sorted(os.scandir(root), key=lambda e: (e.is_symlink(), e.name))
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for entry in entries:
        if not entry.is_dir():
            continue
        for name in entry.name.split(","):
            if name in V1_CONTROLLERS:
                out.setdefault(name, entry.path)
    return out


def _from_mountinfo(root: str, mountinfo: str) -> dict[str, str]:
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    root = os.path.normpath(root)
    out: dict[str, str] = {}
    for line in lines:
        # "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu"
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3 or rest[0] != "cgroup":
            continue
        mount_point = fields[4].replace("\\040", " ")
        if os.path.dirname(os.path.normpath(mount_point)) != root:
            continue
        for option in rest[2].split(","):
            if option in V1_CONTROLLERS:
                out.setdefault(option, mount_point)
    return out
