"""mctl-runtime without the kernel: its command line, its state machine, its errors,
and the agent-side helpers that drive any OCI runtime command (ociclient).

The state store is exercised with real processes (a sleeping child stands in
for a container's init) in a temporary --root, so status derivation is
checked against /proc as the runtime reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from mctl.agent.runtime.oci import cli as ocicli
from mctl.agent.runtime.oci import cli_state as ocistate
from mctl.agent.runtime.oci import client as ociclient
from mctl.agent.runtime.oci.cli_args import UsageError, parse, parse_signal
from mctl.common import fsflags

# -- the command line -------------------------------------------------------------------------


def test_global_options_come_before_the_command_as_containerd_passes_them():
    inv = parse(["--root", "/run/x", "--log", "/tmp/l.json", "--log-format", "json",
                 "create", "--bundle", "/b", "--pid-file", "/p", "c1"])
    assert (inv.root, inv.log, inv.log_format) == ("/run/x", "/tmp/l.json", "json")
    assert (inv.command, inv.bundle, inv.pid_file, inv.id) == ("create", "/b", "/p", "c1")


def test_equals_form_short_flags_and_defaults():
    inv = parse(["--root=/r", "run", "-b=/b", "-d", "c2"])
    assert (inv.root, inv.bundle, inv.detach, inv.id) == ("/r", "/b", True, "c2")
    inv = parse(["state", "c3"])
    assert (inv.root, inv.log, inv.log_format) == ("/run/mctl-runtime", "", "text")
    assert parse(["delete", "-f", "c4"]).force is True
    assert parse(["delete", "--force=false", "c4"]).force is False


def test_kill_takes_an_optional_signal_and_all():
    inv = parse(["kill", "--all", "c1", "KILL"])
    assert (inv.all, inv.args) == (True, ["c1", "KILL"])
    assert parse(["kill", "c1"]).args == ["c1"]
    # A negative number after the id is a signal, not an option.
    assert parse(["kill", "c1", "-9"]).args == ["c1", "-9"]


@pytest.mark.parametrize(("argv", "message"), [
    ([], "no command given"),
    (["frobnicate", "x"], "unknown command 'frobnicate'"),
    (["create", "--bogus", "x"], "create: unknown option --bogus"),
    (["--bogus", "state", "x"], "global options: unknown option --bogus"),
    (["start"], "start: takes an ID, got 0"),
    (["start", "a", "b"], "start: takes an ID, got 2"),
    (["create", "--bundle"], "create: --bundle needs a value"),
    (["--log-format", "xml", "state", "x"], "--log-format: 'xml' is not text or json"),
    (["list", "x"], "list: takes no arguments, got 1"),
    (["create", "--preserve-fds", "two", "x"], "--preserve-fds: 'two' is not a number"),
    (["delete", "--force=maybe", "x"], "delete: --force takes no value"),
])
def test_usage_errors_name_the_problem(argv, message):
    with pytest.raises(UsageError) as info:
        parse(argv)
    assert str(info.value) == message


def test_version_and_help_need_no_command():
    assert parse(["--version"]).command == "version"
    assert parse(["-h"]).command == "help"
    assert parse(["run", "--help"]).command == "help"


@pytest.mark.parametrize(("text", "number"), [
    ("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15), ("term", 15), ("HUP", 1)])
def test_signals_by_name_and_number(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["0", "999", "NOPE", "SIG_DFL", "", "1.5"])
def test_bad_signals_are_refused(text):
    with pytest.raises(ValueError):
        parse_signal(text)


# -- the state store and its state machine ------------------------------------------------------


@pytest.fixture
def sleeper():
    """A real process standing in for a container's init."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def _record(root: str, cid: str, pid: int, fifo: bool) -> ocistate.Container:
    c = ocistate.new(root, cid, "/bundle")
    c.doc.update(pid=pid, start_time=ocistate.proc_stat(pid)[1], cgroup="",
                 annotations={"a": "b"})
    c.save()
    if fifo:
        os.mkfifo(c.fifo, 0o622)
    return c


def test_created_running_stopped_follow_the_fifo_and_the_process(tmp_path, sleeper):
    root = str(tmp_path)
    c = _record(root, "c1", sleeper.pid, fifo=True)
    assert ocistate.load(root, "c1").status() == "created"
    os.unlink(c.fifo)  # what start does
    assert ocistate.load(root, "c1").status() == "running"
    sleeper.kill()
    sleeper.wait()
    state = ocistate.load(root, "c1").oci_state()
    assert (state["status"], state["pid"]) == ("stopped", 0)
    assert state["annotations"] == {"a": "b"}
    assert state["bundle"] == "/bundle"


