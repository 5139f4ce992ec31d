"""Hooks, linux.sysctl, process.oomScoreAdj and LSM labels on real containers, three runtimes.

Needs root. Bundles come from boxes.Boxes (the agent's layout: busybox
overlay rootfs, /etc files, config.json through oci.write_config, with the
new Config fields as overrides); most tests run each through the OCI
command line of mctl-runtime, runc and crun (test_oci_runtimes_kernel's
Runtime, crun inside its private mount namespace), and hold them to the
same observable behaviour where runc and crun agree with the spec; where
they differ (runc's poststart races startContainer, runc's `start` ignores
a failed startContainer hook) only mctl-runtime is held to the spec. The
native in-agent path is checked for sysctl and oomScoreAdj, and for
refusing hooks cleanly.

The hook script appends one line per call to a log: a sequence number,
the stage, the mount, pid and network namespaces it ran in, and its stdin
(the state JSON). It lives in a directory bound into the container at the
same path, so startContainer hooks (whose path resolves inside) find it.

Everything is under the Boxes' ``mctl-ktest-*`` directory and cgroup prefix
``mctl/test-hooks-*``; each test checks its container left no state, cgroup
(in any hierarchy) or process, and the module that no mount is left.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable, Iterator

import pytest
from boxes import Box, Boxes
from test_oci_runtimes_kernel import RUNTIMES, Runtime

from mctl.agent.runtime import lsm, userns
from mctl.agent.runtime.api import StartError
from mctl.agent.runtime.oci import client as ociclient
from mctl.agent.runtime.oci.config import Hook, Hooks, Mount
from mctl.common.procfs import mounts_mentioning, processes_mentioning

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

WAIT = 10.0
STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
          "poststop")
HOOK_SCRIPT = """#!/bin/sh
# $1: the stage; $2: the log. One append per call (atomic for a line this short).
state=$(cat)
n=$(( $(wc -l < "$2") + 1 ))
echo "$n $1 $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/pid) \
$(readlink /proc/self/ns/net) $state" >> "$2"
"""
# What the container prints first: its own namespaces, as the hooks do.
SHOW_NS = "readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; readlink /proc/self/ns/net"


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("hooks")
    hooks_dir = os.path.join(b.tmp, "hooks")
    os.makedirs(hooks_dir)
    os.chmod(hooks_dir, 0o777)   # a user namespace's root writes its log here
    with open(os.path.join(hooks_dir, "hook.sh"), "w") as f:
        f.write(HOOK_SCRIPT)
    os.chmod(os.path.join(hooks_dir, "hook.sh"), 0o755)
    try:
        yield b
    finally:
        # runc and crun leave the prefix's empty parents in every v1 hierarchy.
        ociclient.remove_empty_cgroups(b.prefix)
        assert b.close() == {}


@pytest.fixture(params=RUNTIMES)
def rt(request: pytest.FixtureRequest, boxes: Boxes) -> Runtime:
    try:
        binary = ociclient.resolve(request.param)
    except ociclient.RuntimeNotFound as e:
        pytest.skip(str(e))
    return Runtime(request.param, binary, os.path.join(boxes.tmp, "roots", request.param))


def _cgroups(cgroup: str) -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/{cgroup}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


class HookBox:
    """A bundle with a hook log, run through one OCI runtime."""

    def __init__(self, boxes: Boxes, box: Box) -> None:
        self.box = box
        self.id = box.id
        self.bundle = box.bundle
        self.cgroup = box.cgroup
        self.out = box.path("out")
        self.log = os.path.join(boxes.tmp, "hooks", f"{box.id}.log")

    def output(self) -> str:
        with open(self.out) as f:
            return f.read()

    def entries(self) -> list[tuple[str, str, str, str, dict]]:
        """(stage, mnt, pid ns, net ns, state) per hook call, in the order they ran."""
        out = []
        with open(self.log) as f:
            for line in f:
                _, stage, mnt, pid, net, state = line.rstrip("\n").split(" ", 5)
                out.append((stage, mnt, pid, net, json.loads(state)))
        return out

    def stages(self) -> list[str]:
        return [e[0] for e in self.entries()]

    def wait_stages(self, count: int) -> list[str]:
        deadline = time.monotonic() + WAIT
        while len(self.stages()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stages()

    def wait_output(self, lines: int) -> list[str]:
        deadline = time.monotonic() + WAIT
        while len(self.output().splitlines()) < lines and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.output().splitlines()


@pytest.fixture
def mctl(boxes: Boxes) -> Runtime:
    """mctl-runtime alone, for what runc or crun do differently from the spec."""
    return Runtime("mctl-runtime", ociclient.resolve("mctl-runtime"),
                   os.path.join(boxes.tmp, "roots", "mctl-runtime"))


@pytest.fixture
def make(boxes: Boxes, request: pytest.FixtureRequest) -> Callable[..., HookBox]:
    """make(command, hooks=..., **config overrides) -> HookBox (not created yet).

    `hooks` maps a stage to a list of Hook or "log" (the logging script), or
    to "log" alone.
    """
    rt: Runtime | None = None
    for name in ("rt", "mctl"):
        if name in request.fixturenames:
            rt = request.getfixturevalue(name)
    hooks_dir = os.path.join(boxes.tmp, "hooks")

    def build(command: str, *, hooks: dict[str, object] | None = None,
              **overrides: object) -> HookBox:
        mounts = (Mount(hooks_dir, "bind", hooks_dir, ("bind", "rw")),)
        box = boxes.make(command, extra_mounts=mounts, **overrides)
        hb = HookBox(boxes, box)
        open(hb.out, "w").close()
        open(hb.log, "w").close()
        os.chmod(hb.log, 0o666)
        if hooks:
            stages = {}
            log_hook = Hook(os.path.join(hooks_dir, "hook.sh"), ("hook.sh", "", hb.log))
            for stage, entries in hooks.items():
                listed = entries if isinstance(entries, list) else [entries]
                stages[stage] = tuple(log_hook.replace(args=("hook.sh", stage, hb.log))
                                      if e == "log" else e for e in listed)
            from mctl.agent.runtime.oci import config as oci

            config = oci.load_config(box.bundle)
            oci.write_config(box.bundle, config.replace(hooks=Hooks(**{
                oci.HOOK_STAGES[s]: v for s, v in stages.items()})))

        def teardown() -> None:
            if rt is not None:
                rt("delete", "--force", hb.id, check=False)
                assert not os.path.exists(os.path.join(rt.root, hb.id))
            boxes.teardown(box)
            if rt is not None:
                ociclient.remove_empty_cgroups(hb.cgroup)
            assert _cgroups(hb.cgroup) == []

        request.addfinalizer(teardown)
        return hb

    return build


def all_logged() -> dict[str, object]:
    return {stage: "log" for stage in STAGES}


def _nothing_left(rt: Runtime, hb: HookBox) -> None:
    """No state, no cgroup in any hierarchy, no process of the container."""
    assert rt("state", hb.id, check=False).returncode != 0
    deadline = time.monotonic() + WAIT
    while _cgroups(hb.cgroup) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _cgroups(hb.cgroup) == []
    assert not os.path.exists(os.path.join(rt.root, hb.id))
    assert processes_mentioning(hb.bundle) == []
    # The host sees only the overlay the test made (and, with a user
    # namespace, its idmapped layers); the container's mounts went with its
    # mount namespace.
    def made(point: str) -> bool:
        return point == f"{hb.bundle}/rootfs" or point.startswith(f"{hb.bundle}/lower/")

    assert [m for m in mounts_mentioning(hb.bundle) if not made(m.split()[4])] == []


# -- hooks: order, namespaces, state -----------------------------------------------------------


def test_hooks_run_in_order_in_their_namespaces_with_the_state(rt, make):
    hb = make(f"{SHOW_NS}; exit 0", hooks=all_logged())
    ours = os.readlink("/proc/self/ns/mnt")
    rt("create", "--bundle", hb.bundle, hb.id, out=hb.out)
    # runc 1.1.5 runs poststart hooks at create already, before the program
    # runs (its libcontainer Start), against the spec; crun at `start`, but
    # without waiting for its init's startContainer hooks and exec (the two
    # race); mctl-runtime once the program was exec'd, before `start` returns.
    if rt.name == "runc":
        assert hb.stages() == ["prestart", "createRuntime", "createContainer", "poststart"]
    else:
        assert hb.stages() == ["prestart", "createRuntime", "createContainer"]
    init = rt.state(hb.id)["pid"]
    rt("start", hb.id)
    assert sorted(hb.wait_stages(5)[3:]) == ["poststart", "startContainer"]
    if rt.name == "mctl-runtime":
        assert hb.stages()[3:] == ["startContainer", "poststart"]
    mnt, pidns, net = hb.wait_output(3)[:3]
    rt.wait_status(hb.id, "stopped")
    assert "poststop" not in hb.stages()
    rt("delete", hb.id)
    assert hb.stages()[-1] == "poststop"  # before delete returned

    entries = {e[0]: e for e in hb.entries()}
    for stage in ("createContainer", "startContainer"):
        # In the container's namespaces.
        assert entries[stage][1:4] == (mnt, pidns, net), stage
    for stage in ("prestart", "createRuntime", "poststart", "poststop"):
        # In the runtime's: ours, or for crun the private mount namespace its
        # wrapper makes for each call (ociclient.base_argv), never the container's.
        hook_mnt, hook_pid, hook_net = entries[stage][1:4]
        assert hook_mnt != mnt and hook_pid != pidns and hook_net != net, stage
        assert hook_pid == os.readlink("/proc/self/ns/pid")
        if rt.name != "crun":
            assert hook_mnt == ours, stage
    for stage, entry in entries.items():
        state = entry[4]
        assert state["id"] == hb.id, stage
        if not (rt.name == "crun" and stage == "startContainer"):  # crun 1.8.1 says "/"
            assert os.path.realpath(state["bundle"]) == os.path.realpath(hb.bundle), stage
    for stage in ("prestart", "createRuntime", "poststart"):
        # The init as the runtime sees it (runc and crun too).
        assert entries[stage][4]["pid"] == init, stage
    if rt.name != "runc":
        # The spec runs prestart once the runtime environment is created;
        # crun says so (runc 1.1.5 says "creating").
        assert entries["prestart"][4]["status"] == "created"
    if rt.name == "mctl-runtime":
        assert [entries[s][4]["status"] for s in STAGES] == [
            "created", "creating", "creating", "created", "running", "stopped"]
        assert entries["createContainer"][4]["pid"] == 1  # as runc: its pid in the container
        assert entries["poststop"][4]["pid"] == 0
        assert entries["poststart"][4]["annotations"] == {}


def test_run_runs_the_same_hooks(rt, make):
    hb = make("exit 0", hooks=all_logged())
    assert rt("run", "--bundle", hb.bundle, hb.id, out=hb.out, check=False).returncode == 0
    assert sorted(hb.stages()) == sorted(STAGES)
    assert hb.stages()[:3] == ["prestart", "createRuntime", "createContainer"]
    assert hb.stages()[-1] == "poststop"
    if rt.name == "mctl-runtime":
        assert hb.stages() == list(STAGES)
    _nothing_left(rt, hb)


def test_hook_args_env_and_cwd(rt, make, boxes):
    out = os.path.join(boxes.tmp, "hooks", "args.out")
    script = f'echo "$0|$1|$MCTL_X|$(pwd)" > {out}'
    hb = make("exit 0", hooks={"createRuntime": [Hook("/bin/sh", ("sh", "-c", script, "first"),
                                                       ("MCTL_X=y",))]})
    try:
        rt("create", "--bundle", hb.bundle, hb.id, out=hb.out)
        with open(out) as f:
            zero, one, x, cwd = f.read().strip().split("|")
        # argv[0] is args[0]; the runtime hooks' directory is the bundle (runc's, crun's).
        assert (zero, one, x) == ("first", "", "y")
        assert os.path.realpath(cwd) == os.path.realpath(hb.bundle)
    finally:
        os.unlink(out)


def test_start_container_hooks_run_as_the_containers_user(rt, make, boxes):
    out = os.path.join(boxes.tmp, "hooks", f"uid-{rt.name}.out")
    script = f"echo $(id -u) $(id -g) $(pwd) > {out}"
    hb = make("exit 0", uid=1000, gid=1000, cwd="/tmp",
              hooks={"startContainer": [Hook("/bin/sh", ("sh", "-c", script))]})
    try:
        rt("run", "--bundle", hb.bundle, hb.id, out=hb.out)
        with open(out) as f:
            # Inside, after the switch to the container's user, in its cwd (all three).
            assert f.read().split() == ["1000", "1000", "/tmp"]
    finally:
        os.unlink(out)


# -- failing hooks ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_create_hook_fails_create_and_leaves_nothing(rt, make, stage):
    fail = Hook("/bin/sh", ("sh", "-c", "echo it broke >&2; exit 3"))
    hooks: dict[str, object] = {s: "log" for s in STAGES}
    hooks[stage] = [fail]
    hb = make("echo should-not-run", hooks=hooks)
    result = rt("create", "--bundle", hb.bundle, hb.id, out=hb.out, check=False)
    assert result.returncode != 0
    _nothing_left(rt, hb)
    assert hb.output() == ""
    assert "startContainer" not in hb.stages()
    if rt.name == "mctl-runtime":
        assert result.stderr.strip() == (f"mctl-runtime: hooks.{stage}[0] (/bin/sh): exited 3: "
                                         "it broke")
    if rt.name != "crun":
        # The spec's step 12-13 after a failed create hook: destroy, then poststop.
        assert hb.stages()[-1] == "poststop"


def test_a_hook_that_times_out_is_killed_and_fails_create(rt, make, boxes):
    # `exec`: the hook process itself sleeps (runc and crun kill only that one).
    hb = make("echo should-not-run", hooks={
        "createRuntime": [Hook("/bin/sh", ("sh", "-c", "exec sleep 30"), timeout=1)],
        "poststop": "log"})
    started = time.monotonic()
    result = rt("create", "--bundle", hb.bundle, hb.id, out=hb.out, check=False)
    assert result.returncode != 0
    assert time.monotonic() - started < WAIT
    _nothing_left(rt, hb)
    if rt.name == "mctl-runtime":
        assert result.stderr.strip() == ("mctl-runtime: hooks.createRuntime[0] (/bin/sh): "
                                         "timed out after 1s")


def test_a_timed_out_hooks_children_are_killed_too(mctl, make, boxes):
    # mctl-runtime kills the hook's whole process group, and does not wait
    # for a child holding its output pipes (runc 1.1.5 waits the child's 30 s).
    rt = mctl
    pid_file = os.path.join(boxes.tmp, "hooks", "sleeper.pid")
    hb = make("true", hooks={"createRuntime": [
        Hook("/bin/sh", ("sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"), timeout=1)]})
    try:
        started = time.monotonic()
        result = rt("create", "--bundle", hb.bundle, hb.id, check=False)
        assert time.monotonic() - started < 5
        assert "hooks.createRuntime[0] (/bin/sh): timed out after 1s" in result.stderr
        with open(pid_file) as f:
            assert _wait_gone(int(f.read()))
        _nothing_left(rt, hb)
    finally:
        os.unlink(pid_file)


def test_a_failing_start_container_hook_fails_start(mctl, make):
    # mctl-runtime only: runc 1.1.5's `start` exits 0 and its init dies quietly.
    rt = mctl
    hb = make("echo should-not-run", hooks={
        "startContainer": [Hook("/bin/sh", ("sh", "-c", "echo nope >&2; exit 4"))],
        "poststart": "log", "poststop": "log"})
    rt("create", "--bundle", hb.bundle, hb.id, out=hb.out)
    init = rt.state(hb.id)["pid"]
    result = rt("start", hb.id, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ("mctl-runtime: hooks.startContainer[0] (/bin/sh): "
                                     "exited 4: nope")
    assert _wait_gone(init)
    _nothing_left(rt, hb)
    assert hb.output() == ""
    assert hb.stages() == ["poststop"]


def test_poststart_and_poststop_failures_are_warnings(mctl, make):
    # mctl-runtime only: runc 1.1.5 fails `start` on a poststart failure and
    # kills the container; the spec (runtime.md) asks for a warning, and the
    # remaining hooks run.
    rt = mctl
    fail = Hook("/bin/sh", ("sh", "-c", "echo meh >&2; exit 2"))
    hb = make("echo ran; exec sleep 60", hooks={"poststart": [fail, "log"],
                                                 "poststop": [fail, "log"]})
    rt("create", "--bundle", hb.bundle, hb.id, out=hb.out)
    result = rt("start", hb.id)
    assert result.stderr.strip() == ("mctl-runtime: warning: hooks.poststart[0] (/bin/sh): "
                                     "exited 2: meh")
    assert hb.stages() == ["poststart"]
    assert rt.state(hb.id)["status"] == "running"
    assert hb.wait_output(1) == ["ran"]
    result = rt("delete", "--force", hb.id)
    assert result.stderr.strip() == ("mctl-runtime: warning: hooks.poststop[0] (/bin/sh): "
                                     "exited 2: meh")
    assert hb.stages() == ["poststart", "poststop"]
    _nothing_left(rt, hb)


def test_poststop_runs_on_delete_of_a_created_container(rt, make):
    hb = make("echo should-not-run", hooks={"poststop": "log"})
    rt("create", "--bundle", hb.bundle, hb.id, out=hb.out)
    assert hb.stages() == []
    rt("delete", hb.id)
    assert hb.stages() == ["poststop"]
    assert hb.entries()[0][4]["status"] == "stopped"
    _nothing_left(rt, hb)


def test_hooks_in_a_user_namespace(rt, make):
    hb = make(f"{SHOW_NS}; id -u", hooks=all_logged(), userns=True)
    rt("run", "--bundle", hb.bundle, hb.id, out=hb.out)
    mnt, pidns, net, uid = hb.output().split()
    assert uid == "0"
    entries = {e[0]: e for e in hb.entries()}
    assert sorted(entries) == sorted(STAGES)
    assert hb.stages()[:3] == ["prestart", "createRuntime", "createContainer"]
    for stage in ("createContainer", "startContainer"):
        assert entries[stage][1:4] == (mnt, pidns, net), stage
    for stage in ("prestart", "createRuntime", "poststart", "poststop"):
        assert entries[stage][2] == os.readlink("/proc/self/ns/pid"), stage
        assert entries[stage][1] != mnt, stage
    _nothing_left(rt, hb)


# -- sysctl, oomScoreAdj, LSM labels ------------------------------------------------------------


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.mark.parametrize("user_namespace", [False, True], ids=["", "userns"])
def test_sysctls_are_set_inside_and_not_on_the_host(rt, make, user_namespace):
    shmmax = str(1_234_567_890 + os.getpid() % 1000)
    host = {p: _read(p) for p in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmax",
                                  "/proc/sys/net/core/somaxconn")}
    hb = make("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax "
              "/proc/sys/net/core/somaxconn",
              sysctl={"net.ipv4.ip_forward": "1", "kernel.shmmax": shmmax,
                      "net/core/somaxconn": "77"},
              userns=user_namespace)
    rt("run", "--bundle", hb.bundle, hb.id, out=hb.out)
    assert hb.output().split() == ["1", shmmax, "77"]
    assert {p: _read(p) for p in host} == host


@pytest.mark.parametrize("key", ["kernel.pid_max", "vm.swappiness"])
def test_a_host_wide_sysctl_is_refused_before_anything_is_made(rt, make, key):
    hb = make("echo should-not-run")
    path = os.path.join(hb.bundle, "config.json")
    with open(path) as f:
        doc = json.load(f)
    doc["linux"]["sysctl"] = {key: "1"}
    with open(path, "w") as f:
        json.dump(doc, f)
    before = _read(f"/proc/sys/{key.replace('.', '/')}")
    result = rt("create", "--bundle", hb.bundle, hb.id, out=hb.out, check=False)
    assert result.returncode != 0
    assert key in result.stderr
    assert _read(f"/proc/sys/{key.replace('.', '/')}") == before
    _nothing_left(rt, hb)
    if rt.name == "mctl-runtime":
        assert result.stderr.strip().startswith(f"mctl-runtime: config.json: linux.sysctl.{key}: "
                                                "is not namespaced")


@pytest.mark.parametrize("user_namespace", [False, True], ids=["", "userns"])
def test_oom_score_adj_is_the_containers(rt, make, user_namespace):
    hb = make("cat /proc/1/oom_score_adj /proc/self/oom_score_adj", oom_score_adj=321,
              userns=user_namespace)
    rt("run", "--bundle", hb.bundle, hb.id, out=hb.out)
    assert hb.output().split() == ["321", "321"]
    assert _read("/proc/self/oom_score_adj") != "321"


@pytest.mark.parametrize(("field", "value"), [("apparmorProfile", "mctl-test-profile"),
                                              ("selinuxLabel", "system_u:system_r:container_t:s0")])
def test_lsm_labels_fail_create_when_the_lsm_is_off(rt, make, field, value):
    if lsm.apparmor_enabled() or lsm.selinux_enabled():
        pytest.skip("an LSM is enabled here; these check the refusal without one")
    hb = make("echo should-not-run")
    path = os.path.join(hb.bundle, "config.json")
    with open(path) as f:
        doc = json.load(f)
    doc["process"][field] = value
    with open(path, "w") as f:
        json.dump(doc, f)
    # runc and crun fail too (each its own words: lsm.py).
    result = rt("create", "--bundle", hb.bundle, hb.id, out=hb.out, check=False)
    assert result.returncode != 0
    assert hb.output() == ""
    _nothing_left(rt, hb)
    if rt.name == "mctl-runtime":
        assert result.stderr.strip().startswith(f"mctl-runtime: process.{field}: ")
        assert "is not enabled on this host" in result.stderr


# -- the native in-agent runtime ----------------------------------------------------------------


@pytest.mark.parametrize("user_namespace", [False, True], ids=["", "userns"])
def test_native_sets_sysctls_and_oom_score_adj(boxes, user_namespace):
    if user_namespace and userns.unavailable():
        pytest.skip(userns.unavailable())
    box = boxes.run("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax "
                    "/proc/1/oom_score_adj",
                    sysctl={"net.ipv4.ip_forward": "1", "kernel.msgmax": "12345"},
                    oom_score_adj=456, userns=user_namespace)
    try:
        assert box.wait_exit()["exit_code"] == 0, box.output()
        assert box.stdout().split() == ["1", "12345", "456"]
    finally:
        boxes.teardown(box)


def test_native_refuses_hooks_and_leaves_nothing(boxes):
    box = boxes.make("echo should-not-run", hooks=Hooks(poststart=(Hook("/bin/true"),)))
    try:
        with pytest.raises(StartError, match=r"hooks: not run by the in-agent native runtime"):
            boxes.start(box)
        assert _cgroups(box.cgroup) == []
        assert processes_mentioning(box.bundle) == []
    finally:
        boxes.teardown(box)


def test_native_start_error_names_a_failing_sysctl_write(boxes):
    # Allowed by name, refused by the kernel's parser: the error says which key.
    box = boxes.make("echo should-not-run", sysctl={"net.ipv4.ip_forward": "many"})
    try:
        with pytest.raises(StartError, match=r"^linux.sysctl: net.ipv4.ip_forward='many': "
                                             r"writing /proc/sys/net/ipv4/ip_forward: "
                                             r"Invalid argument$"):
            boxes.start(box)
        # The agent's teardown removes the cgroup (boxes.teardown, checked at close).
        assert boxes.cgroups.pids(box.cgroup) == []
    finally:
        boxes.teardown(box)

