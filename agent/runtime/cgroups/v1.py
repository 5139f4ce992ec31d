"""cgroup v1: one hierarchy per controller (man 7 cgroups, "CGROUPS VERSION 1").

Each v1 controller is mounted on its own hierarchy, e.g. /sys/fs/cgroup/cpu and
/sys/fs/cgroup/memory, or several share one mount (``cpu,cpuacct``). A
container's cgroup is therefore one directory per hierarchy, all with the same
relative path, and a process must be written into the cgroup.procs of each.

Files used (Documentation/admin-guide/cgroup-v1/ in the kernel tree):
  cpu      cpu.cfs_period_us, cpu.cfs_quota_us (-1 = unlimited)    (sched-bwc)
  cpuacct  cpuacct.usage (ns)                                       (cpuacct.rst)
  memory   memory.limit_in_bytes, memory.memsw.limit_in_bytes (RAM+swap; exists
           only with swap accounting), memory.usage_in_bytes, memory.stat,
           memory.oom_control                                       (memory.rst)
  pids     pids.max, pids.current                                   (pids.rst)

The cpuset, devices, freezer and blkio hierarchies are optional: found if
mounted, used only for a cgroup made there with `make_in` (container_setup.py).
"""

from __future__ import annotations

import errno
import os

from ..lazylog import LazyLogger
from .base import (
    DEFAULT_CPU_PERIOD_US,
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
)

# typing.TYPE_CHECKING without importing typing: the hints below are for type
# checkers only, and the start path imports nothing for them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

log = LazyLogger(__name__)

CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
# Hierarchies a container joins only when asked to (mctl-runtime does, as
# runc: cpuset.py, devices.py, freezer.py, blkio.py make its cgroup there).
# The agent's own containers stay out of them: nothing it sets lives there.
OPTIONAL_CONTROLLERS = ("cpuset", "devices", "freezer", "blkio")

# v1 spells "no memory limit" as -1 on write; it reads back as PAGE_COUNTER_MAX
# in bytes (9223372036854771712 with 4 KiB pages).
UNLIMITED = "-1"


