"""Unit tests of the cgroup drivers over fake cgroup trees in tmp_path.

The drivers run unchanged; only their KernelOps seam is replaced by
FakeCgroupfs, which imitates what cgroupfs does that a plain directory cannot:
mkdir fills the new directory with control files, rmdir removes a directory
still holding them (EBUSY while it has tasks or children), writes follow a few
kernel rules (memsw >= memory on v1, controllers appear only once enabled in
the parent's cgroup.subtree_control on v2), and kill makes a pid leave.

This machine mounts cgroup v1, and its v2 hierarchy (/sys/fs/cgroup/unified)
holds no cpu or memory controller, so the v2 driver is tested only here, over
a fake tree; tests/kernel covers v1 (or v2 on a pure-v2 machine) for real.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path

import pytest

from mctl.agent.runtime.cgroups import (
    CgroupBusy,
    CgroupNotFound,
    CgroupWriteError,
    ControllerUnavailable,
    InvalidCgroupPath,
    KernelOps,
    Limits,
    Usage,
    V1Driver,
    V2Driver,
    detect,
    v1_hierarchies,
)

UNLIMITED_V1 = "9223372036854771712"  # what v1 memory files read back after "-1"
MiB = 1 << 20
NO_MOUNTINFO = "/nonexistent/mountinfo"  # detect() must fall back to probing dirs

V1_FILES = {
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1", "cpu.shares": "1024"},
    "cpuacct": {"cpuacct.usage": "0"},
    "memory": {
        "memory.limit_in_bytes": UNLIMITED_V1,
        "memory.memsw.limit_in_bytes": UNLIMITED_V1,
        "memory.usage_in_bytes": "0",
        "memory.stat": "cache 0\ntotal_inactive_file 0\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.soft_limit_in_bytes": UNLIMITED_V1,
        "memory.swappiness": "60",
        "memory.kmem.tcp.limit_in_bytes": UNLIMITED_V1,
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "freezer": {"freezer.state": "THAWED"},
}
V2_FILES = {
    "": {"cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n", "cgroup.events": ""},
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100"},
    "memory": {
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.oom.group": "0",
        "memory.low": "0",
        "memory.current": "0",
        "memory.stat": "anon 0\ninactive_file 0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
}
V2_ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"


class FakeCgroupfs(KernelOps):
    """A recording fake of the kernel calls, over plain files under base."""

    def __init__(self, base: Path, *, swap: bool = True, cgroup_kill: bool = True) -> None:
        self.base = base
        self.swap = swap  # swap accounting: memory.memsw.* (v1), memory.swap.max (v2)
        self.cgroup_kill = cgroup_kill  # Linux 5.14+
        self.v1: dict[str, list[str]] = {}  # hierarchy root -> its controllers
        self.v2: set[str] = set()  # v2 hierarchy roots
        self.writes: list[tuple[str, str]] = []  # (path relative to base, value)
        self.killed: list[int] = []
        self.respawn: dict[int, int] = {}  # pid -> the child it forks when killed
        self.immortal: set[int] = set()

    # - building trees -

    def v1_hierarchy(self, name: str, controllers: list[str] | None = None) -> Path:
        root = self.base / name
        root.mkdir(parents=True)
        self.v1[str(root)] = controllers if controllers is not None else root.name.split(",")
        self._populate_v1(root)
        return root

    def v2_hierarchy(self, root: Path, controllers: str = V2_ROOT_CONTROLLERS) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        self.v2.add(str(root))
        (root / "cgroup.controllers").write_text(controllers + "\n")
        for name in ("cgroup.subtree_control", "cgroup.procs"):
            (root / name).write_text("")
        (root / "cpu.stat").write_text(V2_FILES[""]["cpu.stat"])
        return root

    def _hierarchy_of(self, path: str) -> str:
        for root in [*self.v1, *self.v2]:
            if path == root or path.startswith(root + os.sep):
                return root
        raise AssertionError(f"{path} is in no fake hierarchy")

    def _populate_v1(self, d: Path) -> None:
        files = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0"}
        for controller in self.v1[self._hierarchy_of(str(d))]:
            files.update(V1_FILES.get(controller, {}))
        if not self.swap:
            files = {k: v for k, v in files.items() if not k.startswith("memory.memsw.")}
        for name, text in files.items():
            (d / name).write_text(text)

    def _populate_v2(self, d: Path) -> None:
        # Like the kernel: a child shows the controllers its parent enabled.
        enabled = (d.parent / "cgroup.subtree_control").read_text().split()
        files = {"cgroup.controllers": " ".join(enabled), "cgroup.subtree_control": ""}
        files["cgroup.procs"] = ""
        if self.cgroup_kill:
            files["cgroup.kill"] = ""
        for controller in ["", *enabled]:
            files.update(V2_FILES.get(controller, {}))
        if not self.swap:
            files.pop("memory.swap.max", None)
        for name, text in files.items():
            (d / name).write_text(text)

    # - the kernel calls -

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        if self._hierarchy_of(path) in self.v2:
            self._populate_v2(Path(path))
        else:
            self._populate_v1(Path(path))

    def rmdir(self, path: str) -> None:
        d = Path(path)
        if not d.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such cgroup", path)
        if any(p.is_dir() for p in d.iterdir()) or (d / "cgroup.procs").read_text().split():
            raise OSError(errno.EBUSY, "cgroup busy", path)
        for f in d.iterdir():  # cgroupfs removes the control files with the directory
            f.unlink()
        os.rmdir(path)

    def write(self, path: str, value: str) -> None:
        name = os.path.basename(path)
        d = Path(path).parent
        self.writes.append((os.path.relpath(path, self.base), value))
        if name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            value = UNLIMITED_V1 if value == "-1" else value
            other = (
                "memory.memsw.limit_in_bytes"
                if name == "memory.limit_in_bytes"
                else ("memory.limit_in_bytes")
            )
            if (d / other).exists():
                mem, memsw = int(value), int((d / other).read_text())
                if name == "memory.memsw.limit_in_bytes":
                    mem, memsw = memsw, mem
                if memsw < mem:  # mem_cgroup_resize_max: memsw never below memory
                    raise OSError(errno.EINVAL, "Invalid argument")
        elif name == "cgroup.subtree_control":
            available = (d / "cgroup.controllers").read_text().split()
            enabled = (d / "cgroup.subtree_control").read_text().split()
            for token in value.split():
                if token[1:] not in available:
                    raise OSError(errno.ENOENT, "No such file or directory")
                if token[0] == "+" and token[1:] not in enabled:
                    enabled.append(token[1:])
            value = " ".join(enabled)
        elif name == "cgroup.procs":
            value = (d / name).read_text() + value + "\n"
        elif name == "cgroup.kill":
            for sub, _, _ in os.walk(d):
                for pid in (Path(sub) / "cgroup.procs").read_text().split():
                    self._exit(int(pid))
            return
        super().write(path, value)  # real open(O_WRONLY|O_TRUNC): ENOENT if missing

    def kill(self, pid: int, sig: int) -> None:
        assert sig == signal.SIGKILL
        self.killed.append(pid)
        if pid in self.immortal:
            return
        procs = [p for p in self._procs_files() if str(pid) in p.read_text().split()]
        if not procs:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        self._exit(pid)
        if pid in self.respawn:  # it forked just before dying
            for p in procs:
                p.write_text(p.read_text() + f"{self.respawn[pid]}\n")

    def _exit(self, pid: int) -> None:
        for p in self._procs_files():
            p.write_text("".join(f"{x}\n" for x in p.read_text().split() if x != str(pid)))

    def _procs_files(self) -> list[Path]:
        return [
            Path(sub) / "cgroup.procs"
            for root in [*self.v1, *self.v2]
            for sub, _, _ in os.walk(root)
        ]

    # - test helpers -

    def put(self, leaf: Path, pids: list[int]) -> None:
        (leaf / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))

    def written(self, prefix: str = "") -> list[tuple[str, str]]:
        return [(p, v) for p, v in self.writes if p.startswith(prefix)]


LIMITS = Limits(cpu_quota_us=50_000, cpu_period_us=100_000, memory_bytes=32 * MiB, pids=64)
CTR = "mctl/n1/default_web-abc12"


@pytest.fixture
def v1(tmp_path: Path) -> tuple[V1Driver, FakeCgroupfs]:
    """This machine's layout: separate cpu, cpuacct, memory, pids hierarchies (hybrid)."""
    fake = FakeCgroupfs(tmp_path)
    for name in ("cpu", "cpuacct", "memory", "pids", "freezer"):
        fake.v1_hierarchy(f"cgroup/{name}")
    fake.v1_hierarchy("cgroup/systemd", controllers=[])  # name=systemd: no controller
    fake.v2_hierarchy(tmp_path / "cgroup/unified", controllers="hugetlb")  # hybrid
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    assert isinstance(drv, V1Driver)
    return drv, fake


