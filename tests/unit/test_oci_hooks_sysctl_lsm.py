"""hooks, linux.sysctl, process.oomScoreAdj, LSM labels: parsing, and what runs them.

Parsing (oci.parse_config): every bad field fails with a ConfigError naming
it. The hook runner (hooks.run_one, Lifecycle) runs real programs (/bin/sh)
without root: exit codes, timeouts that kill the hook's whole process
group, the state on stdin, env and cwd, and both sides of the sync channel
between the runtime and a forked "init". sysctl's rules and paths, lsm's
writes against a fake /proc and /sys, and the mount label through the
recording syscall fake need no kernel either.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from mctl.agent.runtime import hooks, lsm, rootfs, sysctl
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import Config, ConfigError, Hook, Hooks


def base_doc() -> dict:
    return oci.to_json(Config(args=("sh",), mounts=tuple(oci.default_mounts())))


def error_for(doc: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    return info.value


# -- parsing: hooks --------------------------------------------------------------------------


def test_hooks_round_trip_through_to_json():
    hooks_ = Hooks(
        prestart=(Hook("/usr/bin/a"),),
        create_runtime=(Hook("/usr/bin/b", ("b", "-x"), ("K=v",), 5),),
        create_container=(Hook("/c"),),
        start_container=(Hook("/d", env=()),),
        poststart=(Hook("/e", timeout=1), Hook("/f")),
        poststop=(Hook("/g", ("g",)),),
    )
    config = Config(args=("sh",), hooks=hooks_)
    doc = oci.to_json(config)
    assert doc["hooks"]["createRuntime"] == [
        {"path": "/usr/bin/b", "args": ["b", "-x"], "env": ["K=v"], "timeout": 5}]
    # An empty env is kept apart from an absent one (absent: the runtime's own).
    assert doc["hooks"]["startContainer"] == [{"path": "/d", "env": []}]
    assert oci.parse_config(json.loads(json.dumps(doc))) == config


def test_no_hooks_is_none():
    assert oci.parse_config(base_doc()).hooks is None
    doc = base_doc()
    doc["hooks"] = {"poststart": [], "somethingNew": [{"path": "x"}]}
    # Empty stages are no hooks; an unknown stage is ignored (spec: unknown properties).
    assert oci.parse_config(doc).hooks is None
    assert "hooks" not in oci.to_json(Config(args=("sh",)))


BAD_HOOKS = [
    ([], "hooks", "must be object"),
    ({"prestart": {}}, "hooks.prestart", "must be array"),
    ({"poststart": ["/bin/x"]}, "hooks.poststart[0]", "must be object"),
    ({"poststart": [{"path": "/a"}, {"args": []}]}, "hooks.poststart[1].path", "required"),
    ({"createRuntime": [{"path": "bin/x"}]}, "hooks.createRuntime[0].path",
     "not an absolute path"),
    ({"createRuntime": [{"path": 3}]}, "hooks.createRuntime[0].path", "must be string"),
    ({"createContainer": [{"path": "/x", "args": "x"}]}, "hooks.createContainer[0].args",
     "must be array"),
    ({"createContainer": [{"path": "/x", "args": ["x", 1]}]},
     "hooks.createContainer[0].args[1]", "must be string"),
    ({"startContainer": [{"path": "/x", "env": ["A=1", "B"]}]},
     "hooks.startContainer[0].env[1]", "not KEY=value"),
    ({"poststop": [{"path": "/x", "timeout": 0}]}, "hooks.poststop[0].timeout",
     "greater than zero"),
    ({"poststop": [{"path": "/x", "timeout": -3}]}, "hooks.poststop[0].timeout",
     "greater than zero"),
    ({"poststop": [{"path": "/x", "timeout": 1.5}]}, "hooks.poststop[0].timeout", "must be int"),
    ({"poststop": [{"path": "/x", "timeout": True}]}, "hooks.poststop[0].timeout",
     "must be int"),
]


@pytest.mark.parametrize(("value", "field", "problem"), BAD_HOOKS,
                         ids=[f for _, f, _ in BAD_HOOKS])
def test_bad_hook_names_the_field(value, field, problem):
    doc = base_doc()
    doc["hooks"] = value
    err = error_for(doc)
    assert err.field_path == field
    assert problem in err.problem
    assert str(err).startswith(f"config.json: {field}: ")


# -- parsing: sysctl, oomScoreAdj, labels ----------------------------------------------------


def test_namespaced_sysctls_are_accepted():
    doc = base_doc()
    doc["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1234",
                              "fs.mqueue.msg_max": "20", "kernel.domainname": "example",
                              "net/ipv4/conf/all/rp_filter": "0", "kernel.sem": "1 2 3 4"}
    config = oci.parse_config(doc)
    assert config.sysctl == doc["linux"]["sysctl"]
    assert oci.to_json(config)["linux"]["sysctl"] == doc["linux"]["sysctl"]
    assert "sysctl" not in base_doc()["linux"]


BAD_SYSCTLS = [
    ({"kernel.pid_max": "10"}, (), "linux.sysctl.kernel.pid_max", "is not namespaced"),
    ({"vm.overcommit_memory": "1"}, (), "linux.sysctl.vm.overcommit_memory",
     "is not namespaced"),
    ({"kernel.hostname": "x"}, (), "linux.sysctl.kernel.hostname", "conflicts with the hostname"),
    ({"net.ipv4.ip_forward": "1"}, ("network",), "linux.sysctl.net.ipv4.ip_forward",
     "needs a network namespace"),
    ({"kernel.shmmax": "1"}, ("ipc",), "linux.sysctl.kernel.shmmax", "needs an ipc namespace"),
    ({"fs.mqueue.queues_max": "1"}, ("ipc",), "linux.sysctl.fs.mqueue.queues_max",
     "needs an ipc namespace"),
    ({"kernel.domainname": "x"}, ("uts",), "linux.sysctl.kernel.domainname",
     "needs a uts namespace"),
    ({"net/../../x": "1"}, (), "linux.sysctl.net/../../x", "not a sysctl name"),
    ({"net.ipv4.ip_forward": 1}, (), "linux.sysctl.net.ipv4.ip_forward", "must be string"),
]


@pytest.mark.parametrize(("sysctls", "drop", "field", "problem"), BAD_SYSCTLS,
                         ids=[f for _, _, f, _ in BAD_SYSCTLS])
def test_bad_sysctl_names_the_key(sysctls, drop, field, problem):
    doc = base_doc()
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] not in drop]
    doc["linux"]["sysctl"] = sysctls
    err = error_for(doc)
    assert err.field_path == field
    assert problem in err.problem


def test_sysctl_must_be_an_object():
    doc = base_doc()
    doc["linux"]["sysctl"] = ["net.ipv4.ip_forward=1"]
    assert error_for(doc).field_path == "linux.sysctl"


@pytest.mark.parametrize("value", [-1000, -1, 0, 500, 1000])
def test_oom_score_adj_in_range(value):
    doc = base_doc()
    doc["process"]["oomScoreAdj"] = value
    config = oci.parse_config(doc)
    assert config.oom_score_adj == value
    assert oci.to_json(config)["process"]["oomScoreAdj"] == value


@pytest.mark.parametrize(("value", "problem"), [(-1001, "not between -1000 and 1000"),
                                                (1001, "not between"), ("5", "must be int"),
                                                (False, "must be int")])
def test_bad_oom_score_adj(value, problem):
    doc = base_doc()
    doc["process"]["oomScoreAdj"] = value
    err = error_for(doc)
    assert err.field_path == "process.oomScoreAdj"
    assert problem in err.problem


def test_oom_score_adj_absent_is_none():
    assert oci.parse_config(base_doc()).oom_score_adj is None
    assert "oomScoreAdj" not in base_doc()["process"]


def test_labels_round_trip_and_must_be_strings():
    doc = base_doc()
    doc["process"]["apparmorProfile"] = "docker-default"
    doc["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0:c1,c2"
    doc["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    config = oci.parse_config(doc)
    assert (config.apparmor_profile, config.selinux_label, config.mount_label) == (
        "docker-default", "system_u:system_r:container_t:s0:c1,c2",
        "system_u:object_r:container_file_t:s0:c1,c2")
    again = oci.to_json(config)
    assert again["process"]["apparmorProfile"] == "docker-default"
    assert again["linux"]["mountLabel"] == doc["linux"]["mountLabel"]
    for where, key in (("process", "apparmorProfile"), ("process", "selinuxLabel"),
                       ("linux", "mountLabel")):
        bad = base_doc()
        bad[where][key] = 7
        assert error_for(bad).field_path == f"{where}.{key}"


# -- sysctl: names and paths -----------------------------------------------------------------


@pytest.mark.parametrize(("key", "path"), [
    ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
    ("net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_forward"),
    # sysctl(8): with "/" separators a dot belongs to a name (a VLAN interface).
    ("net/ipv4/conf/eth0.100/rp_filter", "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
    ("net.ipv4.conf.eth0/100.rp_filter", "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
])
def test_sysctl_paths(key, path):
    assert sysctl.proc_path(key) == path
    assert sysctl.problem(key, ("network",)) == ""


@pytest.mark.parametrize("key", ["net/../../etc", "net..x", "net.a/..", "", "net.x\0"])
def test_sysctl_names_cannot_leave_proc_sys(key):
    assert sysctl.problem(key, ("network", "ipc", "uts")) == "is not a sysctl name"


def test_sysctl_net_refused_in_the_runtimes_own_netns(tmp_path):
    own = {"network": "/proc/self/ns/net"}
    assert "is the runtime's own" in sysctl.netns_problem({"net.ipv4.ip_forward": "1"}, own)
    assert sysctl.netns_problem({"kernel.shmmax": "1"}, own) == ""
    assert sysctl.netns_problem({"net.ipv4.ip_forward": "1"}, {}) == ""
    assert "No such file" in sysctl.netns_problem({"net.core.somaxconn": "1"},
                                                  {"network": str(tmp_path / "gone")})


def test_sysctl_apply_names_the_key_on_failure(monkeypatch, tmp_path):
    written = tmp_path / "ip_forward"
    monkeypatch.setattr(sysctl, "proc_path", lambda key: str(written if "ip" in key
                                                             else tmp_path / "no/such"))
    written.write_text("0")
    sysctl.apply({"net.ipv4.ip_forward": "1"})
    assert written.read_text() == "1"
    with pytest.raises(OSError, match=r"net.core.somaxconn='9': writing .*No such file"):
        sysctl.apply({"net.core.somaxconn": "9"})


# -- LSM labels ------------------------------------------------------------------------------


def fake_host(tmp_path, apparmor: bool = False, selinux: bool = False,
              stacked: bool = True) -> tuple[str, str]:
    sys_root, proc = tmp_path / "sys", tmp_path / "proc"
    attr = proc / "self" / "attr"
    attr.mkdir(parents=True)
    (attr / "exec").write_text("")
    (attr / "current").write_text("unconfined\n")
    if apparmor:
        (sys_root / "kernel/security/apparmor").mkdir(parents=True)
        (sys_root / "module/apparmor/parameters").mkdir(parents=True)
        (sys_root / "module/apparmor/parameters/enabled").write_text("Y\n")
        if stacked:
            (attr / "apparmor").mkdir()
            (attr / "apparmor" / "exec").write_text("")
    if selinux:
        (sys_root / "fs/selinux").mkdir(parents=True)
        (sys_root / "fs/selinux/enforce").write_text("1")
        (attr / "current").write_text("system_u:system_r:unconfined_t:s0\0")
    return str(sys_root), str(proc)


def test_labels_refused_when_the_lsm_is_off(tmp_path):
    sys_root, proc = fake_host(tmp_path)
    for field, change in (("process.apparmorProfile", {"apparmor_profile": "p"}),
                          ("process.selinuxLabel", {"selinux_label": "l"}),
                          ("linux.mountLabel", {"mount_label": "m"})):
        reason = lsm.unavailable(Config(args=("sh",), **change), sys_root, proc)
        assert reason.startswith(f"{field}: ") and "is not enabled on this host" in reason
    assert lsm.unavailable(Config(args=("sh",)), sys_root, proc) == ""


def test_apparmor_disabled_by_its_module_parameter(tmp_path):
    sys_root, proc = fake_host(tmp_path, apparmor=True)
    assert lsm.apparmor_enabled(sys_root)
    (tmp_path / "sys/module/apparmor/parameters/enabled").write_text("N\n")
    assert not lsm.apparmor_enabled(sys_root)


def test_selinux_kernel_label_means_disabled(tmp_path):
    sys_root, proc = fake_host(tmp_path, selinux=True)
    assert lsm.selinux_enabled(sys_root, proc)
    (tmp_path / "proc/self/attr/current").write_text("kernel\0")
    assert not lsm.selinux_enabled(sys_root, proc)


@pytest.mark.parametrize("stacked", [True, False])
def test_apparmor_exec_profile_written(tmp_path, stacked):
    sys_root, proc = fake_host(tmp_path, apparmor=True, stacked=stacked)
    config = Config(args=("sh",), apparmor_profile="mctl-test")
    assert lsm.unavailable(config, sys_root, proc) == ""
    lsm.set_exec_labels(config, proc)
    # With LSM stacking the AppArmor file, else the shared one (libapparmor's order).
    target = "apparmor/exec" if stacked else "exec"
    assert (tmp_path / "proc/self/attr" / target).read_text() == "exec mctl-test"


def test_selinux_exec_label_written(tmp_path):
    sys_root, proc = fake_host(tmp_path, selinux=True)
    config = Config(args=("sh",), selinux_label="system_u:system_r:container_t:s0")
    assert lsm.unavailable(config, sys_root, proc) == ""
    lsm.set_exec_labels(config, proc)
    assert (tmp_path / "proc/self/attr/exec").read_text() == "system_u:system_r:container_t:s0"


def test_mount_label_goes_on_tmpfs_and_devpts_only(tmp_path, monkeypatch):
    fake = sc.RecordingSyscalls()
    monkeypatch.setattr(rootfs, "_make_devices", lambda sys, root: None)
    label = "system_u:object_r:container_file_t:s0"
    root = str(tmp_path)
    rootfs.prepare(fake, root, Config(args=("sh",), mounts=tuple(oci.default_mounts()),
                                      mount_label=label))
    data = {c[2][len(root):]: c[5] for c in fake.calls if c[0] == "mount" and c[3]}
    assert data["/dev"] == f'mode=755,size=65536k,context="{label}"'
    assert data["/dev/pts"].endswith(f',context="{label}"')
    assert data["/dev/shm"].endswith(f',context="{label}"')
    for unlabeled in ("/proc", "/dev/mqueue", "/sys"):
        assert "context=" not in data[unlabeled]


# -- running hooks ---------------------------------------------------------------------------


def sh(script: str, **kw: object) -> Hook:
    return Hook("/bin/sh", ("sh", "-c", script), **kw)  # type: ignore[arg-type]


def test_a_hook_gets_the_state_on_stdin_in_its_cwd(tmp_path):
    out = tmp_path / "out"
    script = f'cat > {out}; echo >> {out}; pwd >> {out}; echo "$X" >> {out}'
    hooks.run_one(sh(script, env=("X=y",)),
                  "hooks.poststart[0]", b'{"id": "c1"}', str(tmp_path))
    state, cwd, x = out.read_text().splitlines()
    assert json.loads(state) == {"id": "c1"}
    assert (cwd, x) == (str(tmp_path), "y")


def test_a_hook_runs_with_the_runtimes_env_when_none_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MCTL_HOOK_TEST", "inherited")
    out = tmp_path / "out"
    hooks.run_one(sh(f'echo "$MCTL_HOOK_TEST" > {out}'), "h", b"{}", str(tmp_path))
    assert out.read_text() == "inherited\n"
    hooks.run_one(sh(f'echo "${{MCTL_HOOK_TEST:-empty}}" > {out}', env=()), "h", b"{}",
                  str(tmp_path))
    assert out.read_text() == "empty\n"


def test_the_callers_cwd_is_kept(tmp_path):
    before = os.getcwd()
    hooks.run_one(sh("true"), "h", b"{}", str(tmp_path))
    assert os.getcwd() == before


def test_a_failing_hook_is_one_line_naming_it_with_its_stderr():
    with pytest.raises(hooks.HookFailed) as info:
        hooks.run_one(sh("echo out; echo first >&2; echo 'no such thing' >&2; exit 3"),
                      "hooks.createRuntime[1]", b"{}", "/")
    assert str(info.value) == ("hooks.createRuntime[1] (/bin/sh): exited 3: "
                               "first | no such thing")


def test_stdout_is_the_tail_when_stderr_is_empty():
    with pytest.raises(hooks.HookFailed, match=r"exited 1: only stdout$"):
        hooks.run_one(sh("echo only stdout; exit 1"), "h", b"{}", "/")


def test_a_killed_hook():
    with pytest.raises(hooks.HookFailed, match=r"^h \(/bin/sh\): killed by signal 9$"):
        hooks.run_one(sh("kill -9 $$"), "h", b"{}", "/")


def test_a_hook_that_cannot_run():
    with pytest.raises(hooks.HookFailed,
                       match=r"^hooks.poststop\[0\] \(/no/such/hook\): cannot run: "
                             r"No such file or directory$"):
        hooks.run_one(Hook("/no/such/hook"), "hooks.poststop[0]", b"{}", "/")


def test_a_timeout_kills_the_hooks_whole_group_at_once(tmp_path):
    pid_file = tmp_path / "child"
    # The hook's child holds stdout open: runc waits for it; this must not.
    started = time.monotonic()
    with pytest.raises(hooks.HookFailed, match=r"^h \(/bin/sh\): timed out after 1s$"):
        hooks.run_one(sh(f"sleep 30 & echo $! > {pid_file}; wait", timeout=1), "h", b"{}", "/")
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.02)  # killed; reaped by whoever adopted it
    assert not _alive(child)


def test_a_hook_that_leaves_a_child_behind_does_not_block(tmp_path):
    pid_file = tmp_path / "child"
    started = time.monotonic()
    hooks.run_one(sh(f"sleep 30 & echo $! > {pid_file}"), "h", b"{}", "/")
    assert time.monotonic() - started < 5
    os.kill(int(pid_file.read_text()), 9)


def test_a_hook_that_keeps_writing_still_times_out():
    started = time.monotonic()
    with pytest.raises(hooks.HookFailed, match="timed out after 1s"):
        hooks.run_one(sh("while :; do echo spam; done", timeout=1), "h", b"{}", "/")
    assert time.monotonic() - started < 5


def test_a_large_state_does_not_block_a_hook_that_ignores_stdin():
    hooks.run_one(sh("exit 0", timeout=5), "h", b"x" * (1 << 20), "/")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


# -- the lifecycle: stages, warnings, the sync channel -------------------------------------


def recorder(tmp_path, name: str, code: int = 0) -> Hook:
    """A hook that appends "<name> <state status> <pid>" to tmp_path/log."""
    log = tmp_path / "log"
    return sh(f'read -r s; echo "{name} $s" >> {log}; exit {code}')


def logged(tmp_path) -> list[tuple[str, dict]]:
    out = []
    for line in (tmp_path / "log").read_text().splitlines():
        name, _, state = line.partition(" ")
        out.append((name, json.loads(state)))
    return out


def lifecycle_for(tmp_path, **stages: tuple[Hook, ...]) -> hooks.Lifecycle:
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 0,
             "bundle": str(tmp_path), "rootfs": str(tmp_path / "rootfs"), "created": "now",
             "annotations": {"a": "b"}}
    return hooks.Lifecycle(Hooks(**stages), state)


def test_run_all_runs_every_hook_and_returns_the_failures(tmp_path):
    lc = lifecycle_for(tmp_path, poststop=(recorder(tmp_path, "a", 2), recorder(tmp_path, "b"),
                                           recorder(tmp_path, "c", 1)))
    failures = lc.run_all("poststop", hooks.STOPPED, 0)
    assert [n for n, _ in logged(tmp_path)] == ["a", "b", "c"]
    assert failures == ["hooks.poststop[0] (/bin/sh): exited 2",
                        "hooks.poststop[2] (/bin/sh): exited 1"]
    state = logged(tmp_path)[0][1]
    assert (state["status"], state["pid"], state["id"], state["annotations"]) == (
        "stopped", 0, "c1", {"a": "b"})


def test_run_stops_at_the_first_failure(tmp_path):
    lc = lifecycle_for(tmp_path, create_container=(recorder(tmp_path, "a", 4),
                                                   recorder(tmp_path, "b")))
    with pytest.raises(hooks.HookFailed, match=r"^hooks.createContainer\[0\]"):
        lc.run("createContainer", hooks.CREATING, 1, str(tmp_path))
    assert [n for n, _ in logged(tmp_path)] == ["a"]


def _fork_init(lc: hooks.Lifecycle, rootfs: str) -> tuple[int, int]:
    """A stand-in for the container's init: the sync exchange, createContainer, exit."""
    ours, theirs = lc.sync_pair()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(ours)
            lc.before_pivot(theirs, rootfs)
        except hooks.HookFailed as e:
            os.write(theirs, str(e).encode())
            code = 127
        finally:
            os._exit(code)
    os.close(theirs)
    return pid, ours