def test_a_zombie_or_a_reused_pid_counts_as_stopped(tmp_path, sleeper):
    root = str(tmp_path)
    c = _record(root, "c1", sleeper.pid, fifo=False)
    sleeper.kill()
    # Exited but not reaped (WNOWAIT): a zombie keeps its /proc entry and start time.
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)
    assert ocistate.proc_stat(sleeper.pid)[0] == "Z"
    assert c.status() == "stopped"
    sleeper.wait()
    # Another process with this pid would have another start time.
    c.doc["pid"], c.doc["start_time"] = os.getpid(), 1
    assert c.status() == "stopped"


def test_creating_while_the_creator_lives(tmp_path):
    c = ocistate.new(str(tmp_path), "c1", "/b")
    assert c.status() == "creating"  # we are the creator
    c.doc["creator_pid"] = 2 ** 22 + 1  # above pid_max: no such process
    assert c.status() == "stopped"


def test_ids_are_one_safe_path_component(tmp_path):
    for bad in ("", ".", "..", "a/b", "a b", "ä"):
        with pytest.raises(ocistate.StateError):
            ocistate.new(str(tmp_path), bad, "/b")
    ocistate.new(str(tmp_path), "default_web-1.2+x", "/b")
    with pytest.raises(ocistate.StateError, match="already exists"):
        ocistate.new(str(tmp_path), "default_web-1.2+x", "/b")
    assert ocistate.list_ids(str(tmp_path)) == ["default_web-1.2+x"]


# -- main(): exit codes and one-line errors -------------------------------------------------------


def test_main_errors_are_one_line_with_status_1(tmp_path, capsys):
    log = tmp_path / "log.json"
    code = ocicli.main(["--root", str(tmp_path), "--log", str(log), "--log-format", "json",
                        "start", "nope"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "mctl-runtime: container nope does not exist\n"
    entry = json.loads(log.read_text().splitlines()[-1])
    assert (entry["level"], entry["msg"]) == ("error", "container nope does not exist")


def test_main_usage_errors_exit_2(capsys):
    assert ocicli.main(["create"]) == 2
    assert "create: takes an ID, got 0" in capsys.readouterr().err


def test_state_start_kill_delete_refuse_the_wrong_status(tmp_path, sleeper, capsys):
    root = str(tmp_path)
    _record(root, "c1", sleeper.pid, fifo=False)  # running
    assert ocicli.main(["--root", root, "start", "c1"]) == 1
    assert "it is running, not created" in capsys.readouterr().err
    assert ocicli.main(["--root", root, "delete", "c1"]) == 1
    assert "it is running" in capsys.readouterr().err
    assert ocicli.main(["--root", root, "state", "c1"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    assert ocicli.main(["--root", root, "kill", "c1", "KILL"]) == 0
    sleeper.wait()
    assert ocicli.main(["--root", root, "kill", "c1"]) == 1
    assert "it is stopped" in capsys.readouterr().err
    assert ocicli.main(["--root", root, "delete", "c1"]) == 0
    assert not os.path.exists(os.path.join(root, "c1"))
    # As runc: --force on a container that does not exist is not an error.
    assert ocicli.main(["--root", root, "delete", "--force", "c1"]) == 0
    assert ocicli.main(["--root", root, "delete", "c1"]) == 1


def test_create_refuses_a_bad_config_naming_the_field(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"process": {"args": ["sh"], "user": {"uid": -1}}, "root": {"path": "rootfs"}}))
    root = tmp_path / "root"
    assert ocicli.main(["--root", str(root), "create", "--bundle", str(bundle), "c1"]) == 1
    assert capsys.readouterr().err == \
        "mctl-runtime: config.json: process.user.uid: must not be negative\n"
    assert ocistate.list_ids(str(root)) == []


def test_create_refuses_a_terminal(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"process": {"args": ["sh"], "terminal": True}, "root": {"path": "rootfs"}}))
    assert ocicli.main(["--root", str(tmp_path / "r"), "create", "-b", str(bundle), "c1"]) == 1
    assert "process.terminal" in capsys.readouterr().err


def test_list_and_version(tmp_path, sleeper, capsys):
    _record(str(tmp_path), "c1", sleeper.pid, fifo=True)
    assert ocicli.main(["--root", str(tmp_path), "list", "--format", "json"]) == 0
    [state] = json.loads(capsys.readouterr().out)
    assert (state["id"], state["status"]) == ("c1", "created")
    assert ocicli.main(["--root", str(tmp_path), "list", "-q"]) == 0
    assert capsys.readouterr().out == "c1\n"
    assert ocicli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("mctl-runtime version ")


def test_the_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mctl.agent.runtime.oci.cli", "--root",
                           str(tmp_path), "kill", "nope", "BOGUS"], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert proc.stderr == "mctl-runtime: unknown signal 'BOGUS'\n"


# -- ociclient: how the agent calls any OCI runtime ----------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"