@pytest.fixture
def v1_comounted(tmp_path: Path) -> tuple[V1Driver, FakeCgroupfs]:
    """cpu and cpuacct on one hierarchy, with the usual symlinks to it."""
    fake = FakeCgroupfs(tmp_path)
    fake.v1_hierarchy("cgroup/cpu,cpuacct")
    for name in ("memory", "pids"):
        fake.v1_hierarchy(f"cgroup/{name}")
    os.symlink("cpu,cpuacct", tmp_path / "cgroup/cpu")
    os.symlink("cpu,cpuacct", tmp_path / "cgroup/cpuacct")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    assert isinstance(drv, V1Driver)
    return drv, fake


@pytest.fixture
def v2(tmp_path: Path) -> tuple[V2Driver, FakeCgroupfs]:
    fake = FakeCgroupfs(tmp_path)
    fake.v2_hierarchy(tmp_path / "cgroup")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    assert isinstance(drv, V2Driver)
    return drv, fake


# -- Limits ---------------------------------------------------------------------


def test_limits_from_millis():
    assert Limits.from_millis(500, 64 * MiB, 100) == Limits(50_000, 100_000, 64 * MiB, 100)
    assert Limits.from_millis(2000, None, None, period_us=50_000) == Limits(
        100_000, 50_000, None, None
    )
    # Below the kernel's 1ms minimum quota: raised to it, like the kubelet does.
    assert Limits.from_millis(1, None, None).cpu_quota_us == 1000
    # None and 0 (proto3's unset) mean unlimited.
    assert Limits.from_millis(0, 0, 0) == Limits(None, 100_000, None, None)
    assert Limits.from_millis(None, None, None) == Limits()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpu_period_us": 999},
        {"cpu_period_us": 1_000_001},
        {"cpu_quota_us": 999},
        {"memory_bytes": 0},
        {"pids": -1},
    ],
)
def test_limits_reject_values_the_kernel_refuses(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_limits_are_frozen():
    with pytest.raises(AttributeError):
        LIMITS.pids = 1  # type: ignore[misc]


# -- detect -------------------------------------------------------------------


def test_detect_v1_separate(v1):
    drv, fake = v1
    base = fake.base / "cgroup"
    assert drv.mode == "v1"
    assert drv.hierarchies == {c: str(base / c) for c in ("cpu", "cpuacct", "memory", "pids")}
    assert drv.roots == [str(base / c) for c in ("cpu", "cpuacct", "memory", "pids")]


def test_detect_v1_comounted_prefers_the_real_dir_and_dedups(v1_comounted):
    drv, fake = v1_comounted
    base = fake.base / "cgroup"
    assert drv.hierarchies["cpu"] == drv.hierarchies["cpuacct"] == str(base / "cpu,cpuacct")
    assert drv.roots == [str(base / "cpu,cpuacct"), str(base / "memory"), str(base / "pids")]


def test_detect_v2(v2):
    drv, fake = v2
    assert drv.mode == "v2"
    assert drv.roots == [str(fake.base / "cgroup")]


def test_detect_v2_without_memory_controller_refuses(tmp_path):
    fake = FakeCgroupfs(tmp_path)
    fake.v2_hierarchy(tmp_path / "cgroup", controllers="cpu pids hugetlb")
    with pytest.raises(ControllerUnavailable, match="memory"):
        detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)