def test_sync_runs_prestart_then_create_runtime_then_create_container(tmp_path):
    (tmp_path / "rootfs").mkdir()
    lc = lifecycle_for(tmp_path, prestart=(recorder(tmp_path, "prestart"),),
                       create_runtime=(recorder(tmp_path, "createRuntime"),),
                       create_container=(recorder(tmp_path, "createContainer"),))
    assert lc.runtime_sync
    pid, fd = _fork_init(lc, str(tmp_path / "rootfs"))
    assert lc.serve(pid, fd) == b""
    os.close(fd)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    got = logged(tmp_path)
    assert [n for n, _ in got] == ["prestart", "createRuntime", "createContainer"]
    # Runtime hooks get the init's pid as the runtime sees it; the init's own is its pid there.
    assert [s["pid"] for _, s in got] == [pid, pid, pid]
    assert [s["status"] for _, s in got] == ["created", "creating", "creating"]


def test_sync_failure_is_the_hooks_error_and_ends_the_waiting_init(tmp_path):
    lc = lifecycle_for(tmp_path, create_runtime=(recorder(tmp_path, "cr", 5),),
                       create_container=(recorder(tmp_path, "createContainer"),))
    pid, fd = _fork_init(lc, str(tmp_path))
    error = lc.serve(pid, fd)
    os.close(fd)  # the init, waiting for the answer, reads end-of-file and exits
    assert error == b"hooks.createRuntime[0] (/bin/sh): exited 5"
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 127
    assert [n for n, _ in logged(tmp_path)] == ["cr"]


def test_sync_passes_on_the_inits_own_error(tmp_path):
    lc = lifecycle_for(tmp_path, create_runtime=(recorder(tmp_path, "cr"),),
                       create_container=(recorder(tmp_path, "cc", 6),))
    pid, fd = _fork_init(lc, str(tmp_path))
    assert lc.serve(pid, fd) == b"hooks.createContainer[0] (/bin/sh): exited 6"
    os.close(fd)
    os.waitpid(pid, 0)


def test_no_runtime_hooks_means_no_sync(tmp_path):
    lc = lifecycle_for(tmp_path, create_container=(recorder(tmp_path, "cc"),),
                       poststart=(recorder(tmp_path, "ps"),))
    assert not lc.runtime_sync
    lc.before_pivot(-1, str(tmp_path))  # no request written: -1 would fail
    assert [n for n, _ in logged(tmp_path)] == ["cc"]
