"""Real containers through the real runtime path: image -> overlay -> bundle -> zygote.

Needs root. Each test builds a bundle the way agent/containers.py does (busybox
image layers under an overlay rootfs, /etc files bound in, config.json), starts
it with `NativeRuntime().start(id, bundle)` and reads what the monitor records
(container.log, exit.json) or what the kernel shows from inside.

Everything lives under one temporary directory named ``mctl-ktest-*`` (not
the e2e clusters' ``mctl-test-*``, which may run at the same time) and one
cgroup prefix ``mctl/test-rt-<random>``; every container is torn down in a
finalizer through the agent's own calls (cgroups.destroy, overlay.unmount,
rmtree), and a module fixture checks at the end that no mount, cgroup or
process of this module is left.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mctl.agent.bundle import overlay
from mctl.agent.images.store import DEFAULT_PATH, ImageError, ImageStore
from mctl.agent.runtime import capabilities
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.api import StartError
from mctl.agent.runtime.cgroups import CgroupDriver, ControllerUnavailable, V1Driver, detect
from mctl.agent.runtime.containerlog_writer import MAX_LINE
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.state import EXIT_FILE, LOG_FILE, STATE_FILE
from mctl.common import containerlog, procfs
from mctl.common.procfs import mounts_mentioning, processes_mentioning
from mctl.common.procfs import start_time as process_start_time

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

CGROUP_ROOT = "/sys/fs/cgroup"
MiB = 1 << 20
WAIT = 10.0  # seconds: the most any single wait in this module may take


# -- module-wide state -------------------------------------------------------------------


@dataclass
class Env:
    tmp: str
    images: ImageStore
    lower: list[str]            # busybox layers, top first (as the overlay wants)
    cgroups: CgroupDriver
    runtime: NativeRuntime
    prefix: str                 # cgroup prefix "mctl/test-rt-<random>"
    started: list[tuple[int, int]]  # (pid, start time) of every monitor and init


def _test_cgroups() -> list[str]:
    return glob.glob(f"{CGROUP_ROOT}/*/mctl/test-rt-*")


def _is_alive(pid: int, start_time: int) -> bool:
    """True while `pid` is still that process and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat.rsplit(b")", 1)[1].split()
    return fields[0] != b"Z" and int(fields[19]) == start_time


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    try:
        cgroups = detect(CGROUP_ROOT)
    except ControllerUnavailable as e:
        pytest.skip(f"cgroup controllers missing: {e}")
    tmp = tempfile.mkdtemp(prefix="mctl-ktest-")
    try:
        store = ImageStore(os.path.join(tmp, "images"))
        image = store.ensure_busybox()
    except ImageError as e:
        shutil.rmtree(tmp)
        pytest.skip(str(e))
    runtime = NativeRuntime(CGROUP_ROOT)
    state = Env(tmp=tmp, images=store,
                lower=[store.layer_path(d) for d in reversed(image.layers)],
                cgroups=cgroups, runtime=runtime, prefix=f"mctl/test-rt-{secrets.token_hex(4)}",
                started=[])
    try:
        yield state
    finally:
        runtime.close()
        # Wait (bounded) for every process this module started to be gone.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and any(_is_alive(*p) for p in state.started):
            time.sleep(0.02)
        leaks = {
            "mounts": mounts_mentioning(tmp),
            "cgroups": _test_cgroups(),
            "processes": processes_mentioning(tmp),
            "started pids": [p for p, t in state.started if _is_alive(p, t)],
        }
        if not leaks["mounts"]:  # never rmtree through a mount: leave it to look at
            shutil.rmtree(tmp)
        assert leaks == {"mounts": [], "cgroups": [], "processes": [], "started pids": []}


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Before and after the module: no test mounts, cgroups or processes anywhere."""
    assert _test_cgroups() == [], "stale test cgroups from an earlier run"
    yield
    assert mounts_mentioning("/mctl-ktest-") == []
    assert _test_cgroups() == []
    assert processes_mentioning("/mctl-ktest-") == []


# -- one container ------------------------------------------------------------------------


@dataclass
class Box:
    id: str
    bundle: str
    cgroup: str                 # relative to each hierarchy root
    monitor_pid: int = 0
    init_pid: int = 0

    def path(self, name: str) -> str:
        return os.path.join(self.bundle, name)

    def wait_exit(self, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.path(EXIT_FILE)) as f:
                    return json.load(f)
            except FileNotFoundError:
                time.sleep(0.02)
        raise AssertionError(f"container {self.id} did not exit within {timeout}s")

    def log(self) -> list[containerlog.Line]:
        return [ln for batch in containerlog.read(self.path(LOG_FILE), -1, False, lambda: True)
                for ln in batch]

    def stdout(self) -> str:
        return "".join(data.decode() + "\n" for _, stream, data in self.log()
                       if stream == "stdout")


@pytest.fixture
def make(env: Env, request: pytest.FixtureRequest):
    """make(script or args, **options) -> Box: a bundle as the agent builds it (not started)."""
    sys_ = sc.libc()

    def build(command: str | list[str], *, hostname: str = "kbox",
              memory: int | None = 64 * MiB, pids: int | None = 64,
              config_json: dict | None = None, **overrides: object) -> Box:
        cid = f"k{secrets.token_hex(4)}"
        bundle = os.path.join(env.tmp, "containers", cid)
        box = Box(id=cid, bundle=bundle, cgroup=f"{env.prefix}/{cid}")
        os.makedirs(bundle)
        request.addfinalizer(lambda: teardown(env, sys_, box))
        # The bundle's path as sh's $0, so a leaked shell shows in the leftover check.
        args = ["sh", "-c", command, bundle] if isinstance(command, str) else command
        etc = os.path.join(bundle, "etc")
        os.makedirs(etc)
        mounts = oci.default_mounts()
        for name, text in {"hostname": f"{hostname}\n",
                           "hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n",
                           "resolv.conf": ""}.items():
            with open(os.path.join(etc, name), "w") as f:
                f.write(text)
            mounts.append(oci.Mount(f"/etc/{name}", "bind", os.path.join(etc, name),
                                    ("bind", "rw")))
        config = oci.Config(
            args=tuple(args),
            env=(f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"),
            hostname=hostname,
            mounts=tuple(mounts),
            cgroups_path=f"/{box.cgroup}",
            resources=oci.Resources(memory_limit=memory, memory_swap=memory,
                                    cpu_period=100_000, pids_limit=pids),
            annotations={"mctl.test": request.node.name},
        )
        config = config.replace(**overrides)
        overlay.mount_overlay(sys_, env.lower, os.path.join(bundle, "upper"),
                             os.path.join(bundle, "work"), os.path.join(bundle, "rootfs"))
        if config_json is None:
            oci.write_config(bundle, config)
        else:
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(config_json, f)
        return box

    return build


@pytest.fixture
def run(env: Env, make):
    """run(script or args, **options) -> Box: built and started."""

    def start(command: str | list[str], **options: object) -> Box:
        box = make(command, **options)
        result = env.runtime.start(box.id, box.bundle)
        box.monitor_pid, box.init_pid = result.monitor_pid, result.init_pid
        for pid in (result.monitor_pid, result.init_pid):
            t = process_start_time(pid)
            if t:
                env.started.append((pid, t))
        return box

    return start


def teardown(env: Env, sys_: sc.Syscalls, box: Box) -> None:
    """What the agent's stop + teardown do: kill via the cgroup, unmount, remove."""
    env.cgroups.destroy(box.cgroup, timeout=5.0)
    # The monitor records the exit once its container is gone; let it finish
    # before its bundle disappears under it.
    if box.monitor_pid:
        t = process_start_time(box.monitor_pid)
        deadline = time.monotonic() + WAIT
        while t and _is_alive(box.monitor_pid, t) and time.monotonic() < deadline:
            time.sleep(0.02)
    while overlay.unmount(sys_, os.path.join(box.bundle, "rootfs")):
        pass
    shutil.rmtree(box.bundle)
    assert not env.cgroups.exists(box.cgroup)


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"{name} not in {text!r}")


