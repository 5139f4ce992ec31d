"""mctl-runtime exec and terminals without a container: the join order over the recording
syscall seam, the SCM_RIGHTS message, runc's console-socket rules, exec's command line
and how its process object is made."""

from __future__ import annotations

import json
import os
import re
import socket
import struct

import pytest

from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime import terminal
from mctl.agent.runtime.oci import cli as ocicli
from mctl.agent.runtime.oci import cli_exec, console
from mctl.agent.runtime.oci.cli_args import MAX_REPEATED, UsageError, parse
from mctl.agent.runtime.oci.config import ConfigError, parse_config, to_json

# -- the order namespaces are joined in ----------------------------------------------------


def test_join_order_is_runcs_user_first():
    every = ["cgroup", "mnt", "pid", "net", "uts", "ipc", "user"]
    assert cli_exec.join_order(every, set()) == \
        ["user", "ipc", "uts", "net", "pid", "mnt", "cgroup"]
    # Without a user namespace of its own: the same order over the rest.
    assert cli_exec.join_order(["mnt", "net", "pid"], set()) == ["net", "pid", "mnt"]


def test_a_namespace_the_containers_user_namespace_does_not_own_comes_before_it():
    # The agent's network namespace joined by path: owned by the host's user
    # namespace, so only the host's root may join it, i.e. before `user`.
    every = ["user", "ipc", "uts", "net", "pid", "mnt", "cgroup"]
    assert cli_exec.join_order(every, {"net"}) == \
        ["net", "user", "ipc", "uts", "pid", "mnt", "cgroup"]
    # Ownership matters only with a user namespace to join.
    assert cli_exec.join_order(["net", "mnt"], {"net", "mnt"}) == ["net", "mnt"]


def test_join_calls_setns_in_the_given_order_with_each_namespaces_flag_and_closes():
    rec = sc.RecordingSyscalls()
    order = ["user", "ipc", "uts", "net", "pid", "mnt", "cgroup"]
    fds = [(name, os.open(os.devnull, os.O_RDONLY)) for name in order]
    cli_exec.join(rec, fds)
    assert rec.calls == [
        ("setns", fds[0][1], sc.CLONE_NEWUSER), ("setns", fds[1][1], sc.CLONE_NEWIPC),
        ("setns", fds[2][1], sc.CLONE_NEWUTS), ("setns", fds[3][1], sc.CLONE_NEWNET),
        ("setns", fds[4][1], sc.CLONE_NEWPID), ("setns", fds[5][1], sc.CLONE_NEWNS),
        ("setns", fds[6][1], sc.CLONE_NEWCGROUP)]
    for _, fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_failed_setns_names_the_namespace():
    class Refusing(sc.RecordingSyscalls):
        def setns(self, fd: int, nstype: int) -> None:
            raise OSError(1, "Operation not permitted")

    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="^setns net: Operation not permitted$"):
            cli_exec.join(Refusing(), [("net", fd)])
    finally:
        os.close(fd)


def test_only_namespaces_that_differ_from_ours_are_opened():
    # Our own process as the "container": nothing to join (setns into one's
    # own user namespace would be EINVAL).
    assert cli_exec.open_namespaces(os.getpid()) == []


# -- the console socket: runc's message ---------------------------------------------------