def test_detect_v1_without_pids_refuses(tmp_path):
    for name in ("cpu", "cpuacct", "memory"):
        (tmp_path / name).mkdir()
    with pytest.raises(ControllerUnavailable, match="pids"):
        detect(str(tmp_path), mountinfo=NO_MOUNTINFO)


def test_v1_hierarchies_from_mountinfo(tmp_path):
    root = tmp_path / "cg"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"31 23 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755\n"
        f"32 31 0:29 / {root}/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
        f"35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory\n"
        f"39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids\n"
        f"40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        f"41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "50 23 0:40 / /elsewhere/memory rw - cgroup cgroup rw,memory\n"
    )
    assert v1_hierarchies(str(root), str(mountinfo)) == {
        "cpu": f"{root}/cpu,cpuacct",
        "cpuacct": f"{root}/cpu,cpuacct",
        "memory": f"{root}/memory",
        "pids": f"{root}/pids",
    }


# -- v1 -----------------------------------------------------------------------


def test_v1_create_writes_exact_values(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    assert fake.writes == [
        (f"cgroup/cpu/{CTR}/cpu.cfs_period_us", "100000"),
        (f"cgroup/cpu/{CTR}/cpu.cfs_quota_us", "50000"),
        # Lowering from unlimited: memory first, then memsw to the same value
        # (no swap beyond the limit).
        (f"cgroup/memory/{CTR}/memory.limit_in_bytes", str(32 * MiB)),
        (f"cgroup/memory/{CTR}/memory.memsw.limit_in_bytes", str(32 * MiB)),
        (f"cgroup/pids/{CTR}/pids.max", "64"),
    ]
    for hierarchy in ("cpu", "cpuacct", "memory", "pids"):
        assert (fake.base / "cgroup" / hierarchy / CTR).is_dir()
    assert not (fake.base / "cgroup/freezer/mctl").exists()  # only the hierarchies it uses
    assert not (fake.base / "cgroup/unified/mctl").exists()
    leaf = fake.base / "cgroup/memory" / CTR
    assert (leaf / "memory.memsw.limit_in_bytes").read_text() == str(32 * MiB)
    assert drv.exists(CTR)


def test_v1_create_is_idempotent(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    first = list(fake.writes)
    fake.writes.clear()
    drv.create(CTR, LIMITS)
    assert fake.writes == first
    assert drv.list_children("mctl/n1") == ["default_web-abc12"]


UNLIMITED_WRITES = [
    (f"cgroup/cpu/{CTR}/cpu.cfs_period_us", "100000"),
    (f"cgroup/cpu/{CTR}/cpu.cfs_quota_us", "-1"),
    (f"cgroup/memory/{CTR}/memory.memsw.limit_in_bytes", "-1"),
    (f"cgroup/memory/{CTR}/memory.limit_in_bytes", "-1"),
    (f"cgroup/pids/{CTR}/pids.max", "max"),
]


def test_v1_unlimited_on_a_new_cgroup_writes_nothing(v1):
    # A cgroup made just now already has no quota, no memory limit and pids
    # "max": the start of a container does not wait for five writes of them.
    drv, fake = v1
    drv.create(CTR, Limits())
    assert fake.writes == []
    assert (fake.base / "cgroup/pids" / CTR / "pids.max").read_text() == "max"


def test_v1_unlimited_on_an_existing_cgroup_writes_every_limit(v1):
    # One that existed may hold old limits (an agent restarted, a create
    # repeated): then every value is written, as update does.
    drv, fake = v1
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    drv.create(CTR, Limits())
    assert fake.writes == UNLIMITED_WRITES
    fake.writes.clear()
    drv.update(CTR, Limits())
    assert fake.writes == UNLIMITED_WRITES


def test_v1_a_new_cgroup_gets_the_limits_that_differ_from_the_defaults(v1):
    drv, fake = v1
    drv.create(CTR, Limits(pids=64))
    assert fake.writes == [(f"cgroup/pids/{CTR}/pids.max", "64")]


def test_v1_update_orders_memsw_by_direction(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    mem = f"cgroup/memory/{CTR}/memory.limit_in_bytes"
    memsw = f"cgroup/memory/{CTR}/memory.memsw.limit_in_bytes"

    fake.writes.clear()
    drv.update(CTR, Limits(memory_bytes=64 * MiB))  # raising: memsw must go first
    assert fake.written("cgroup/memory") == [(memsw, str(64 * MiB)), (mem, str(64 * MiB))]

    fake.writes.clear()
    drv.update(CTR, Limits(memory_bytes=16 * MiB))  # lowering: memory must go first
    assert fake.written("cgroup/memory") == [(mem, str(16 * MiB)), (memsw, str(16 * MiB))]

    fake.writes.clear()
    drv.update(CTR, Limits())  # removing the limit is raising
    assert fake.written("cgroup/memory") == [(memsw, "-1"), (mem, "-1")]


def test_v1_without_swap_accounting_sets_memory_only(tmp_path):
    fake = FakeCgroupfs(tmp_path, swap=False)
    for name in ("cpu", "cpuacct", "memory", "pids"):
        fake.v1_hierarchy(name)
    drv = detect(str(tmp_path), mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    assert fake.written("memory") == [(f"memory/{CTR}/memory.limit_in_bytes", str(32 * MiB))]


def test_v1_update_missing_cgroup(v1):
    drv, _ = v1
    with pytest.raises(CgroupNotFound):
        drv.update(CTR, LIMITS)


def test_v1_comounted_writes_each_hierarchy_once(v1_comounted):
    drv, fake = v1_comounted
    drv.create(CTR, LIMITS)
    assert fake.written("cgroup/cpu,cpuacct") == [
        (f"cgroup/cpu,cpuacct/{CTR}/cpu.cfs_period_us", "100000"),
        (f"cgroup/cpu,cpuacct/{CTR}/cpu.cfs_quota_us", "50000"),
    ]
    base = fake.base / "cgroup"
    assert drv.procs_files(CTR) == [
        str(base / "cpu,cpuacct" / CTR / "cgroup.procs"),
        str(base / "memory" / CTR / "cgroup.procs"),
        str(base / "pids" / CTR / "cgroup.procs"),
    ]
    fake.writes.clear()
    drv.add_process(CTR, 4242)
    assert [v for _, v in fake.writes] == ["4242"] * 3
    assert drv.pids(CTR) == [4242]


def test_v1_add_process_and_pids(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    drv.add_process(CTR, 777)
    assert fake.writes == [
        (f"cgroup/{h}/{CTR}/cgroup.procs", "777") for h in ("cpu", "cpuacct", "memory", "pids")
    ]
    # A process seen in only one hierarchy (half-joined) still counts.
    fake.put(fake.base / "cgroup/pids" / CTR, [777, 778])
    assert drv.pids(CTR) == [777, 778]


def test_v1_usage(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    base = fake.base / "cgroup"
    (base / "cpuacct" / CTR / "cpuacct.usage").write_text("123456789\n")
    (base / "memory" / CTR / "memory.usage_in_bytes").write_text(f"{10 * MiB}\n")
    (base / "memory" / CTR / "memory.stat").write_text(
        f"cache {5 * MiB}\nrss {5 * MiB}\ninactive_file {MiB}\n"
        f"total_cache {5 * MiB}\ntotal_inactive_file {4 * MiB}\n"
    )
    (base / "pids" / CTR / "pids.current").write_text("3\n")
    assert drv.usage(CTR) == Usage(
        cpu_usage_ns=123456789,
        memory_bytes=10 * MiB,
        memory_working_set=6 * MiB,  # usage minus total_inactive_file
        pids=3,
    )
    # The working set never goes negative (stat and usage are read at different times).
    (base / "memory" / CTR / "memory.stat").write_text(f"total_inactive_file {11 * MiB}\n")
    assert drv.usage(CTR).memory_working_set == 0


def test_v1_oom_killed(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    assert drv.oom_killed(CTR) == 0
    (fake.base / "cgroup/memory" / CTR / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    assert drv.oom_killed(CTR) == 2


def test_v1_usage_of_missing_cgroup(v1):
    drv, _ = v1
    with pytest.raises(CgroupNotFound):
        drv.usage(CTR)
    with pytest.raises(CgroupNotFound):
        drv.oom_killed(CTR)


def test_write_error_names_file_and_value(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    (fake.base / "cgroup/pids" / CTR / "pids.max").unlink()  # as if pids were not mounted
    with pytest.raises(CgroupWriteError) as info:
        drv.update(CTR, Limits(pids=10))
    assert f"pids/{CTR}/pids.max" in str(info.value)
    assert "'10'" in str(info.value)
    assert info.value.errno == errno.ENOENT


def test_writes_are_logged_at_debug(v1, caplog):
    drv, _ = v1
    with caplog.at_level(logging.DEBUG, logger="mctl.agent.runtime.cgroups"):
        drv.create(CTR, LIMITS)
    writes = [r for r in caplog.records if "pids.max" in r.getMessage()]
    assert writes and "'64'" in writes[0].getMessage()
    assert writes[0].name == "mctl.agent.runtime.cgroups.v1"
    assert any("mkdir" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["", "/mctl/x", "mctl/../etc", "mctl//x", "mctl/./x", "mctl/"])
def test_invalid_paths(v1, bad):
    drv, _ = v1
    with pytest.raises(InvalidCgroupPath):
        drv.create(bad, LIMITS)


# -- v2 -----------------------------------------------------------------------


def test_v2_create_enables_controllers_down_the_path(v2):
    drv, fake = v2
    drv.create(CTR, LIMITS)
    assert fake.writes == [
        ("cgroup/cgroup.subtree_control", "+cpu +memory +pids"),
        ("cgroup/mctl/cgroup.subtree_control", "+cpu +memory +pids"),
        ("cgroup/mctl/n1/cgroup.subtree_control", "+cpu +memory +pids"),
        # No subtree_control on the leaf: it holds the processes.
        (f"cgroup/{CTR}/cpu.max", "50000 100000"),
        (f"cgroup/{CTR}/memory.max", str(32 * MiB)),
        (f"cgroup/{CTR}/memory.swap.max", "0"),
        (f"cgroup/{CTR}/memory.oom.group", "1"),
        (f"cgroup/{CTR}/pids.max", "64"),
    ]
    leaf = fake.base / "cgroup" / CTR
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "cgroup.controllers").read_text() == "cpu memory pids"


def test_v2_create_is_idempotent(v2):
    drv, fake = v2
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    drv.create(CTR, LIMITS)
    assert [p for p, _ in fake.writes] == [
        f"cgroup/{CTR}/{f}"
        for f in ("cpu.max", "memory.max", "memory.swap.max", "memory.oom.group", "pids.max")
    ]


def test_v2_enables_only_missing_controllers(v2):
    drv, fake = v2
    (fake.base / "cgroup/cgroup.subtree_control").write_text("cpu io\n")
    drv.create(CTR, LIMITS)
    assert fake.writes[0] == ("cgroup/cgroup.subtree_control", "+memory +pids")


def test_v2_unlimited(v2):
    drv, fake = v2
    drv.create(CTR, Limits(cpu_period_us=50_000))
    assert fake.written(f"cgroup/{CTR}") == [
        (f"cgroup/{CTR}/cpu.max", "max 50000"),
        (f"cgroup/{CTR}/memory.max", "max"),
        (f"cgroup/{CTR}/memory.swap.max", "0"),
        (f"cgroup/{CTR}/memory.oom.group", "1"),
        (f"cgroup/{CTR}/pids.max", "max"),
    ]


def test_v2_update(v2):
    drv, fake = v2
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    drv.update(CTR, Limits.from_millis(250, 128 * MiB, 10))
    assert fake.written(f"cgroup/{CTR}/cpu.max") == [(f"cgroup/{CTR}/cpu.max", "25000 100000")]
    assert (fake.base / "cgroup" / CTR / "memory.max").read_text() == str(128 * MiB)
    with pytest.raises(CgroupNotFound):
        drv.update("mctl/n1/missing", LIMITS)


def test_v2_without_swap_file_skips_swap(tmp_path):
    fake = FakeCgroupfs(tmp_path, swap=False)
    fake.v2_hierarchy(tmp_path / "cg")
    drv = detect(str(tmp_path / "cg"), mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    assert not any(p.endswith("memory.swap.max") for p, _ in fake.writes)


def test_v2_controller_missing_below_root(v2):
    drv, fake = v2
    # Someone else made "mctl" and enabled only cpu under it.
    drv.create("mctl/other", Limits())
    (fake.base / "cgroup/mctl/cgroup.controllers").write_text("cpu pids")
    with pytest.raises(ControllerUnavailable, match="memory"):
        drv.create(CTR, LIMITS)


def test_v2_usage_and_oom(v2):
    drv, fake = v2
    drv.create(CTR, LIMITS)
    leaf = fake.base / "cgroup" / CTR
    (leaf / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (leaf / "memory.current").write_text(f"{10 * MiB}\n")
    (leaf / "memory.stat").write_text(f"anon {6 * MiB}\nfile {4 * MiB}\ninactive_file {3 * MiB}\n")
    (leaf / "pids.current").write_text("2\n")
    assert drv.usage(CTR) == Usage(1_500_000, 10 * MiB, 7 * MiB, 2)
    (leaf / "memory.events").write_text(
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n"
    )
    assert drv.oom_killed(CTR) == 1
    with pytest.raises(CgroupNotFound):
        drv.usage("mctl/n1/missing")


def test_v2_procs_files(v2):
    drv, fake = v2
    assert drv.procs_files(CTR) == [str(fake.base / "cgroup" / CTR / "cgroup.procs")]


# -- destroy (both versions) --------------------------------------------------


@pytest.fixture(params=["v1", "v1_comounted", "v2"])
def any_driver(request):
    return request.getfixturevalue(request.param)


def _all_dirs(fake: FakeCgroupfs) -> set[str]:
    return {
        os.path.relpath(sub, fake.base)
        for root in [*fake.v1, *fake.v2]
        for sub, _, _ in os.walk(root)
    }


def test_destroy_of_an_empty_cgroup_is_one_rmdir_per_hierarchy(any_driver, monkeypatch):
    # The common case (the container's processes are gone): no walk of the
    # tree, no read of cgroup.procs, no kill; the rmdir itself is the check.
    from mctl.agent.runtime.cgroups import base

    def never(*_args):
        raise AssertionError("the careful path ran for an empty cgroup")

    monkeypatch.setattr(base, "_walk_up", never)
    monkeypatch.setattr(base, "_procs", never)
    drv, fake = any_driver
    before = _all_dirs(fake)
    drv.create(CTR, LIMITS)
    drv.destroy(CTR)
    assert not drv.exists(CTR) and fake.killed == []
    assert _all_dirs(fake) == before    # its empty parents went too


def test_destroy_kills_removes_leaf_and_keeps_shared_parents(any_driver):
    drv, fake = any_driver
    before = _all_dirs(fake)
    other_node = "mctl/n2/default_db-0"
    sibling = "mctl/n1/default_web-zzz99"
    for path in (CTR, sibling, other_node):
        drv.create(path, LIMITS)
    for procs in drv.procs_files(CTR):
        fake.put(Path(procs).parent, [101, 102])

    drv.destroy(CTR)

    if drv.mode == "v2":
        assert (f"cgroup/{CTR}/cgroup.kill", "1") in fake.writes
        assert fake.killed == []  # cgroup.kill did it
    else:
        assert sorted(set(fake.killed)) == [101, 102]
    assert not drv.exists(CTR)
    assert drv.exists(sibling) and drv.exists(other_node)
    assert drv.list_children("mctl") == ["n1", "n2"]

    drv.destroy(sibling)
    assert drv.list_children("mctl") == ["n2"]  # n1 emptied, so it went too
    drv.destroy(other_node)
    assert _all_dirs(fake) == before  # hierarchy roots stay, no "mctl" left


def test_destroy_is_idempotent(any_driver):
    drv, fake = any_driver
    drv.destroy(CTR)  # never created
    drv.create(CTR, LIMITS)
    drv.destroy(CTR)
    drv.destroy(CTR)
    assert not drv.exists("mctl")


def test_destroy_kills_repeatedly_until_empty(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    fake.put(fake.base / "cgroup/pids" / CTR, [200])
    fake.respawn = {200: 201, 201: 202}  # each forks once more as it is killed
    drv.destroy(CTR)
    assert fake.killed == [200, 201, 202]
    assert not drv.exists(CTR)


def test_destroy_removes_nested_cgroups(any_driver):
    drv, fake = any_driver
    drv.create(CTR, LIMITS)
    drv.create(f"{CTR}/inner/deeper", Limits())  # e.g. made by the container itself
    for procs in drv.procs_files(f"{CTR}/inner/deeper"):
        fake.put(Path(procs).parent, [300])
    fake.cgroup_kill = False
    drv.destroy(CTR)
    assert not drv.exists("mctl")


def test_destroy_without_cgroup_kill_falls_back_to_sigkill(tmp_path):
    fake = FakeCgroupfs(tmp_path, cgroup_kill=False)
    fake.v2_hierarchy(tmp_path / "cg")
    drv = detect(str(tmp_path / "cg"), mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    fake.put(tmp_path / "cg" / CTR, [400, 401])
    drv.destroy(CTR)
    assert sorted(fake.killed) == [400, 401]
    assert not drv.exists("mctl")


def test_destroy_times_out_on_a_process_that_will_not_die(v1):
    drv, fake = v1
    drv.create(CTR, LIMITS)
    fake.put(fake.base / "cgroup/memory" / CTR, [500])
    fake.immortal = {500}
    with pytest.raises(CgroupBusy, match="500"):
        drv.destroy(CTR, timeout=0.05)
    assert drv.exists(CTR)


def test_exists_and_list_children(any_driver):
    drv, _ = any_driver
    assert not drv.exists(CTR)
    assert drv.list_children("mctl/n1") == []
    drv.create(CTR, LIMITS)
    drv.create("mctl/n1/default_web-def34", LIMITS)
    assert drv.exists(CTR)
    assert drv.list_children("mctl") == ["n1"]
    assert drv.list_children("mctl/n1") == ["default_web-abc12", "default_web-def34"]


# -- linux.resources.memory beyond the limit (memory_extras.py, issue 18) ---------------


def _extras(**kwargs):
    from mctl.agent.runtime.oci.config import Resources

    return Resources(**kwargs)


def test_v1_memory_extras_are_written_to_their_files(v1):
    from mctl.agent.runtime.cgroups import memory_extras

    drv, fake = v1
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    warnings = memory_extras.apply(drv, CTR, _extras(
        memory_reservation=16 * MiB, memory_swappiness=0, disable_oom_killer=True,
        memory_kernel_tcp=8 * MiB))
    assert warnings == []
    assert fake.written() == [
        (f"cgroup/memory/{CTR}/memory.soft_limit_in_bytes", str(16 * MiB)),
        (f"cgroup/memory/{CTR}/memory.swappiness", "0"),
        (f"cgroup/memory/{CTR}/memory.oom_control", "1"),
        (f"cgroup/memory/{CTR}/memory.kmem.tcp.limit_in_bytes", str(8 * MiB)),
    ]


def test_v2_memory_extras_write_memory_low_and_warn_for_the_rest(v2):
    from mctl.agent.runtime.cgroups import memory_extras

    drv, fake = v2
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    warnings = memory_extras.apply(drv, CTR, _extras(
        memory_reservation=16 * MiB, memory_swappiness=10, disable_oom_killer=True,
        memory_kernel_tcp=8 * MiB))
    assert fake.written() == [(f"cgroup/{CTR}/memory.low", str(16 * MiB))]
    assert [w.split(":")[0] for w in warnings] == [
        "linux.resources.memory.swappiness", "linux.resources.memory.disableOOMKiller",
        "linux.resources.memory.kernelTCP"]


def test_memory_extras_parse_check_and_round_trip():
    from mctl.agent.runtime.oci import config as oci

    config = oci.Config(args=("true",), resources=_extras(
        memory_limit=64 * MiB, memory_reservation=MiB, memory_swappiness=5,
        disable_oom_killer=True, memory_kernel_tcp=MiB))
    doc = oci.to_json(config)
    assert doc["linux"]["resources"]["memory"] == {
        "limit": 64 * MiB, "reservation": MiB, "swappiness": 5, "kernelTCP": MiB,
        "disableOOMKiller": True}
    assert oci.parse_config(doc) == config
    doc["linux"]["resources"]["memory"]["swappiness"] = 101
    with pytest.raises(oci.ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == "linux.resources.memory.swappiness"