# -- the tests --------------------------------------------------------------------------------


def test_stdout_and_stderr_reach_the_log_in_cri_format(run):
    box = run("echo out-1; echo err-1 >&2; echo out-2; printf 'no newline'")
    assert box.wait_exit()["exit_code"] == 0
    with open(box.path(LOG_FILE), "rb") as f:
        raw = f.read().splitlines()
    cri = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) F .*$")
    assert all(cri.match(line) for line in raw), raw
    lines = box.log()
    by_stream = {s: [d for _, st, d in lines if st == s] for s in ("stdout", "stderr")}
    assert by_stream == {"stdout": [b"out-1", b"out-2", b"no newline"], "stderr": [b"err-1"]}
    stamps = [ns for ns, _, _ in lines]
    now = time.time_ns()
    assert all(now - 60 * 10**9 < ns <= now for ns in stamps)


def test_long_lines_are_split_into_partial_entries(run):
    # One write of 40000 bytes + newline: the monitor must split it (CRI's 16 KiB parts).
    box = run("x=$(head -c 40000 /dev/zero | tr '\\0' a); echo \"$x\"; echo short")
    box.wait_exit()
    with open(box.path(LOG_FILE), "rb") as f:
        raw = [line.split(b" ", 3) for line in f.read().splitlines()]
    assert [(r[1], r[2], len(r[3])) for r in raw] == [
        (b"stdout", b"P", MAX_LINE), (b"stdout", b"P", MAX_LINE),
        (b"stdout", b"F", 40000 - 2 * MAX_LINE), (b"stdout", b"F", len("short"))]
    assert all(set(r[3]) == {ord("a")} for r in raw[:3])