def test_crun_runs_in_a_private_mount_namespace_only_on_hybrid_machines(tmp_path):
    hybrid, unified = tmp_path / "hybrid", tmp_path / "unified"
    hybrid.write_text(HYBRID)
    unified.write_text(UNIFIED)
    assert ociclient.hybrid_cgroup2_mount(str(hybrid)) == "/sys/fs/cgroup/unified"
    assert ociclient.hybrid_cgroup2_mount(str(unified)) == ""
    wrapped = ociclient.base_argv("/usr/bin/crun", "/r", str(hybrid))
    assert wrapped[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "umount -l /sys/fs/cgroup/unified" in wrapped[6]
    assert wrapped[-3:] == ["/usr/bin/crun", "--root", "/r"]
    assert ociclient.base_argv_binary(wrapped) == "/usr/bin/crun"
    assert ociclient.base_argv("/usr/bin/crun", "/r", str(unified)) == \
        ["/usr/bin/crun", "--root", "/r"]
    assert ociclient.base_argv("/usr/sbin/runc", "/r", str(hybrid)) == \
        ["/usr/sbin/runc", "--root", "/r"]


def test_the_last_error_comes_from_the_json_log(tmp_path):
    log = tmp_path / "runtime.log"
    log.write_text('{"level":"info","msg":"hello"}\nnot json\n'
                   '{"level":"error","msg":"first"}\n{"level":"error","msg":"exec: boom"}\n'
                   '{"level":"warning","msg":"late"}\n')
    assert ociclient.last_error(str(log)) == "exec: boom"
    assert ociclient.last_error(str(tmp_path / "missing")) == ""


def test_call_reports_the_runtimes_error_in_one_line(tmp_path):
    fake = tmp_path / "fake-runtime"
    fake.write_text("#!/bin/sh\n"
                    "while [ \"$1\" != --log ]; do shift; done\n"
                    "echo '{\"level\":\"error\",\"msg\":\"container x does not exist\"}'"
                    " >> \"$2\"\n"
                    "exit 1\n")
    fake.chmod(0o755)
    error = ociclient.call([str(fake), "--root", "/r"], str(tmp_path / "log"), "start", "x")
    assert error == "fake-runtime start: container x does not exist"
    assert ociclient.call(["/bin/true", "--root", "/r"], str(tmp_path / "log"), "start",
                          "x") == ""


def test_resolve_names_what_is_wrong(tmp_path):
    with pytest.raises(ociclient.RuntimeNotFound, match="not one of native, runc"):
        ociclient.resolve("docker")
    with pytest.raises(ociclient.RuntimeNotFound, match="not an executable file"):
        ociclient.resolve(str(tmp_path / "nothing"))
    exe = tmp_path / "rt"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert ociclient.resolve(str(exe)) == str(exe)


def test_remove_empty_cgroups_climbs_until_busy(tmp_path):
    hier = [tmp_path / "cpu", tmp_path / "devices"]
    (hier[0] / "mctl" / "n1" / "c1").mkdir(parents=True)
    (hier[1] / "mctl" / "n1" / "c1").mkdir(parents=True)
    (hier[1] / "mctl" / "n2").mkdir(parents=True)  # another node's: keeps mctl
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("".join(f"3{i} 31 0:2{i} / {h} rw - cgroup cgroup rw\n"
                                 for i, h in enumerate(hier)))
    ociclient.remove_empty_cgroups("mctl/n1/c1", str(mountinfo))
    assert not (hier[0] / "mctl").exists()
    assert not (hier[1] / "mctl" / "n1").exists()
    assert (hier[1] / "mctl" / "n2").is_dir()


def test_signal_names_the_agent_sends_are_understood():
    assert parse_signal(signal.Signals(signal.SIGTERM).name) == signal.SIGTERM


def test_a_claim_unsaved_writes_no_record_and_a_new_root_spreads_its_containers(tmp_path):
    root = str(tmp_path / "state")
    c = ocistate.new(root, "c1", "/b", save=False)
    assert os.listdir(c.dir) == []      # the caller saves once it has added to the record
    c.save()
    assert ocistate.load(root, "c1").doc["bundle"] == "/b"
    # Where the filesystem has inode flags, the new root has ext4's top-directory one.
    if fsflags.spread_subdirs(str(tmp_path)):
        assert fsflags.get_flags(root) & fsflags.FS_TOPDIR_FL


def test_a_create_that_fails_before_its_record_is_written_leaves_no_claim(tmp_path, monkeypatch,
                                                                          capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"process": {"args": ["sh"]}, "root": {"path": "rootfs"}}))
    root = tmp_path / "root"

    def full_disk(self: ocistate.Container) -> None:
        with open(os.path.join(self.dir, "state.json.tmp"), "w") as f:
            f.write("{")        # half written, as a full disk would leave it
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ocistate.Container, "save", full_disk)
    assert ocicli.main(["--root", str(root), "create", "--bundle", str(bundle), "c1"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(root) == []       # the id is free again