def test_the_rights_message_is_the_name_and_one_scm_rights_descriptor():
    data, ancillary = terminal.rights_message("/dev/ptmx", 7)
    assert data == b"/dev/ptmx"
    assert ancillary == [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", 7))]


def test_send_fd_passes_a_working_descriptor_that_receive_fd_takes():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        terminal.send_fd(theirs.fileno(), terminal.MASTER_NAME, w)
        # send_fd leaves the socket open (its caller closes it).
        assert theirs.fileno() >= 0
        got = console.receive_fd(ours.fileno())
        assert got not in (r, w)
        os.write(got, b"through the socket")
        os.close(got)
        assert os.read(r, 100) == b"through the socket"
    finally:
        for fd in (r, w):
            os.close(fd)
        ours.close()
        theirs.close()


def test_receive_fd_without_a_descriptor_says_the_process_sent_none():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    try:
        with pytest.raises(OSError, match="sent no terminal"):
            console.receive_fd(ours.fileno())
    finally:
        ours.close()


def test_a_pty_window_size_is_set_and_read_back():
    master, slave, path = terminal.open_pty()
    try:
        assert path.startswith("/dev/pts/")
        terminal.set_size(slave, 33, 111)
        assert terminal.get_size(master) == (33, 111)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("tty,detach,sock,problem", [
    (True, True, "/s", ""),                      # create / run -d / exec -d with a socket
    (True, False, "", ""),                       # run / exec in the foreground: proxied
    (False, False, "", ""),
    (False, True, "", ""),
    (True, True, "", "process.terminal: needs --console-socket"),
    (False, True, "/s", "--console-socket: only for a process with a terminal"),
    (True, False, "/s", "--console-socket: only when the runtime detaches"),
])
def test_console_socket_rules_are_runcs(tty, detach, sock, problem):
    got = console.check(tty, detach, sock)
    assert got.startswith(problem) and bool(got) == bool(problem)


def test_connecting_to_a_missing_console_socket_names_it(tmp_path):
    with pytest.raises(OSError, match=r"^--console-socket .*/nope: No such file"):
        console.connect(str(tmp_path / "nope"))


# -- exec's command line ------------------------------------------------------------------


def test_exec_options_end_at_the_id_and_repeat():
    inv = parse(["--root", "/r", "exec", "-e", "A=1", "--env=B=2", "--cap", "NET_ADMIN",
                 "-t", "-u", "1000:100", "-g", "5", "--cwd", "/tmp", "c1", "ls", "-l", "--x"])
    assert (inv.command, inv.id, inv.args[1:]) == ("exec", "c1", ["ls", "-l", "--x"])
    assert (inv.env, inv.cap, inv.tty, inv.user, inv.additional_gids, inv.cwd) == \
        (["A=1", "B=2"], ["NET_ADMIN"], True, "1000:100", ["5"], "/tmp")
    inv = parse(["exec", "--detach", "--process", "/p.json", "--console-socket", "/s",
                 "--pid-file", "/pid", "c1"])
    assert (inv.detach, inv.process, inv.console_socket, inv.pid_file, inv.tty) == \
        (True, "/p.json", "/s", "/pid", None)
    assert parse(["exec", "c1", "--", "sh", "-c", "x"]).args == ["c1", "sh", "-c", "x"]
    assert parse(["exec", "--", "c1", "sh"]).args == ["c1", "sh"]


def test_exec_usage_errors():
    with pytest.raises(UsageError, match="exec: takes 1 to"):
        parse(["exec"])
    with pytest.raises(UsageError, match="exec: unknown option --bogus"):
        parse(["exec", "--bogus", "c1", "sh"])
    with pytest.raises(UsageError, match=f"more than {MAX_REPEATED}"):
        parse(["exec", *(["-e", "A=1"] * (MAX_REPEATED + 1)), "c1", "sh"])


# -- the process exec runs ---------------------------------------------------------------


BASE = {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "60"],
        "env": ["PATH=/bin"], "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"]}}


def test_flags_override_the_containers_process_as_runc_does():
    inv = parse(["exec", "-e", "A=1", "-u", "1000:100", "-g", "7", "--cap", "net_raw",
                 "--cap", "CAP_KILL", "--no-new-privs", "--cwd", "/tmp", "-t", "c1", "id"])
    got = cli_exec.process_from_flags(inv, BASE)
    assert got["args"] == ["id"]
    assert got["env"] == ["PATH=/bin", "A=1"]
    assert got["user"] == {"uid": 1000, "gid": 100, "additionalGids": [7]}
    assert got["cwd"] == "/tmp" and got["terminal"] is True and got["noNewPrivileges"] is True
    for key in ("bounding", "effective", "permitted", "ambient"):
        assert got["capabilities"][key].count("CAP_NET_RAW") == 1
        assert got["capabilities"][key].count("CAP_KILL") == 1
    assert got["capabilities"]["ambient"] == ["CAP_NET_RAW", "CAP_KILL"]
    # The container's own record is not changed.
    assert BASE["env"] == ["PATH=/bin"] and "ambient" not in BASE["capabilities"]
    # Without --tty the container's setting stays (runc).
    assert cli_exec.process_from_flags(parse(["exec", "c1", "id"]),
                                       {**BASE, "terminal": True})["terminal"] is True


@pytest.mark.parametrize("argv,message", [
    (["exec", "c1"], "exec: no command given"),
    (["exec", "-u", "root", "c1", "id"], "--user: 'root' is not UID[:GID]"),
    (["exec", "-u", "1:x", "c1", "id"], "--user: '1:x' is not UID[:GID]"),
    (["exec", "-g", "staff", "c1", "id"], "--additional-gids: 'staff' is not a number"),
])
def test_bad_exec_flags_are_one_line_naming_the_flag(argv, message):
    with pytest.raises(cli_exec.ExecError, match="^" + re.escape(message)):
        cli_exec.process_from_flags(parse(argv), BASE)


def _bundle(tmp_path) -> str:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "process": BASE, "root": {"path": "rootfs"}}))
    return str(bundle)


def test_a_process_file_replaces_the_process(tmp_path):
    proc = tmp_path / "p.json"
    proc.write_text(json.dumps({"args": ["top"], "cwd": "/", "terminal": True,
                                "consoleSize": {"height": 24, "width": 80}}))
    config = cli_exec.exec_config(parse(["exec", "-p", str(proc), "c1"]), _bundle(tmp_path),
                                  None)
    assert (config.args, config.terminal, config.console_size) == (("top",), True, (24, 80))


