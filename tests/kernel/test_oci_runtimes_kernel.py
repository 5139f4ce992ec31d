"""One behaviour, three OCI runtimes: mctl-runtime, runc and crun on the agent's own bundles.

Needs root. Every test runs against each runtime installed here, through
the OCI runtime command line only (create, start, state, kill, delete, run),
the way the agent's adapter calls it (`ociclient.base_argv`, which also puts
crun in the private mount namespace this hybrid-cgroup machine needs). The
bundle is made by the agent's own ContainerManager.create from a Replica:
overlay rootfs, /etc files, config.json.

Everything lives under one temporary directory ``mctl-test-*`` and the
cgroup prefix ``mctl/test-oci-<random>``; the module checks at the end that
no mount, cgroup (in any hierarchy: runc and crun use them all) or process
is left, and every test checks its own container's state and cgroup are gone.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from mctl.agent.containers import REPLICA_FILE, Container, ContainerManager
from mctl.agent.images.store import ImageError, ImageStore
from mctl.agent.runtime.cgroups import ControllerUnavailable, detect
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.oci import client as ociclient
from mctl.common import procfs
from mctl.v1 import types_pb2

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

RUNTIMES = ["mctl-runtime", "runc", "crun"]
MiB = 1 << 20
WAIT = 10.0


def _mounts(needle: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if needle in line]


def _cgroups(pattern: str) -> list[str]:
    return sorted(glob.glob(f"/sys/fs/cgroup/*/{pattern}"))


def _processes_mentioning(needle: str) -> list[str]:
    return [f"{pid}: {cmd[:100]}" for pid, cmd in procfs.processes_mentioning(needle)]


@dataclass
class Env:
    tmp: str
    manager: ContainerManager
    prefix: str


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    try:
        cgroups = detect()
    except ControllerUnavailable as e:
        pytest.skip(f"cgroup controllers missing: {e}")
    tmp = tempfile.mkdtemp(prefix="mctl-test-")
    images = ImageStore(os.path.join(tmp, "images"))
    try:
        images.ensure_busybox()
    except ImageError as e:
        shutil.rmtree(tmp)
        pytest.skip(str(e))
    prefix = f"mctl/test-oci-{secrets.token_hex(3)}"
    # The runtime here only serves teardown (a no-op remove); containers are
    # started by the command under test.
    manager = ContainerManager(os.path.join(tmp, "state"), "knode", images, cgroups,
                               NativeRuntime(), cgroup_parent=prefix)
    try:
        yield Env(tmp, manager, prefix)
    finally:
        # What the agent's OciCommandRuntime.delete does for runc's parents.
        ociclient.remove_empty_cgroups(prefix)
        leaks = {"mounts": _mounts(tmp), "cgroups": _cgroups(f"{prefix}*"),
                 "processes": _processes_mentioning(tmp)}
        if not leaks["mounts"]:
            shutil.rmtree(tmp)
        assert leaks == {"mounts": [], "cgroups": [], "processes": []}


class Runtime:
    """One OCI runtime command, called as the agent's adapter calls it."""

    def __init__(self, name: str, binary: str, root: str) -> None:
        self.name = name
        self.root = root
        self.base = ociclient.base_argv(binary, root)

    def __call__(self, *args: str, out: str | None = None, timeout: float = 30,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a created container inherits the command's stdio
        # and would hold a pipe open long after the command exits.
        with tempfile.TemporaryFile() as err, \
                open(out or os.devnull, "ab") as file_out, tempfile.TemporaryFile() as text_out:
            proc = subprocess.run([*self.base, *args], stdin=subprocess.DEVNULL,
                                  stdout=file_out if out else text_out, stderr=err,
                                  timeout=timeout)
            err.seek(0)
            text_out.seek(0)
            result = subprocess.CompletedProcess(proc.args, proc.returncode,
                                                 text_out.read().decode(errors="replace"),
                                                 err.read().decode(errors="replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} exited {proc.returncode}: "
                                 f"{result.stderr}")
        return result

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def wait_status(self, cid: str, status: str) -> dict:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            doc = self.state(cid)
            if doc["status"] == status:
                return doc
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: {cid} not {status} within {WAIT}s: {doc}")


@pytest.fixture(params=RUNTIMES)
def rt(request: pytest.FixtureRequest, env: Env) -> Runtime:
    try:
        binary = ociclient.resolve(request.param)
    except ociclient.RuntimeNotFound as e:
        pytest.skip(str(e))
    return Runtime(request.param, binary, os.path.join(env.tmp, "roots", request.param))


@dataclass
class Box:
    container: Container
    out: str               # the container's stdout and stderr, as a file

    @property
    def id(self) -> str:
        return self.container.id

    @property
    def bundle(self) -> str:
        return self.container.bundle

    @property
    def cgroup(self) -> str:
        return self.container.cgroup

    def output(self) -> str:
        with open(self.out) as f:
            return f.read()

    def wait_output(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if text in self.output():
                return self.output()
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in the output within {WAIT}s: {self.output()!r}")


@pytest.fixture
def make(env: Env, rt: Runtime, request: pytest.FixtureRequest) -> Callable[..., Box]:
    """make(script, **spec) -> Box: a replica's bundle made by the agent's ContainerManager."""

    def build(script: str, *, memory: int = 48 * MiB, pids: int = 64, hostname: str = "",
              read_only: bool = False) -> Box:
        name = f"k{secrets.token_hex(4)}"
        replica = types_pb2.Replica(
            metadata=types_pb2.ObjectMeta(name=name, namespace="test", uid=name),
            spec=types_pb2.WorkloadSpec(
                image="busybox", command=["sh", "-c", script], hostname=hostname,
                resources=types_pb2.Resources(memory_bytes=memory, pids=pids),
                security_context=types_pb2.SecurityContext(read_only_rootfs=read_only)))
        container = env.manager.create(replica)
        box = Box(container, os.path.join(env.tmp, f"{name}.out"))
        open(box.out, "w").close()

        def teardown() -> None:
            rt("delete", "--force", box.id, check=False)
            env.manager.teardown(container)
            # Per test: the runtime's state and the container's cgroup are gone everywhere.
            assert not os.path.exists(os.path.join(rt.root, box.id))
            assert _cgroups(box.cgroup) == []

        request.addfinalizer(teardown)
        return box

    return build


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


# -- the lifecycle and the state machine -------------------------------------------------------


def test_lifecycle_create_start_kill_delete(rt, make):
    box = make("echo started; exec sleep 60")
    pid_file = os.path.join(box.bundle, "test.pid")
    rt("create", "--bundle", box.bundle, "--pid-file", pid_file, box.id, out=box.out)
    state = rt.state(box.id)
    assert state["status"] == "created"
    assert state["id"] == box.id
    assert state["ociVersion"].startswith("1.")
    assert os.path.realpath(state["bundle"]) == os.path.realpath(box.bundle)
    assert state["annotations"]["mctl.replica"] == box.container.replica.metadata.name
    pid = state["pid"]
    with open(pid_file) as f:
        assert int(f.read()) == pid > 0
    assert _pid_alive(pid)
    # Created means set up but not yet running the user's program.
    time.sleep(0.2)
    assert box.output() == ""

    rt("start", box.id)
    assert rt.state(box.id)["status"] == "running"
    box.wait_output("started\n")
    # A second start, or a delete of a running container, is an error and changes nothing.
    assert rt("start", box.id, check=False).returncode != 0
    assert rt("delete", box.id, check=False).returncode != 0
    assert rt.state(box.id)["status"] == "running"

    rt("kill", box.id, "KILL")
    assert rt.wait_status(box.id, "stopped")["pid"] == 0
    assert not _pid_alive(pid)
    assert rt("kill", box.id, "KILL", check=False).returncode != 0
    rt("delete", box.id)
    assert rt("state", box.id, check=False).returncode != 0
    assert _cgroups(box.cgroup) == []


def test_the_bundle_is_closed_to_other_users(rt, make):
    # config.json and the replica carry the workload's environment (secrets,
    # often); other users may pass through the bundle (a user namespace's
    # root must reach its rootfs) but neither list nor read it.
    box = make("true")
    assert stat.S_IMODE(os.stat(box.bundle).st_mode) == 0o711
    for name in ("config.json", REPLICA_FILE):
        assert stat.S_IMODE(os.stat(os.path.join(box.bundle, name)).st_mode) == 0o600
    pid = os.fork()
    if pid == 0:  # as nobody: every attempt must fail
        code = 0
        try:
            os.setgid(65534)
            os.setuid(65534)
            for attempt in (lambda: os.listdir(box.bundle),
                            lambda: open(os.path.join(box.bundle, "config.json")).close()):
                try:
                    attempt()
                    code = 1
                except PermissionError:
                    pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "nobody listed the bundle or read config.json"
    rt("run", "--bundle", box.bundle, box.id, out=box.out)  # and it still runs


def test_delete_of_a_created_container_ends_its_process(rt, make):
    box = make("echo should-not-run")
    rt("create", "--bundle", box.bundle, box.id, out=box.out)
    pid = rt.state(box.id)["pid"]
    rt("delete", box.id)
    deadline = time.monotonic() + WAIT
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _pid_alive(pid)
    assert box.output() == ""
    assert _cgroups(box.cgroup) == []


def test_kill_by_number_reaches_the_process_and_run_returns_its_status(rt, make):
    box = make("trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done")
    with open(box.out, "ab") as out:
        proc = subprocess.Popen([*rt.base, "run", "--bundle", box.bundle, box.id],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        box.wait_output("ready\n")
        assert rt.state(box.id)["status"] == "running"
        rt("kill", box.id, "15")
        assert proc.wait(timeout=WAIT) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "got-term" in box.output()
    # A foreground run deletes its container once the process is gone.
    assert rt("state", box.id, check=False).returncode != 0


def test_run_exits_with_the_containers_status(rt, make):
    box = make("exit 3")
    assert rt("run", "--bundle", box.bundle, box.id, check=False).returncode == 3


def test_run_of_a_killed_container_exits_128_plus_the_signal(rt, make):
    # SIGKILL from inside cannot end a pid namespace's init; from the runtime it can.
    box = make("echo ready; exec sleep 60")
    with open(box.out, "ab") as out:
        proc = subprocess.Popen([*rt.base, "run", "--bundle", box.bundle, box.id],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        box.wait_output("ready\n")
        rt("kill", box.id, "SIGKILL")
        assert proc.wait(timeout=WAIT) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- what the container sees -------------------------------------------------------------------


def test_namespaces_are_isolated(rt, make):
    box = make("echo $$; for n in pid net mnt uts ipc cgroup; do readlink /proc/self/ns/$n; "
               "done; ls /sys/class/net")
    rt("run", "--bundle", box.bundle, box.id, out=box.out)
    lines = box.output().split()
    assert lines[0] == "1"
    inside = lines[1:7]
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "net", "mnt", "uts", "ipc",
                                                         "cgroup")]
    assert len(inside) == 6
    assert all(a != b for a, b in zip(inside, host, strict=True)), (inside, host)
    assert lines[7:] == ["lo"]


def test_memory_and_pids_limits_are_applied(rt, make):
    box = make("exec sleep 60", memory=40 * MiB, pids=32)
    rt("create", "--bundle", box.bundle, box.id, out=box.out)
    pid = rt.state(box.id)["pid"]
    memory = f"/sys/fs/cgroup/memory/{box.cgroup}"
    with open(f"{memory}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 40 * MiB
    with open(f"/sys/fs/cgroup/pids/{box.cgroup}/pids.max") as f:
        assert f.read().strip() == "32"
    with open(f"{memory}/cgroup.procs") as f:
        assert pid in [int(p) for p in f.read().split()]
    rt("delete", "--force", box.id)
    assert _cgroups(box.cgroup) == []


def test_memory_hog_is_killed_at_the_limit(rt, make):
    box = make("x=a; while true; do x=$x$x; done", memory=16 * MiB)
    assert rt("run", "--bundle", box.bundle, box.id, check=False).returncode == 137


def test_hostname_is_the_configs(rt, make):
    box = make("hostname", hostname="oci-host")
    rt("run", "--bundle", box.bundle, box.id, out=box.out)
    assert box.output() == "oci-host\n"


def test_readonly_rootfs(rt, make):
    box = make("touch /x 2>/dev/null && echo rw || echo ro", read_only=True)
    rt("run", "--bundle", box.bundle, box.id, out=box.out)
    assert box.output() == "ro\n"


def test_a_missing_program_fails_create_and_leaves_nothing(rt, make):
    box = make("true")
    config_path = os.path.join(box.bundle, "config.json")
    with open(config_path) as f:
        doc = json.load(f)
    doc["process"]["args"] = ["/no-such-program"]
    with open(config_path, "w") as f:
        json.dump(doc, f)
    result = rt("create", "--bundle", box.bundle, box.id, check=False)
    # All three look the program up at create, before anything runs.
    assert result.returncode != 0
    assert "/no-such-program" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert rt("state", box.id, check=False).returncode != 0
    assert _cgroups(box.cgroup) == []


def test_a_bad_config_is_refused_before_anything_is_made(rt, make):
    box = make("true")
    config_path = os.path.join(box.bundle, "config.json")
    with open(config_path) as f:
        doc = json.load(f)
    doc["process"]["user"]["uid"] = -1
    with open(config_path, "w") as f:
        json.dump(doc, f)
    result = rt("create", "--bundle", box.bundle, box.id, check=False)
    assert result.returncode != 0
    # mctl-runtime and runc name the field; crun 1.8 names only the file.
    assert ("config.json" if rt.name == "crun" else "process.user.uid") in result.stderr, \
        result.stderr
    assert rt("state", box.id, check=False).returncode != 0
    assert _cgroups(box.cgroup) == []


def test_a_cgroup_mount_shows_the_containers_own_cgroup(rt, make):
    # podman's config.json carries this mount; with a cgroup namespace the
    # container sees its own cgroup as the root of each hierarchy.
    # (runc and crun leave the v1 tmpfs itself writable despite "ro"; mctl-runtime
    # does not, so that is not compared here.)
    box = make("cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
               "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
               "&& echo rw || echo ro", memory=24 * MiB)
    config_path = os.path.join(box.bundle, "config.json")
    with open(config_path) as f:
        doc = json.load(f)
    doc["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                          "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    with open(config_path, "w") as f:
        json.dump(doc, f)
    rt("run", "--bundle", box.bundle, box.id, out=box.out)
    assert box.output().split() == [str(24 * MiB), "ro"]


def test_a_monitor_gone_without_a_record_shows_the_container_lost(env, make, rt):
    if rt.name != "mctl-runtime":
        pytest.skip("the agent's own start path, once is enough")
    box = make("exec sleep 60")
    c = box.container
    env.manager.start(c)
    env.manager.refresh(c)
    assert c.exit is None
    assert c.monitor_identity is not None and c.monitor_identity[0] == c.monitor_pid
    # Read once per run: later passes do not need state.json any more.
    os.unlink(os.path.join(c.bundle, "state.json"))
    env.manager.refresh(c)
    assert c.exit is None
    os.kill(c.monitor_pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while c.exit is None and time.monotonic() < deadline:
        env.manager.refresh(c)
        time.sleep(0.02)
    assert c.exit is not None and c.exit.lost is True
    env.manager.stop(c, 0)
