"""The cgroup driver interface shared by the v1 and v2 implementations.

A control group (man 7 cgroups) is a directory in a cgroup filesystem: its
files hold the limits (``cpu.max``, ``memory.limit_in_bytes``, ...) and the
accounting (``cpu.stat``, ``memory.stat``, ...) of the processes listed in its
``cgroup.procs``. Everything a driver does is mkdir, rmdir, and reading or
writing those small files, plus kill(2) when a cgroup must be emptied.

Following youki's libcgroups, a driver takes the root path(s) of its
hierarchies instead of assuming ``/sys/fs/cgroup``, and every call that changes
kernel state (mkdir, rmdir, write, kill) goes through one seam, `KernelOps`,
so unit tests run the real driver code over a temporary directory with a fake
that behaves like cgroupfs. Reads go straight to the files: a plain file in a
temporary directory reads like a cgroup file.

Paths given to a driver are relative to the hierarchy root, e.g.
``"mctl/node1/default_web-abc12"``; the driver maps them onto each hierarchy.
"""

from __future__ import annotations

import errno
import os
import time
from abc import ABC, abstractmethod

from ..lazylog import LazyLogger
from ..record import Record
from ..signals import SIGKILL

# typing.TYPE_CHECKING without importing typing: the hints below are for type
# checkers only, and the start path imports nothing for them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

log = LazyLogger(__name__)

# The kernel refuses CFS periods outside [1ms, 1s] and quotas below 1ms
# (kernel/sched/core.c: min_cfs_quota_period, max_cfs_quota_period), on v1 and v2.
MIN_CPU_PERIOD_US = 1_000
MAX_CPU_PERIOD_US = 1_000_000
MIN_CPU_QUOTA_US = 1_000
DEFAULT_CPU_PERIOD_US = 100_000


# -- errors -----------------------------------------------------------------


class CgroupError(Exception):
    """A cgroup operation failed; the message names the file or cgroup."""


class InvalidCgroupPath(CgroupError, ValueError):
    """A cgroup path that is absolute, empty, or climbs out with '..'."""


class CgroupNotFound(CgroupError):
    """The cgroup does not exist (e.g. usage() of a destroyed container)."""


class ControllerUnavailable(CgroupError):
    """A controller the driver needs (cpu, cpuacct, memory, pids) is not mounted/enabled."""


class CgroupBusy(CgroupError):
    """destroy() could not empty or remove a cgroup within its timeout."""


class CgroupWriteError(CgroupError):
    """The kernel refused a write; names the file and the value."""

    def __init__(self, path: str, value: str, cause: OSError) -> None:
        super().__init__(f"write {value!r} to {path}: {cause.strerror or cause}")
        self.path = path
        self.value = value
        self.errno = cause.errno


# -- values -----------------------------------------------------------------