@pytest.mark.parametrize("content,message", [
    ('{"args": []}', "process.args: must not be empty"),
    ('{"args": ["x"], "consoleSize": {"height": 70000, "width": 1}}',
     "process.consoleSize.height: must be between 0 and 65535"),
    ("[1]", "must be a JSON object"),
    ("{", "not JSON"),
    (" " * (cli_exec.MAX_PROCESS_FILE + 1), "larger than"),
])
def test_a_bad_process_file_is_one_line_naming_it(tmp_path, content, message):
    proc = tmp_path / "p.json"
    proc.write_text(content)
    with pytest.raises(cli_exec.ExecError, match=f"^--process {proc}: .*{message}"):
        cli_exec.exec_config(parse(["exec", "-p", str(proc), "c1"]), _bundle(tmp_path), None)


def test_a_process_file_and_a_command_are_exclusive(tmp_path):
    proc = tmp_path / "p.json"
    proc.write_text('{"args": ["x"]}')
    with pytest.raises(cli_exec.ExecError, match="either --process FILE or a command"):
        cli_exec.exec_config(parse(["exec", "-p", str(proc), "c1", "ls"]), _bundle(tmp_path),
                             None)


def test_exec_in_a_missing_container_is_one_line(tmp_path, capsys):
    assert ocicli.main(["--root", str(tmp_path), "exec", "nope", "true"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mctl-runtime: ") and err.count("\n") == 1 and "nope" in err


# -- process.consoleSize in config.json ---------------------------------------------------


def test_console_size_is_parsed_and_written_back():
    doc = {"process": {"args": ["sh"], "terminal": True,
                       "consoleSize": {"height": 40, "width": 100}},
           "root": {"path": "rootfs"}}
    config = parse_config(doc)
    assert config.console_size == (40, 100)
    assert to_json(config)["process"]["consoleSize"] == {"height": 40, "width": 100}
    assert parse_config({**doc, "process": {"args": ["sh"]}}).console_size is None
    with pytest.raises(ConfigError, match="process.consoleSize.width"):
        parse_config({**doc, "process": {"args": ["sh"], "consoleSize": {"height": 1}}})


# -- the init's cgroups, every hierarchy --------------------------------------------------


MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
34 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
36 25 0:32 /lxc/box /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
37 25 0:33 / /mnt/elsewhere rw - ext4 /dev/sda1 rw
"""
CGROUP = """\
9:name=systemd:/
6:freezer:/mctl/c1
4:cpu,cpuacct:/mctl/c1
3:memory:/lxc/box/mctl/c1
2:net_cls:/mctl/c1
0::/mctl/c1
"""


def test_exec_joins_the_inits_cgroup_in_every_mounted_hierarchy(tmp_path):
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(CGROUP)
    got = cli_exec.init_cgroup_files(42, str(tmp_path / "mountinfo"), str(tmp_path))
    # v1 by `tasks` (the writing thread), v2 by cgroup.procs; a mount of a
    # subtree (memory at /lxc/box) is walked from its root; a hierarchy not
    # mounted here (net_cls) is left out.
    assert got == ["/sys/fs/cgroup/systemd/tasks", "/sys/fs/cgroup/freezer/mctl/c1/tasks",
                   "/sys/fs/cgroup/cpu,cpuacct/mctl/c1/tasks",
                   "/sys/fs/cgroup/memory/mctl/c1/tasks",
                   "/sys/fs/cgroup/unified/mctl/c1/cgroup.procs"]


def test_attach_makes_the_pty_stdio_and_controlling_terminal_and_sends_its_master():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:    # the container's process, minus the container
        code = 1
        try:
            ours.close()
            terminal.attach(sc.RecordingSyscalls(), theirs.detach(), (24, 80),
                            bind_console=False)
            rows, cols = terminal.get_size(0)
            # The controlling terminal (tty_nr of /proc/self/stat) is the pty.
            with open("/proc/self/stat", "rb") as f:
                tty_nr = int(f.read().rsplit(b")", 1)[1].split()[4])
            same = tty_nr == os.fstat(0).st_rdev == os.fstat(1).st_rdev
            os.write(1, f"{os.ttyname(0)} {rows} {cols} {same} {os.getsid(0) == os.getpid()}\n"
                     .encode())
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    try:
        master = console.receive_fd(ours.fileno())
        out = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:     # EIO once the child and its descriptors are gone
                break
            if not data:
                break
            out += data
        os.close(master)
    finally:
        ours.close()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    name, rows, cols, same, leader = out.decode().split()
    assert name.startswith("/dev/pts/") and (rows, cols) == ("24", "80")
    assert (same, leader) == ("True", "True")