class V1Driver(CgroupDriver):
    """cgroup v1 over the given hierarchies: {controller: hierarchy root dir}.

    Comounted controllers map to the same directory, e.g.
    {"cpu": ".../cpu,cpuacct", "cpuacct": ".../cpu,cpuacct", ...}; each
    directory is then written once.
    """

    mode = "v1"
    _log = log

    def __init__(self, hierarchies: Mapping[str, str], ops: KernelOps | None = None) -> None:
        super().__init__(ops)
        missing = [c for c in CONTROLLERS if c not in hierarchies]
        if missing:
            raise ControllerUnavailable(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        self.hierarchies = {c: hierarchies[c] for c in CONTROLLERS}
        roots: list[str] = []
        seen: set[str] = set()
        for c in CONTROLLERS:
            real = os.path.realpath(self.hierarchies[c])
            if real not in seen:
                seen.add(real)
                roots.append(self.hierarchies[c])
        self._roots = roots
        # Optional hierarchies: {controller: root}, and their roots not already
        # among the required ones (a comount such as ``cpu,cpuset`` is one root).
        self.optional = {c: hierarchies[c] for c in OPTIONAL_CONTROLLERS if c in hierarchies}
        self._optional_roots: list[str] = []
        # path -> the optional roots make_in made it in, in this process: what
        # self_join_files adds without a stat per hierarchy on the agent's path.
        self._made_in: dict[str, list[str]] = {}
        for root in self.optional.values():
            real = os.path.realpath(root)
            if real not in seen:
                seen.add(real)
                self._optional_roots.append(root)

    def __repr__(self) -> str:
        return f"V1Driver({self.hierarchies!r})"

    @property
    def roots(self) -> list[str]:
        return list(self._roots)

    def _file(self, controller: str, path: str, name: str) -> str:
        return os.path.join(self.hierarchy(controller), check_path(path), name)

    def hierarchy(self, controller: str) -> str:
        """The root of `controller`'s hierarchy; ControllerUnavailable if it is not mounted."""
        root = self.hierarchies.get(controller) or self.optional.get(controller)
        if root is None:
            raise ControllerUnavailable(f"cgroup v1 controller {controller} is not mounted")
        return root

    def make_in(self, controller: str, path: str) -> list[str]:
        """Creates the cgroup in an optional controller's hierarchy; returns the
        directories from the top down (cpuset.py initializes new ones)."""
        root = self.hierarchy(controller)
        if root in self._optional_roots and root not in self._made_in.get(path, ()):
            self._made_in.setdefault(path, []).append(root)
        for attempt in range(3):
            try:
                return self._mkdirs_all(root, check_path(path))
            except FileNotFoundError as e:  # a parent removed by another destroy()
                if attempt == 2:
                    raise CgroupError(f"create {path} in {root}: {e}") from e
        raise AssertionError("unreachable")

    def _mkdirs_all(self, root: str, rel: str) -> list[str]:
        parts = rel.split("/")
        out = [os.path.join(root, *parts[:i + 1]) for i in range(len(parts))]
        for d in out:
            self._mkdir(d)
        return out

    def _dirs(self, path: str) -> list[tuple[str, str]]:
        # The required hierarchies always; an optional one where the cgroup
        # was made there, so joining, listing and destroy cover it too.
        dirs = super()._dirs(path)
        for root in self._optional_roots:
            d = os.path.join(root, path)
            if os.path.isdir(d):
                dirs.append((root, d))
        return dirs

    def file(self, controller: str, path: str, name: str) -> str:
        return self._file(controller, path, name)

    def self_join_files(self, path: str) -> list[str]:
        """Each hierarchy's `tasks` file: a thread that writes "0" there moves itself.

        Writing cgroup.procs write-locks cgroup_threadgroup_rwsem, whose
        rcu_sync waits for a normal RCU grace period whenever no migration
        happened just before: the largest single wait of a container start
        (bench/README.md, "cgroup.procs and the RCU grace period"). Writing 0 to
        `tasks` migrates only the calling thread, and the kernel then skips
        that lock (kernel/cgroup/cgroup.c, cgroup_procs_write_start: "If the
        thread is `current` ... we can skip the global lock"). The child that
        joins is a fork of a single-threaded process, so its one thread is
        the whole process: the outcome is the same as through cgroup.procs.
        """
        # The optional hierarchies only where make_in put the cgroup (mctl-runtime's
        # create, in this process): the agent's start pays no stat for them.
        made = [os.path.join(root, path, "tasks") for root in self._made_in.get(path, ())]
        return [os.path.join(d, "tasks") for _, d in super()._dirs(path)] + made

    def destroy(self, path: str, timeout: float = 2.0) -> None:
        super().destroy(path, timeout)
        self._made_in.pop(path, None)  # bounded by the cgroups alive in this process

    def _require(self, path: str) -> None:
        for root, d in super()._dirs(path):
            if not os.path.isdir(d):
                raise CgroupNotFound(f"cgroup {path} does not exist in {root}")

    def create(self, path: str, limits: Limits) -> None:
        rel = check_path(path)
        fresh = True
        for root in self._roots:
            # Another agent's destroy() may rmdir a shared empty parent ("mctl")
            # between our mkdirs; ENOENT then means "try again", not "fail".
            for attempt in range(3):
                try:
                    fresh = self._mkdirs(root, rel) and fresh
                    break
                except FileNotFoundError as e:
                    if attempt == 2:
                        raise CgroupError(f"create {path} in {root}: {e}") from e
        self._set(path, limits, fresh)

    def update(self, path: str, limits: Limits) -> None:
        self._require(path)
        self._set(path, limits)

    def _set(self, path: str, limits: Limits, fresh: bool = False) -> None:
        """Writes `limits`; on a `fresh` cgroup (made just now in every hierarchy),
        only those that differ from the kernel's defaults for a new cgroup
        (no quota over a 100 ms period, no memory limit, pids "max"): each write
        is on the path of a container's start, and its child waits for it."""
        if not (fresh and limits.cpu_quota_us is None
                and limits.cpu_period_us == DEFAULT_CPU_PERIOD_US):
            self._set_cpu(path, limits)
        if not (fresh and limits.memory_bytes is None):
            self._set_memory(path, limits)
        if not (fresh and limits.pids is None):
            self._write(
                self._file("pids", path, "pids.max"),
                "max" if limits.pids is None else str(limits.pids),
            )

    def _set_cpu(self, path: str, limits: Limits) -> None:
        period = self._file("cpu", path, "cpu.cfs_period_us")
        quota = self._file("cpu", path, "cpu.cfs_quota_us")
        quota_value = "-1" if limits.cpu_quota_us is None else str(limits.cpu_quota_us)
        try:
            self._write(period, str(limits.cpu_period_us))
        except CgroupWriteError as e:
            if e.errno != errno.EINVAL:
                raise
            # As runc does: a new period can be refused while the old quota is in
            # place (the bandwidth check against the parent uses quota/period);
            # writing the quota first then the period gets through.
            self._write(quota, quota_value)
            self._write(period, str(limits.cpu_period_us))
            return
        self._write(quota, quota_value)

    def _set_memory(self, path: str, limits: Limits) -> None:
        mem = self._file("memory", path, "memory.limit_in_bytes")
        memsw = self._file("memory", path, "memory.memsw.limit_in_bytes")
        value = UNLIMITED if limits.memory_bytes is None else str(limits.memory_bytes)
        if not os.path.exists(memsw):
            # No swap accounting (swapaccount=0): memory.limit_in_bytes is all we have.
            self._write(mem, value)
            return
        # The kernel keeps memsw >= memory at every step (EINVAL otherwise).
        # Setting memsw == memory means "no swap beyond the limit". Lowering:
        # memory first; raising (or removing the limit): memsw first.
        current = read_int(mem)  # unlimited reads back as a huge number, not -1
        raising = limits.memory_bytes is None or current < 0 or limits.memory_bytes > current
        if raising:
            self._write(memsw, value)
            self._write(mem, value)
        else:
            self._write(mem, value)
            self._write(memsw, value)

    def usage(self, path: str) -> Usage:
        self._require_one(path, "memory")
        usage = read_int(self._file("memory", path, "memory.usage_in_bytes"))
        stat = read_keyed(self._file("memory", path, "memory.stat"))
        # cAdvisor's working set: usage minus the hierarchy's inactive page cache.
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        return Usage(
            cpu_usage_ns=read_int(self._file("cpuacct", path, "cpuacct.usage")),
            memory_bytes=usage,
            memory_working_set=max(usage - inactive, 0),
            pids=read_int(self._file("pids", path, "pids.current")),
        )

    def oom_killed(self, path: str) -> int:
        self._require_one(path, "memory")
        # memory.oom_control: "oom_kill_disable 0\nunder_oom 0\noom_kill N"
        # (the oom_kill line exists since Linux 4.13).
        return read_keyed(self._file("memory", path, "memory.oom_control")).get("oom_kill", 0)

    def _require_one(self, path: str, controller: str) -> None:
        d = os.path.join(self.hierarchies[controller], check_path(path))
        if not os.path.isdir(d):
            raise CgroupNotFound(f"cgroup {path} does not exist in {self.hierarchies[controller]}")