class Limits(Record):
    """Resource limits of one cgroup; None means unlimited.

    cpu_quota_us of CPU time per cpu_period_us (so 50_000/100_000 is half a CPU);
    memory_bytes is RAM with no swap beyond it; pids caps processes+threads.
    """

    __slots__ = ("cpu_quota_us", "cpu_period_us", "memory_bytes", "pids")

    def __init__(self, cpu_quota_us: int | None = None,
                 cpu_period_us: int = DEFAULT_CPU_PERIOD_US,
                 memory_bytes: int | None = None, pids: int | None = None) -> None:
        self.cpu_quota_us = cpu_quota_us
        self.cpu_period_us = cpu_period_us
        self.memory_bytes = memory_bytes
        self.pids = pids
        if not MIN_CPU_PERIOD_US <= self.cpu_period_us <= MAX_CPU_PERIOD_US:
            raise ValueError(
                f"cpu period {self.cpu_period_us}us outside "
                f"[{MIN_CPU_PERIOD_US}, {MAX_CPU_PERIOD_US}]"
            )
        if self.cpu_quota_us is not None and self.cpu_quota_us < MIN_CPU_QUOTA_US:
            raise ValueError(f"cpu quota {self.cpu_quota_us}us below {MIN_CPU_QUOTA_US}us")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError(f"memory limit {self.memory_bytes} must be positive")
        if self.pids is not None and self.pids <= 0:
            raise ValueError(f"pids limit {self.pids} must be positive")

    @classmethod
    def from_millis(
        cls,
        cpu_millis: int | None,
        memory_bytes: int | None,
        pids: int | None,
        period_us: int = DEFAULT_CPU_PERIOD_US,
    ) -> Limits:
        """Limits from scheduler units: millicores, bytes, process count.

        None or 0 means "no limit" for each (proto3's unset value, and
        Kubernetes' convention for a zero CPU limit). Like the kubelet
        (milliCPUToQuota), a quota below the kernel's 1ms minimum is raised to it.
        """
        quota: int | None = None
        if cpu_millis:
            if cpu_millis < 0:
                raise ValueError(f"cpu millis {cpu_millis} must not be negative")
            quota = max(cpu_millis * period_us // 1000, MIN_CPU_QUOTA_US)
        return cls(
            cpu_quota_us=quota,
            cpu_period_us=period_us,
            memory_bytes=memory_bytes or None,
            pids=pids or None,
        )


class Usage(Record):
    """A usage sample read from the cgroup files.

    memory_working_set is usage minus inactive file cache, the figure the
    kubelet and cAdvisor report and evict on.
    """

    __slots__ = ("cpu_usage_ns", "memory_bytes", "memory_working_set", "pids")

    def __init__(self, cpu_usage_ns: int, memory_bytes: int, memory_working_set: int,
                 pids: int) -> None:
        self.cpu_usage_ns = cpu_usage_ns
        self.memory_bytes = memory_bytes
        self.memory_working_set = memory_working_set
        self.pids = pids


# -- the kernel seam ----------------------------------------------------------


class KernelOps:
    """The calls that change kernel state; a unit test substitutes a fake.

    On cgroupfs mkdir makes the kernel populate the control files and rmdir
    removes a directory that still lists them; a plain temporary directory can
    only imitate that through a fake of these methods.
    """

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def write(self, path: str, value: str) -> None:
        # No O_CREAT: cgroupfs files exist or the controller is missing, and a
        # missing file must fail (ENOENT) rather than be created.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)


# -- small file helpers -------------------------------------------------------


def read_text(path: str) -> str:
    """The whole content of a small cgroup file; CgroupNotFound if it is missing."""
    try:
        with open(path, "rb") as f:
            return f.read().decode()
    except FileNotFoundError as e:
        raise CgroupNotFound(f"{path}: no such file") from e
    except OSError as e:
        raise CgroupError(f"read {path}: {e.strerror or e}") from e


def read_int(path: str) -> int:
    """A file holding one integer (``memory.current``, ``pids.current``, ...)."""
    text = read_text(path).strip()
    try:
        return int(text)
    except ValueError as e:
        raise CgroupError(f"{path}: expected an integer, got {text!r}") from e


def read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file of ``key value`` lines (``memory.stat``, ``cpu.stat``, ...)."""
    out: dict[str, int] = {}
    for line in read_text(path).splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue  # tolerate keys with non-integer values rather than fail a sample
    return out


def read_pids(path: str) -> list[int]:
    """The pids listed in a ``cgroup.procs`` file; [] if the cgroup is gone."""
    try:
        with open(path, "rb") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def check_path(path: str) -> str:
    """Validate a path relative to the hierarchy root and return it normalized."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidCgroupPath(f"cgroup path {path!r} must be relative, like 'mctl/node/ctr'")
    return path


# -- the driver ---------------------------------------------------------------


class CgroupDriver(ABC):
    """One interface over cgroup v1 and v2, chosen once at start by detect().

    Subclasses say where a cgroup lives in each hierarchy (`_dirs`) and how to
    write limits and read usage; joining, listing, and destroying work the same
    on both versions and are implemented here.
    """

    mode: str  # "v1" or "v2"
    _log: LazyLogger = log  # each driver logs its kernel calls under its own module

    def __init__(self, ops: KernelOps | None = None) -> None:
        self._ops = ops or KernelOps()

    # - what each version provides -

    @property
    @abstractmethod
    def roots(self) -> list[str]:
        """The root directory of each hierarchy the driver uses, without duplicates."""

    @abstractmethod
    def create(self, path: str, limits: Limits) -> None:
        """Create the cgroup (and missing parents) and set its limits. Idempotent."""

    @abstractmethod
    def update(self, path: str, limits: Limits) -> None:
        """Set new limits on an existing cgroup; CgroupNotFound if it does not exist."""

    @abstractmethod
    def usage(self, path: str) -> Usage:
        """Read cpu, memory and pids usage; CgroupNotFound if it does not exist."""

    @abstractmethod
    def oom_killed(self, path: str) -> int:
        """How many processes the kernel OOM killer has killed in the cgroup."""

    @abstractmethod
    def file(self, controller: str, path: str, name: str) -> str:
        """The control file `name` of the cgroup in `controller`'s hierarchy."""

    def write_file(self, target: str, value: str) -> None:
        """Writes a control file (CgroupWriteError naming it and the value on failure)."""
        self._write(target, value)

    # - shared behaviour -

    def _dirs(self, path: str) -> list[tuple[str, str]]:
        """(hierarchy root, cgroup directory) for every hierarchy."""
        rel = check_path(path)
        return [(root, os.path.join(root, rel)) for root in self.roots]

    def procs_files(self, path: str) -> list[str]:
        """The cgroup.procs file of the cgroup in each hierarchy.

        A freshly forked child joins by writing "0" to each (the kernel reads 0
        as "the writing process"), before exec, without knowing its own pid.
        """
        return [os.path.join(d, "cgroup.procs") for _, d in self._dirs(path)]

    def self_join_files(self, path: str) -> list[str]:
        """The files a freshly forked, single-threaded child writes "0" to, to join.

        cgroup.procs here; V1Driver names its `tasks` files instead (why there).
        """
        return self.procs_files(path)

    def add_process(self, path: str, pid: int) -> None:
        """Move a process (all its threads) into the cgroup in every hierarchy."""
        for procs in self.procs_files(path):
            self._write(procs, str(pid))

    def pids(self, path: str) -> list[int]:
        """All processes in the cgroup (the union over hierarchies), sorted."""
        found: set[int] = set()
        for procs in self.procs_files(path):
            found.update(read_pids(procs))
        return sorted(found)

    def exists(self, path: str) -> bool:
        """True if the cgroup exists in any hierarchy (so sweeps find half-made ones)."""
        return any(os.path.isdir(d) for _, d in self._dirs(path))

    def list_children(self, path: str) -> list[str]:
        """Names of the child cgroups of path, over all hierarchies, sorted."""
        names: set[str] = set()
        for _, d in self._dirs(path):
            try:
                with os.scandir(d) as it:
                    names.update(e.name for e in it if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return sorted(names)

    def destroy(self, path: str, timeout: float = 2.0) -> None:
        """Kill everything in the cgroup, remove it everywhere, then empty parents.

        Idempotent: a missing cgroup is fine. Child cgroups (a container may make
        its own) are removed too. Raises CgroupBusy if processes survive or a
        directory cannot be removed within timeout.
        """
        dirs = self._dirs(path)
        # Most cgroups are empty by now (the container's init was reaped, and
        # with it the pid namespace): the kernel refuses to rmdir one that
        # holds a process or a child cgroup (EBUSY), so a plain rmdir of each
        # is the check and the removal in one call. Only a refusal pays for
        # the walk, the reads of cgroup.procs and the kills below.
        if all(self._remove_leaf(d) for _, d in dirs):
            for root, d in dirs:
                self._remove_parents(root, d)
            return
        deadline = time.monotonic() + timeout
        delay = 0.002
        self._kill_all([d for _, d in dirs if os.path.isdir(d)])
        while True:
            left = [d for _, d in dirs if os.path.isdir(d)]
            if not left:
                break
            # A killed process leaves cgroup.procs when it exits, not when its
            # parent reaps it, so this does not wait on the caller's wait().
            pids = sorted({p for d in left for sub in _walk_up(d) for p in _procs(sub)})
            if pids:
                # Repeatedly: a process may fork between our read and the kill.
                for pid in pids:
                    self._kill(pid)
            else:
                busy = [d for d in left if not self._remove_tree(d)]
                if not busy:
                    break
            if time.monotonic() >= deadline:
                raise CgroupBusy(
                    f"cgroup {path} not removed after {timeout}s: pids {pids or 'none'}, "
                    f"directories {left}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        for root, d in dirs:
            self._remove_parents(root, d)

    def _kill_all(self, dirs: list[str]) -> None:
        """Hook run once before destroy's kill loop (v2 uses cgroup.kill)."""
        return None

    # - helpers -

    def _write(self, path: str, value: str) -> None:
        """Every kernel write: logged, and an OSError becomes a CgroupWriteError."""
        self._log.debug("cgroup write %s <- %r", path, value)
        try:
            self._ops.write(path, value)
        except OSError as e:
            raise CgroupWriteError(path, value, e) from e

    def _mkdir(self, path: str) -> bool:
        """mkdir; False if it already existed."""
        self._log.debug("cgroup mkdir %s", path)
        try:
            self._ops.mkdir(path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise  # a parent vanished under us; the caller retries
            raise CgroupError(f"mkdir {path}: {e.strerror or e}") from e
        return True

    def _mkdirs(self, root: str, path: str) -> bool:
        """Create every missing directory from root down to root/path; True if the leaf is new."""
        parts = path.split("/")
        out = [os.path.join(root, *parts[:i + 1]) for i in range(len(parts))]
        # The parents (mctl/, the agent's prefix) exist from the first container
        # on: try the leaf alone first, a parent at a time only if one is missing.
        try:
            return self._mkdir(out[-1])
        except FileNotFoundError:
            pass
        made = False
        for d in out:
            made = self._mkdir(d)
        return made

    def _kill(self, pid: int) -> None:
        self._log.debug("kill -KILL %d", pid)
        try:
            self._ops.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass

    def _remove_leaf(self, d: str) -> bool:
        """rmdir d alone; False if it holds a process or a child cgroup (or is not removable)."""
        self._log.debug("cgroup rmdir %s", d)
        try:
            self._ops.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            return False    # EBUSY above all; the careful path reports the rest
        return True

    def _remove_tree(self, d: str) -> bool:
        """rmdir d and its child cgroups, deepest first; False if busy."""
        for sub in _walk_up(d):
            self._log.debug("cgroup rmdir %s", sub)
            try:
                self._ops.rmdir(sub)
            except FileNotFoundError:
                continue
            except OSError as e:
                # EBUSY: tasks that are still exiting, or a child made since the walk.
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    return False
                raise CgroupError(f"rmdir {sub}: {e.strerror or e}") from e
        return True

    def _remove_parents(self, root: str, d: str) -> None:
        """rmdir empty ancestors of d up to, not including, the hierarchy root.

        Other nodes on the same machine share the "mctl" parent, so a busy or
        already-removed parent is normal and stops the climb quietly.
        """
        parent = os.path.dirname(d)
        while os.path.normpath(parent) != os.path.normpath(root):
            self._log.debug("cgroup rmdir %s", parent)
            try:
                self._ops.rmdir(parent)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    return
                raise CgroupError(f"rmdir {parent}: {e.strerror or e}") from e
            parent = os.path.dirname(parent)


def _walk_up(d: str) -> Iterator[str]:
    """d and its descendant directories, deepest first (rmdir order); none if d is gone."""
    for dirpath, _, _ in os.walk(d, topdown=False):
        yield dirpath


def _procs(d: str) -> list[int]:
    return read_pids(os.path.join(d, "cgroup.procs"))
