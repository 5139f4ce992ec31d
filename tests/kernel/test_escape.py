"""Escape attempts from inside a container: each must fail, and must really have been tried.

Needs root. Containers are built and started as the agent does (native
runtime, Docker's default capabilities, masked and read-only paths, a
nodev /dev, no_new_privs), once as root of the host's user namespace and
once with securityContext.userNamespace (ids mapped to an unprivileged
range); every attack runs in both. Each test prints markers from inside so
it can tell "the tool ran and the kernel said no" from "the tool is
missing", and checks the host afterwards where the attack would have left
a mark. Reaching the agent's port is tried against a real node network
(agent/network.py and its guard, agent/firewall.py) in a fresh namespace;
tests/e2e/test_escape_agent.py tries it against a running agent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from boxes import Box, Boxes, status_field

from mctl.agent.network import NodeNetwork
from mctl.agent.runtime import capabilities, userns
from mctl.agent.runtime.choose import make_runtime
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.client import RuntimeNotFound
from mctl.common import netns

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

MODES = ["root", "userns"]


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("escape")
    try:
        yield b
    finally:
        assert b.close() == {}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "userns" and userns.unavailable():
        pytest.skip(userns.unavailable())
    return request.param


@pytest.fixture
def attack(boxes: Boxes, mode: str) -> Iterator:
    """attack(script, **options) -> (box, output lines): run to the end in `mode`."""
    made: list[Box] = []

    def run(script: str, **options: object) -> tuple[Box, list[str]]:
        # One stream, so the lines come back in the order they were written
        # (the shell's own errors about redirections included).
        box = boxes.run(f"exec 2>&1; {script}", userns=mode == "userns", **options)
        made.append(box)
        box.wait_exit(20)
        return box, box.output().splitlines()

    yield run
    for box in made:
        boxes.teardown(box)


def marker(lines: list[str], name: str) -> str:
    """The value printed as `name=value` from inside."""
    for line in lines:
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"no {name}= line in {lines}")


def root_device() -> tuple[int, int, str]:
    st = os.stat("/")
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    name = ""
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    name = line.strip().split("=", 1)[1]
    except OSError:
        pass
    return major, minor, name


# -- the attacks ---------------------------------------------------------------------------


def test_escape_seeing_host_processes(attack):
    host_pid = os.getpid()
    box, out = attack(f"ps -o pid,comm; echo procs=$(ls /proc | grep -c '^[0-9]'); "
                      f"kill -0 {host_pid} 2>&1; cat /proc/{host_pid}/cmdline 2>&1; "
                      f"echo cmdline=$?")
    rows = [line.split() for line in out[1:] if line.split()[0].isdigit()]
    # ps ran (it lists itself) and saw only the container: sh (pid 1) and ps.
    assert sorted(comm for _, comm in rows) == ["ps", "sh"], out
    assert max(int(pid) for pid, _ in rows) < 10
    assert int(marker(out, "procs")) <= 4       # sh, its subshell, ls, grep
    assert any("No such process" in line for line in out), out
    assert marker(out, "cmdline") == "1"


def test_escape_mounting_the_host_disk(attack, mode):
    major, minor, name = root_device()
    if major == 0:
        pytest.skip("this machine's / is not on a block device")
    script = (f"echo dev=$(ls /dev/{name or 'x'} 2>/dev/null | wc -l); "
              f"mknod /tmp/disk b {major} {minor} 2>&1; mkdir /tmp/m; "
              "mount /tmp/disk /tmp/m 2>&1; echo disk=$?; "
              "mount -t proc proc /tmp/m 2>&1; echo proc=$?; "
              "mount -t sysfs sysfs /tmp/m 2>&1; echo sysfs=$?; "
              "mount -o bind / /tmp/m 2>&1; echo bind=$?; "
              "mount -t cgroup -o memory cgroup /tmp/m 2>&1; echo cgroup=$?; "
              "mount -o remount,rw /proc/sys 2>&1; echo remount=$?; "
              "echo mnt=$(ls -A /tmp/m | wc -l); id -u")
    box, out = attack(script)
    assert marker(out, "dev") == "0"          # the host's disk is not in /dev
    for what in ("disk", "proc", "sysfs", "bind", "cgroup", "remount"):
        assert marker(out, what) != "0", (what, out)
    assert marker(out, "mnt") == "0"
    assert out[-1] == "0"                     # it was root trying
    # busybox mount reached mount(2), which refused: no CAP_SYS_ADMIN.
    assert sum("ermission denied" in line or "not permitted" in line for line in out) >= 6, out


def test_escape_creating_a_device_node_for_the_host_disk(attack, mode):
    major, minor, _ = root_device()
    if major == 0:
        pytest.skip("this machine's / is not on a block device")
    script = ""
    for where in ("/tmp", "/dev", "/dev/shm"):
        node = f"{where}/disk"
        script += (f"mknod {node} b {major} {minor} 2>&1 && echo made{where}=yes "
                   f"|| echo made{where}=no; "
                   f"dd if={node} of=/dev/null bs=512 count=1 2>&1; echo read{where}=$?; ")
    # Also a harmless device (null): what stops the read is the mount, not the disk.
    script += ("mknod /tmp/null c 1 3 2>&1 && { echo x > /tmp/null 2>&1; echo null=$?; } "
               "|| echo null=no-mknod; echo kind=$(ls -l /tmp/disk 2>/dev/null | cut -c1)")
    box, out = attack(script)
    for where in ("/tmp", "/dev", "/dev/shm"):
        assert marker(out, f"read{where}") != "0", (where, out)
        # root has CAP_MKNOD, so mknod works, but not in a user namespace.
        assert marker(out, f"made{where}") == ("yes" if mode == "root" else "no"), out
    if mode == "root":
        assert marker(out, "kind") == "b"     # a block device node for the disk ...
        assert marker(out, "null") != "0"     # ... and a null, neither of which opens
        assert any("Permission denied" in line for line in out)
    else:
        assert marker(out, "null") == "no-mknod"
        assert any("Operation not permitted" in line for line in out)


@pytest.mark.parametrize("name", ["runc", "crun"])
def test_escape_creating_a_device_node_for_the_host_disk_under_runc_and_crun(boxes, name):
    # runc and crun make /dev themselves and keep other devices closed with
    # the device cgroup (config.json says deny-all, as Docker's does).
    major, minor, _ = root_device()
    if major == 0:
        pytest.skip("this machine's / is not on a block device")
    try:
        runtime = make_runtime(name, os.path.join(boxes.tmp, f"oci-{name}"))
    except RuntimeNotFound as e:
        pytest.skip(str(e))
    box = boxes.make(f"exec 2>&1; mknod /tmp/disk b {major} {minor}; echo made=$?; "
                     "dd if=/tmp/disk of=/dev/null bs=512 count=1; echo read=$?; "
                     "head -c 4 /dev/zero | wc -c")
    try:
        runtime.start(box.id, box.bundle)
        box.wait_exit()
        out = box.output().splitlines()
    finally:
        runtime.delete(box.id, box.bundle, box.cgroup)
        runtime.close()
        boxes.teardown(box)
    assert marker(out, "made") == "0", out       # CAP_MKNOD: the node is made ...
    assert marker(out, "read") != "0", out       # ... and cannot be opened
    assert any("Operation not permitted" in line for line in out), out
    assert out[-1] == "4"                        # the default devices still work


def test_escape_writing_proc_sys(attack):
    with open("/proc/sys/kernel/core_pattern") as f:
        core_pattern = f.read()
    hostname = os.uname().nodename
    box, out = attack("echo evil > /proc/sys/kernel/hostname 2>&1; echo hostname=$?; "
                      "echo '|/tmp/evil' > /proc/sys/kernel/core_pattern 2>&1; echo core=$?; "
                      "sysctl -w kernel.domainname=evil 2>&1; echo sysctl=$?; "
                      "echo b > /proc/sysrq-trigger; echo sysrq=$?; "
                      "cat /proc/sys/kernel/ostype")
    for what in ("hostname", "core", "sysctl", "sysrq"):   # (sysrq: absent or read-only)
        assert marker(out, what) != "0", (what, out)
    assert sum("Read-only file system" in line for line in out) >= 3, out
    assert out[-1] == "Linux"                 # /proc/sys is there, just read-only
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core_pattern
    assert os.uname().nodename == hostname


def test_escape_loading_a_kernel_module(attack):
    modprobe = "/proc/sys/kernel/modprobe"
    box, out = attack("head -c 8192 /dev/zero > /tmp/evil.ko; insmod /tmp/evil.ko 2>&1; "
                      "echo insmod=$?; "
                      f"if [ -e {modprobe} ]; then echo /tmp/evil > {modprobe} 2>&1; "
                      "echo modprobe=$?; else echo modprobe=absent; fi; "
                      "grep CapBnd /proc/self/status")
    assert marker(out, "insmod") != "0"
    # The container can never hold CAP_SYS_MODULE: not even in its bounding set.
    bounding = int(status_field("\n".join(out), "CapBnd"), 16)
    assert not bounding & (1 << capabilities.CAPABILITIES["CAP_SYS_MODULE"])
    if os.path.exists("/proc/modules"):
        # A kernel with modules: init_module(2) itself refused.
        assert any("Operation not permitted" in line for line in out), out
    else:
        # This kernel loads no modules at all; insmod still got as far as the call.
        assert any("can't insert" in line for line in out), out
    if os.path.exists(modprobe):
        assert marker(out, "modprobe") != "0"
    else:
        assert marker(out, "modprobe") == "absent"


def test_escape_changing_the_hosts_hostname(attack):
    before = os.uname().nodename
    box, out = attack("hostname evil 2>&1; echo default=$?; hostname")
    assert marker(out, "default") != "0"      # no CAP_SYS_ADMIN by default
    assert out[-1] == "kbox"
    # Even a container allowed to (CAP_SYS_ADMIN) changes only its own.
    caps = (*oci.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN")
    box, out = attack("hostname evil && echo admin=$?; hostname", capabilities=caps)
    assert marker(out, "admin") == "0"
    assert out[-1] == "evil"
    assert os.uname().nodename == before != "evil"


@pytest.fixture(scope="module")
def ptrace_probe(boxes: Boxes) -> str:
    """A static program that PTRACE_ATTACHes to its own child, then to the pids it is given."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the ptrace probe")
    source = os.path.join(boxes.tmp, "probe.c")
    binary = os.path.join(boxes.tmp, "probe")
    with open(source, "w") as f:
        f.write(PROBE_C)
    build = subprocess.run([gcc, "-static", "-O2", "-o", binary, source], capture_output=True,
                           text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build a static probe: {build.stderr.strip()[-200:]}")
    return binary


PROBE_C = r"""
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    pid_t child = fork();
    if (child == 0) { pause(); _exit(0); }
    long r = ptrace(PTRACE_ATTACH, child, 0, 0);
    printf("own=%s\n", r == 0 ? "attached" : strerror(errno));
    if (r == 0) { waitpid(child, NULL, 0); ptrace(PTRACE_DETACH, child, 0, 0); }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (int i = 1; i < argc; i++) {
        r = ptrace(PTRACE_ATTACH, atoi(argv[i]), 0, 0);
        printf("host%d=%s\n", i, r == 0 ? "attached" : strerror(errno));
    }
    return 0;
}
"""


def test_escape_ptrace_of_a_host_process(attack, boxes, ptrace_probe):
    targets = [os.getpid(), boxes.runtime.zygote.pid]  # the zygote, a host process
    probe = oci.Mount("/probe", "bind", ptrace_probe, ("bind", "ro"))
    box, out = attack(f"/probe {' '.join(map(str, targets))}", extra_mounts=(probe,))
    # ptrace works in the container (its own child) ...
    assert marker(out, "own") == "attached", out
    # ... but no host process is there to attach to.
    assert marker(out, "host1") == "No such process"
    assert marker(out, "host2") == "No such process"


def test_escape_reading_proc_kcore_and_sys_firmware(attack):
    host_firmware = os.listdir("/sys/firmware")
    with open("/proc/timer_list", "rb") as f:
        host_timers = f.read()
    box, out = attack("cat /proc/kcore 2>/dev/null | wc -c; echo kcore=$?; "
                      "echo firmware=$(ls -A /sys/firmware | wc -l); "
                      "echo timers=$(cat /proc/timer_list | wc -c); "
                      "echo keys=$(cat /proc/keys | wc -c); echo ok")
    assert out[0] == "0"                       # nothing of the kernel's memory
    assert host_firmware and marker(out, "firmware") == "0"
    assert host_timers and marker(out, "timers") == "0"
    assert marker(out, "keys") == "0"
    assert out[-1] == "ok"


def test_escape_unshare_a_user_namespace_to_regain_capabilities(attack):
    script = ("unshare -Urm sh -c '"
              "echo uid=$(id -u); grep CapEff /proc/self/status; "
              "umount /proc/timer_list 2>&1; echo unmask=$?; "
              "mount -o remount,rw /proc/sys 2>&1; echo procsys=$?; "
              "echo evil > /proc/sys/kernel/hostname 2>&1; echo hostname=$?; "
              "mount -t proc proc /mnt 2>&1; echo proc=$?; "
              "mount -t sysfs sysfs /mnt 2>&1; echo sysfs=$?; "
              "mount -o remount,rw /sys 2>&1; echo sys=$?; "
              "echo timers=$(cat /proc/timer_list | wc -c)'")
    box, out = attack(script)
    # unshare worked: root with every capability, of a namespace that owns nothing.
    assert marker(out, "uid") == "0", out
    assert int(status_field("\n".join(out), "CapEff"), 16) == (1 << (capabilities.last_cap()
                                                                     + 1)) - 1
    for what in ("unmask", "procsys", "hostname", "proc", "sysfs", "sys"):
        assert marker(out, what) != "0", (what, out)
    assert marker(out, "timers") == "0"       # the mask is still in place


def test_escape_writing_to_sys(attack):
    knob = "/sys/kernel/mm/transparent_hugepage/enabled"
    target = knob if os.path.exists(knob) else "/sys/kernel/uevent_helper"
    with open(target) as f:
        before = f.read()
    box, out = attack(f"echo never > {target} 2>&1; echo write=$?; "
                      "mount -o remount,rw /sys 2>&1; echo remount=$?; "
                      "echo x > /sys/kernel/x; echo new=$?; echo entries=$(ls /sys | wc -l)")
    for what in ("write", "remount", "new"):
        assert marker(out, what) != "0", (what, out)
    assert any("Read-only file system" in line for line in out), out
    assert int(marker(out, "entries")) > 3    # /sys is there to write to
    with open(target) as f:
        assert f.read() == before


# -- reaching the agent's port ---------------------------------------------------------------


class Listener:
    """A TCP server inside a network namespace that counts the connections it accepts."""

    def __init__(self, ns: str, ip: str, port: int) -> None:
        def bind() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            s.listen(8)
            return s
        self.sock = netns.run_in(ns, bind)
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.sendall(b"agent\n")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def node(boxes: Boxes) -> Iterator[tuple[str, NodeNetwork]]:
    """A node network (bridge, guard, IPAM) in a fresh namespace, as an agent makes it."""
    name = f"mctl-ktest-{secrets.token_hex(3)}"
    netns.create(name)
    with netns.rtnl(name) as rt:
        rt.set_link("lo", up=True)
    net = NodeNetwork(os.path.join(boxes.tmp, name), netns_prefix=f"{name}-", node_netns=name)
    try:
        net.configure("10.98.1.0/24", "10.98.0.0/16")
        yield name, net
    finally:
        net.cleanup()
        netns.remove(name)
    assert netns.list_names(name) == []


def test_escape_reaching_the_agents_port(boxes, mode, node):
    name, net = node
    agent = Listener(name, "10.98.1.1", 7071)      # the node's address on the bridge
    made: list[Box] = []
    attached = []
    try:
        peer_net = net.attach(f"peer{secrets.token_hex(2)}")
        attached.append(peer_net)
        peer = boxes.run("echo peer | nc -l -p 8080", userns=mode == "userns",
                         namespace_paths={"network": peer_net.netns})
        made.append(peer)
        attacker_net = net.attach(f"evil{secrets.token_hex(2)}")
        attached.append(attacker_net)
        time.sleep(0.2)                             # the peer's nc is listening
        script = (f"echo peer=$(nc -w 3 {peer_net.ip} 8080 </dev/null); "
                  "echo agent=$(nc -w 2 10.98.1.1 7071 </dev/null); echo agentrc=$?; "
                  "echo ping=$(ping -c1 -W2 10.98.1.1 >/dev/null 2>&1; echo $?)")
        attacker = boxes.run(script, userns=mode == "userns",
                             namespace_paths={"network": attacker_net.netns})
        made.append(attacker)
        attacker.wait_exit(20)
        out = attacker.output().splitlines()
        # The tools work and the network routes: another container answers,
        # and the node answers ping (from root: a user namespace's root has
        # no CAP_NET_RAW over the agent's network namespace, the host's) ...
        assert marker(out, "peer") == "peer", out
        if mode == "root":
            assert marker(out, "ping") == "0", out
        # ... but a TCP connection to the node itself never gets through.
        assert marker(out, "agent") == ""
        assert agent.accepted == 0
    finally:
        agent.close()
        for box in made:
            boxes.teardown(box)
        for att in attached:
            net.detach(os.path.basename(att.netns).removeprefix(net.netns_prefix), att)
