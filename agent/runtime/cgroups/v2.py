"""cgroup v2: the unified hierarchy (man 7 cgroups, "CGROUPS VERSION 2").

One hierarchy holds every controller, so a container's cgroup is one
directory. A controller's files appear in a cgroup only once the parent lists
it in ``cgroup.subtree_control``, so creating ``mctl/node1/ctr`` enables
cpu, memory and pids in the root, in ``mctl`` and in ``mctl/node1``, in that
order (the "no internal processes" rule is why only the leaf holds processes).

Files used (Documentation/admin-guide/cgroup-v2.rst in the kernel tree):
  cpu.max "QUOTA PERIOD" ("max PERIOD" = unlimited), cpu.stat usage_usec;
  memory.max, memory.swap.max, memory.oom.group, memory.current,
  memory.stat inactive_file, memory.events oom_kill;
  pids.max, pids.current; cgroup.kill (Linux 5.14+).
"""

from __future__ import annotations

import errno
import os

from ..lazylog import LazyLogger
from .base import (
    CgroupDriver,
    CgroupError,
    CgroupNotFound,
    CgroupWriteError,
    ControllerUnavailable,
    KernelOps,
    Limits,
    Usage,
    check_path,
    read_int,
    read_keyed,
    read_text,
)

log = LazyLogger(__name__)

CONTROLLERS = ("cpu", "memory", "pids")


class V2Driver(CgroupDriver):
    """cgroup v2 over the unified hierarchy mounted at root."""

    mode = "v2"
    _log = log

    def __init__(self, root: str, ops: KernelOps | None = None) -> None:
        super().__init__(ops)
        self.root = root
        available = read_text(os.path.join(root, "cgroup.controllers")).split()
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            raise ControllerUnavailable(
                f"cgroup v2 controllers not available in {root}: {', '.join(missing)}"
            )

    def __repr__(self) -> str:
        return f"V2Driver({self.root!r})"

    @property
    def roots(self) -> list[str]:
        return [self.root]

    def _file(self, path: str, name: str) -> str:
        return os.path.join(self.root, check_path(path), name)

    def file(self, controller: str, path: str, name: str) -> str:
        return self._file(path, name)  # one hierarchy for every controller

    def hierarchy(self, controller: str) -> str:
        """The one hierarchy's root, whatever the controller."""
        return self.root

    def enable(self, path: str, controller: str) -> None:
        """Makes `controller`'s files appear in the existing cgroup `path`.

        A controller is enabled for a cgroup in its parent's
        cgroup.subtree_control, which needs it enabled in the grandparent's,
        and so on up to the root: each is enabled from the top down (what
        create does for cpu, memory and pids). cpuset and io are only
        enabled for a container that asks for them (cpuset.py, blkio.py).
        """
        current = self.root
        for part in check_path(path).split("/"):
            available = read_text(os.path.join(current, "cgroup.controllers")).split()
            if controller not in available:
                raise ControllerUnavailable(
                    f"cgroup v2 controller {controller} is not available in {current}")
            control = os.path.join(current, "cgroup.subtree_control")
            if controller not in read_text(control).split():
                self._write(control, "+" + controller)
            current = os.path.join(current, part)

    def _require(self, path: str) -> None:
        if not os.path.isdir(os.path.join(self.root, check_path(path))):
            raise CgroupNotFound(f"cgroup {path} does not exist in {self.root}")

    def create(self, path: str, limits: Limits) -> None:
        rel = check_path(path)
        for attempt in range(3):
            try:
                self._make_path(rel)
                break
            except (FileNotFoundError, CgroupNotFound, CgroupWriteError) as e:
                # Another agent's destroy() may rmdir a shared empty parent
                # ("mctl") between our steps; ENOENT then means "try again".
                gone = not isinstance(e, CgroupWriteError) or e.errno == errno.ENOENT
                if not gone:
                    raise
                if attempt == 2:
                    raise CgroupError(f"create {path} in {self.root}: {e}") from e
        self._set(path, limits)

    def _make_path(self, rel: str) -> None:
        current = self.root
        for part in rel.split("/"):
            self._enable_controllers(current)
            current = os.path.join(current, part)
            self._mkdir(current)

    def _enable_controllers(self, d: str) -> None:
        """Make cpu, memory and pids available to the children of d."""
        available = read_text(os.path.join(d, "cgroup.controllers")).split()
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            raise ControllerUnavailable(f"controllers {', '.join(missing)} not available in {d}")
        control = os.path.join(d, "cgroup.subtree_control")
        enabled = read_text(control).split()
        todo = [c for c in CONTROLLERS if c not in enabled]
        if todo:
            self._write(control, " ".join("+" + c for c in todo))

    def update(self, path: str, limits: Limits) -> None:
        self._require(path)
        self._set(path, limits)

    def _set(self, path: str, limits: Limits) -> None:
        quota = "max" if limits.cpu_quota_us is None else str(limits.cpu_quota_us)
        self._write(self._file(path, "cpu.max"), f"{quota} {limits.cpu_period_us}")
        memory = "max" if limits.memory_bytes is None else str(limits.memory_bytes)
        self._write(self._file(path, "memory.max"), memory)
        swap = self._file(path, "memory.swap.max")
        if os.path.exists(swap):  # absent without swap accounting
            self._write(swap, "0")
        oom_group = self._file(path, "memory.oom.group")
        if os.path.exists(oom_group):  # Linux 4.19+
            # An OOM kills the whole container rather than one arbitrary process
            # in it, so the container fails as a unit and the monitor sees it.
            self._write(oom_group, "1")
        pids = "max" if limits.pids is None else str(limits.pids)
        self._write(self._file(path, "pids.max"), pids)

    def usage(self, path: str) -> Usage:
        self._require(path)
        current = read_int(self._file(path, "memory.current"))
        inactive = read_keyed(self._file(path, "memory.stat")).get("inactive_file", 0)
        return Usage(
            cpu_usage_ns=read_keyed(self._file(path, "cpu.stat")).get("usage_usec", 0) * 1000,
            memory_bytes=current,
            memory_working_set=max(current - inactive, 0),
            pids=read_int(self._file(path, "pids.current")),
        )

    def oom_killed(self, path: str) -> int:
        self._require(path)
        return read_keyed(self._file(path, "memory.events")).get("oom_kill", 0)

    def _kill_all(self, dirs: list[str]) -> None:
        # cgroup.kill SIGKILLs every process in the cgroup and its descendants
        # atomically, so forks cannot race the kill; older kernels lack it and
        # rely on destroy()'s kill loop alone.
        for d in dirs:
            kill = os.path.join(d, "cgroup.kill")
            if os.path.exists(kill):
                self._write(kill, "1")