def test_exit_code_is_recorded(run):
    box = run("exit 3")
    doc = box.wait_exit()
    assert doc["exit_code"] == 3
    assert doc["signal"] == 0
    assert doc["oom_killed"] is False
    assert doc["finished_unix_ms"] >= doc["started_unix_ms"] > 0
    with open(box.path(STATE_FILE)) as f:
        state = json.load(f)
    assert state["id"] == box.id
    assert (state["monitor_pid"], state["init_pid"]) == (box.monitor_pid, box.init_pid)


def test_exit_by_signal_is_recorded(run):
    box = run("sleep 30")
    os.kill(box.init_pid, signal.SIGKILL)
    doc = box.wait_exit()
    assert (doc["exit_code"], doc["signal"], doc["oom_killed"]) == (137, 9, False)


def test_background_children_die_with_init(env, run):
    # A child left holding stdout must not keep the container "running": the
    # pid namespace ends with its init, and the monitor records the exit.
    start = time.monotonic()
    box = run("sleep 60 & echo started; exit 4")
    doc = box.wait_exit()
    assert doc["exit_code"] == 4
    assert time.monotonic() - start < 5
    assert box.stdout() == "started\n"
    deadline = time.monotonic() + WAIT
    while env.cgroups.pids(box.cgroup) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.cgroups.pids(box.cgroup) == []


def test_init_is_pid_1(run):
    box = run("echo $$")
    box.wait_exit()
    assert box.stdout() == "1\n"


def test_hostname_is_set(run):
    box = run("hostname; cat /etc/hostname; echo $HOSTNAME", hostname="kt-host")
    box.wait_exit()
    assert box.stdout() == "kt-host\nkt-host\nkt-host\n"
    assert os.uname().nodename != "kt-host"


def test_cgroup_namespace_shows_root(run):
    box = run("cat /proc/self/cgroup")
    box.wait_exit()
    lines = box.stdout().split()
    assert lines, "no /proc/self/cgroup output"
    assert all(line.endswith(":/") for line in lines), lines


