"""exec and terminals on real containers: mctl-runtime held to what runc and crun do.

Needs root. Bundles, runtimes and the clean-up checks are
test_oci_runtimes_kernel's (the agent's own bundles; crun in its private
mount namespace; no mount, cgroup or process left). Each test runs under
mctl-runtime, runc 1.1.5 and crun 1.8.1 and asserts the same observable
result: an exec'd process is in every namespace and the cgroup of the
container's init with the config's capabilities, its exit status is the
runtime's, `--detach --pid-file` names it; a terminal's master arrives over
`--console-socket` (SCM_RIGHTS), and the process sees a pty of the
container's own devpts with process.consoleSize.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time

import pytest
import test_oci_runtimes_kernel as oci_kernel
from test_oci_runtimes_kernel import WAIT, Box, _edit_config

# That module's fixtures (the runtimes, the agent's bundles), used here by name.
env, rt, make = oci_kernel.env, oci_kernel.rt, oci_kernel.make

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

NAMESPACES = ("user", "ipc", "uts", "net", "pid", "mnt", "cgroup")


def _running(rt, box: Box) -> int:
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    box.wait_output("started\n")
    return rt.state(box.id)["pid"]


def _stop(rt, box: Box) -> None:
    rt("kill", box.id, "KILL")
    rt.wait_status(box.id, "stopped")
    rt("delete", box.id)


def test_exec_is_in_the_inits_namespaces_and_cgroup_with_the_configs_capabilities(rt, make):
    box = make("echo started; exec sleep 60")
    init = _running(rt, box)
    script = ("for n in " + " ".join(NAMESPACES) + "; do readlink /proc/self/ns/$n; done; "
              "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; "
              "echo ---; cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup")
    lines = rt("exec", box.id, "sh", "-c", script).stdout.split("\n---\n")
    head = lines[0].splitlines()
    assert head[:len(NAMESPACES)] == [os.readlink(f"/proc/{init}/ns/{n}") for n in NAMESPACES]
    with open(f"/proc/{init}/status") as f:
        init_caps = [line.rstrip("\n") for line in f if line[:6] in
                     ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")]
    assert head[len(NAMESPACES):] == init_caps
    # The same cgroup as the container's pid 1, as the container sees it.
    assert lines[1] == lines[2].rstrip("\n")
    assert rt("exec", box.id, "sh", "-c", "exit 7", check=False).returncode == 7
    _stop(rt, box)


def test_exec_detached_returns_at_once_and_writes_the_pid_file(rt, make):
    box = make("echo started; exec sleep 60")
    init = _running(rt, box)
    pid_file = os.path.join(box.bundle, "exec.pid")
    started = time.monotonic()
    rt("exec", "--detach", "--pid-file", pid_file, box.id, "sleep", "30")
    assert time.monotonic() - started < 10
    with open(pid_file) as f:
        pid = int(f.read())
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    # crun 1.8.1 returns before its process has exec'd: wait for the exec.
    deadline = time.monotonic() + WAIT
    while True:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        if cmdline == b"sleep\x0030\x00" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert cmdline == b"sleep\x0030\x00"
    pids = json.loads(rt("ps", "--format", "json", box.id).stdout) if rt.name != "crun" \
        else [pid]
    assert pid in pids
    rt("kill", "--all", box.id, "KILL")
    rt.wait_status(box.id, "stopped")
    rt("delete", box.id)


class ConsoleSocket:
    """What conmon does: listen, take the master from the runtime, read the terminal."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.master = -1

    def take_master(self) -> tuple[bytes, int]:
        self.sock.settimeout(WAIT)
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(WAIT)
            name, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        assert len(fds) == 1
        self.master = fds[0]
        return name, os.fstat(self.master).st_rdev

    def read_until_closed(self) -> bytes:
        out = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:         # EIO: the process and its terminal are gone
                break
            if not data:
                break
            out += data
        return out

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
        self.sock.close()
        os.unlink(self.path)


def test_a_terminal_through_the_console_socket_for_create(rt, make, env):
    # The sleeps keep the slave open until the output is read: a master can
    # return EIO before the last output once every slave is closed.
    box = make("tty; stty size; ls /dev/console >/dev/null && echo console; sleep 0.5")

    def edit(doc: dict) -> None:
        doc["process"]["terminal"] = True
        doc["process"]["consoleSize"] = {"height": 40, "width": 100}
    _edit_config(box, edit)
    console = ConsoleSocket(os.path.join(env.tmp, f"{rt.name}.sock"))
    try:
        rt("create", "--bundle", box.bundle, "--console-socket", console.path, box.id,
           out=box.out)
        name, rdev = console.take_master()
        # The message's data is runc's "/dev/ptmx" (crun 1.8.1 sends " "; receivers ignore it).
        assert name == (b" " if rt.name == "crun" else b"/dev/ptmx")
        assert os.major(rdev) == 5 and os.minor(rdev) == 2     # a pty master (ptmx)
        rt("start", box.id)
        # A pty of the container's own devpts, the config's size, the console bound.
        assert console.read_until_closed() == b"/dev/pts/0\r\n40 100\r\nconsole\r\n"
    finally:
        console.close()
    rt.wait_status(box.id, "stopped")
    rt("delete", box.id)
    # Nothing went to the runtime's own stdio.
    assert box.output() == ""


def test_a_terminal_through_the_console_socket_for_exec(rt, make, env, tmp_path):
    box = make("echo started; exec sleep 60")
    _running(rt, box)
    process = tmp_path / "process.json"
    process.write_text(json.dumps({
        "terminal": True, "consoleSize": {"height": 30, "width": 90},
        "user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "tty; stty size; sleep 0.5"],
        "env": ["PATH=/usr/bin:/bin"], "cwd": "/"}))
    console = ConsoleSocket(os.path.join(env.tmp, f"{rt.name}-exec.sock"))
    try:
        rt("exec", "--process", str(process), "--detach", "--console-socket", console.path,
           box.id)
        console.take_master()
        assert console.read_until_closed() == b"/dev/pts/0\r\n30 90\r\n"
    finally:
        console.close()
    _stop(rt, box)


def test_a_terminal_without_a_console_socket_is_refused_when_detaching(rt, make):
    box = make("true")
    _edit_config(box, lambda doc: doc["process"].update(terminal=True))
    result = rt("create", "--bundle", box.bundle, box.id, check=False)
    assert result.returncode != 0
    if rt.name == "mctl-runtime":
        assert "process.terminal: needs --console-socket" in result.stderr
    assert rt("state", box.id, check=False).returncode != 0