def test_memory_limit_file_holds_the_configured_value(env, run):
    box = run("sleep 30", memory=48 * MiB)
    assert isinstance(env.cgroups, V1Driver), "this machine is cgroup v1"
    base = os.path.join(env.cgroups.hierarchies["memory"], box.cgroup)
    with open(os.path.join(base, "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 48 * MiB
    with open(os.path.join(env.cgroups.hierarchies["pids"], box.cgroup, "pids.max")) as f:
        assert f.read().strip() == "64"
    # The container's processes are in it, and the monitor is not.
    pids = env.cgroups.pids(box.cgroup)
    assert box.init_pid in pids
    assert box.monitor_pid not in pids
    # The monitor is the zygote's child (what the exec-failure test relies on).
    assert box.monitor_pid in _children(env.runtime.zygote.pid)
    assert not os.path.exists(box.path(EXIT_FILE))


def test_host_processes_are_not_visible(run):
    box = run("ps -o pid,comm; true")
    box.wait_exit()
    rows = [line.split() for line in box.stdout().splitlines()[1:]]
    pids = {int(r[0]): r[1] for r in rows}
    # Only the shell (pid 1) and ps itself: no host process, not even pytest.
    assert len(pids) == 2, rows
    assert pids[1] == "sh"
    assert "ps" in pids.values()
    assert max(pids) < 10


def test_only_loopback_and_it_is_up(run):
    box = run("ls /sys/class/net; ip -o link")
    box.wait_exit()
    out = box.stdout().splitlines()
    assert out[0] == "lo"
    links = [line for line in out[1:] if line.strip()]
    assert len(links) == 1, links
    assert ": lo: <" in links[0]
    flags = links[0].split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" in flags and "LOOPBACK" in flags


def test_capabilities_are_the_default_set(run):
    box = run("cat /proc/self/status")
    box.wait_exit()
    status = box.stdout()
    mask = capabilities.mask_of(oci.DEFAULT_CAPABILITIES)
    assert int(status_field(status, "CapEff"), 16) == mask
    assert int(status_field(status, "CapPrm"), 16) == mask
    assert int(status_field(status, "CapBnd"), 16) == mask


def test_non_root_user(run):
    box = run("id; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status",
              uid=65534, gid=65534, additional_gids=(10,))
    box.wait_exit()
    lines = box.stdout().splitlines()
    assert lines[0] == "uid=65534(nobody) gid=65534(nogroup) groups=10"
    status = "\n".join(lines[1:])
    # As in Docker: a non-root process keeps the bounding set but nothing effective.
    assert int(status_field(status, "CapEff"), 16) == 0
    assert int(status_field(status, "CapPrm"), 16) == 0
    assert int(status_field(status, "CapBnd"), 16) == capabilities.mask_of(
        oci.DEFAULT_CAPABILITIES)


def test_readonly_rootfs(run):
    box = run("touch /x 2>/dev/null && echo rw || echo ro; "
              "echo h > /etc/hosts && echo rw || echo ro", root_readonly=True)
    box.wait_exit()
    # The root is read-only; the bundle's own bind mounts stay writable.
    assert box.stdout() == "ro\nrw\n"


def test_no_new_privs(run):
    box = run("grep NoNewPrivs /proc/self/status")
    box.wait_exit()
    assert status_field(box.stdout(), "NoNewPrivs") == "1"


def test_masked_and_readonly_paths(run):
    # Masked paths this kernel has (the list covers files that not every kernel has).
    masked_file, masked_dir = "/proc/timer_list", "/sys/firmware"
    with open(masked_file) as f:
        if not f.read() or not os.listdir(masked_dir):
            pytest.skip(f"{masked_file} or {masked_dir} is empty on this host already")
    box = run(f"cat {masked_file} | wc -c; ls -A {masked_dir} | wc -l; "
              "touch /proc/sys/kernel/x 2>/dev/null && echo rw || echo ro; "
              "echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo rw || echo ro")
    box.wait_exit()
    assert box.stdout().split() == ["0", "0", "ro", "ro"]


def test_memory_hog_is_oom_killed(run):
    box = run("x=a; while true; do x=$x$x; done", memory=16 * MiB)
    doc = box.wait_exit()
    assert doc["oom_killed"] is True, doc
    assert doc["signal"] == 9
    assert doc["exit_code"] == 137


def test_exec_failure_raises_and_leaves_nothing_running(env, make):
    box = make(["no-such-command", "--flag"])
    with pytest.raises(StartError) as info:
        env.runtime.start(box.id, box.bundle)
    message = str(info.value)
    assert message.startswith("exec: "), message
    assert "no-such-command" in message
    # No container process in its cgroup, no state recorded, no monitor left.
    assert env.cgroups.pids(box.cgroup) == []
    assert not os.path.exists(box.path(STATE_FILE))
    assert not os.path.exists(box.path(EXIT_FILE))
    # The failed monitor must be gone.
    zygote = env.runtime.zygote.pid
    deadline = time.monotonic() + WAIT
    while _children(zygote) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _children(zygote) == []


def test_a_cgroup_failing_after_the_fork_ends_the_waiting_child(env, make):
    # The monitor makes the cgroup while the child makes its namespaces
    # (spawn.py); when that fails, the child, waiting for the files to join,
    # is killed and reaped, and the start fails with the cgroup's error.
    box = make("true", resources=oci.Resources(memory_limit=64 * MiB, cpu_quota=500,
                                               cpu_period=100_000, pids_limit=64))
    with pytest.raises(StartError, match="cpu quota 500us below"):
        env.runtime.start(box.id, box.bundle)
    assert env.cgroups.pids(box.cgroup) == []
    assert not os.path.exists(box.path(STATE_FILE))
    assert processes_mentioning(box.bundle) == []
    zygote = env.runtime.zygote.pid
    deadline = time.monotonic() + WAIT
    while _children(zygote) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _children(zygote) == []


def _children(parent: int) -> list[int]:
    """Live (non-zombie) monitors forked by `parent`.

    The zygote's other child, the spare waiting for the next request, is
    named mctl-spare until it has one (zygote.py).
    """
    return [pid for pid, state, _ in procfs.children(parent)
            if state != "Z" and procfs.comm(pid) != "mctl-spare"]


def test_bad_config_raises_with_the_field(env, make):
    box = make("true", config_json={"process": {"args": ["sh"], "cwd": "relative/dir"},
                                    "root": {"path": "rootfs"}})
    with pytest.raises(StartError) as info:
        env.runtime.start(box.id, box.bundle)
    assert "process.cwd" in str(info.value)
    # Rejected before any kernel state: no cgroup was made.
    assert not env.cgroups.exists(box.cgroup)


def test_missing_config_raises(env, make):
    box = make("true")
    os.unlink(box.path("config.json"))
    with pytest.raises(StartError, match="config.json"):
        env.runtime.start(box.id, box.bundle)
    assert not env.cgroups.exists(box.cgroup)


def test_runtime_still_starts_after_a_failure(env, make, run):
    bad = make(["no-such-command"])
    with pytest.raises(StartError):
        env.runtime.start(bad.id, bad.bundle)
    box = run("echo ok")
    assert box.wait_exit()["exit_code"] == 0
    assert box.stdout() == "ok\n"


def test_a_spare_monitor_killed_while_it_waits_is_replaced(env, run):
    # The zygote keeps one monitor forked ahead of the next request; if that
    # spare dies before it gets one, the request goes to a fresh spare.
    run("true").wait_exit()   # the zygote is up and has forked its spare
    zygote = env.runtime.zygote.pid
    deadline = time.monotonic() + WAIT
    spares: list[int] = []
    while not spares and time.monotonic() < deadline:
        spares = [pid for pid, state, _ in procfs.children(zygote)
                  if state != "Z" and procfs.comm(pid) == "mctl-spare"]
        time.sleep(0.01)
    assert len(spares) == 1, spares
    born = procfs.start_time(spares[0])
    os.kill(spares[0], signal.SIGKILL)
    while _is_alive(spares[0], born) and time.monotonic() < deadline:
        time.sleep(0.01)
    box = run("echo after")
    assert box.wait_exit()["exit_code"] == 0
    assert box.stdout() == "after\n"


def _spare_and_init(env: Env) -> tuple[int, int]:
    """The zygote's waiting spare monitor and the container init it forked ahead."""
    zygote = env.runtime.zygote.pid
    deadline = time.monotonic() + WAIT
    found: list[tuple[int, int]] = []
    while not found and time.monotonic() < deadline:
        found = [(spare, init) for spare, state, _ in procfs.children(zygote)
                 if state != "Z" and procfs.comm(spare) == "mctl-spare"
                 for init, init_state, _ in procfs.children(spare) if init_state != "Z"]
        time.sleep(0.01)
    assert len(found) == 1, found
    return found[0]


def test_an_init_forked_ahead_killed_while_it_waits_is_forked_anew(env, run):
    # The spare's init forked ahead (spawn.InitAhead) is dead when the request
    # comes: its sync pipe's end-of-file must not pass for an exec, so the
    # monitor forks the init at the request instead.
    run("true").wait_exit()
    _, init = _spare_and_init(env)
    born = procfs.start_time(init)
    os.kill(init, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while _is_alive(init, born) and time.monotonic() < deadline:
        time.sleep(0.01)
    box = run("echo after $$")
    assert box.wait_exit()["exit_code"] == 0
    assert box.stdout() == "after 1\n"


def test_a_config_the_init_ahead_does_not_fit_is_started_as_before(env, run):
    # Without a pid namespace the init forked ahead (pid 1 of a new one) is
    # not the container's: it is ended and the init forked at the request,
    # in the monitor's pid namespace, with nothing of the first left over.
    run("true").wait_exit()
    _, init = _spare_and_init(env)
    born = procfs.start_time(init)
    box = run("echo $$", namespaces=("network", "ipc", "uts", "mount", "cgroup"))
    assert box.wait_exit()["exit_code"] == 0
    assert box.stdout() not in ("1\n", ""), box.stdout()
    assert not _is_alive(init, born), "the init forked ahead was left running"
