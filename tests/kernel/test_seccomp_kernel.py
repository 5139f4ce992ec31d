"""Seccomp through the real kernel: the compiled filters, and containers of four runtimes.

Needs root. Two parts:

- The program alone: a forked child sets no_new_privs, loads a filter
  built by libseccomp (seccomp/) and loaded through LibcSyscalls.seccomp, makes calls and
  reports what they returned, so the kernel itself judges the BPF (it
  refuses a malformed program) and the actions (EPERM, a custom errno,
  SIGSYS for KILL_PROCESS and for x32 calls, ENOSYS for clone3).
- Containers: the same bundle (made as boxes.py makes them, with a
  linux.seccomp profile) is started through the agent's own runtime objects
  with each runtime installed here: native (the zygote, in-process),
  mctl-runtime, runc and crun (through the monitor and the OCI command
  line, as `mctl-agent --runtime X` does). Each must show the same output
  and exit status: mkdir denied with EPERM while the rest works, an
  argument rule, ERRNO with a custom errno, KILL_PROCESS ending the
  container with SIGSYS, and the agent's RuntimeDefault profile (a
  Docker-size allow-list) letting busybox sh, ls and cat run.

Everything lives in one boxes.Boxes (``mctl-ktest-*``, cgroup prefix
``mctl/test-seccomp-*``); runc and crun leave cgroup parents in every
hierarchy, which the module removes at the end before checking nothing is
left.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from boxes import Box, Boxes

from mctl.agent.images.store import ImageError
from mctl.agent.runtime import seccomp
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.api import Runtime
from mctl.agent.runtime.cgroups import ControllerUnavailable
from mctl.agent.runtime.choose import make_runtime
from mctl.agent.runtime.oci import client as ociclient
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.seccomp.default import SCMP_ARCH
from mctl.common.procfs import start_time

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
    pytest.mark.skipif(seccomp.native_arch() == "", reason="no seccomp filters for this machine"),
]

RUNTIMES = ["native", "mctl-runtime", "runc", "crun"]
ARCH = seccomp.native_arch()
# This machine's call numbers, as libseccomp knows them.
TABLE = seccomp.syscall_names(ARCH) if ARCH else {}


# -- the program alone, in a forked child ---------------------------------------------------

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _raw(nr: int, *args: int) -> int:
    """syscall(nr, args...): the errno it failed with, or 0."""
    ret = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return ctypes.get_errno() if ret == -1 else 0


def in_child(profile: dict, probe: Callable[[], int]) -> int:
    """Loads `profile` in a forked child, runs `probe`; its wait status."""
    program = seccomp.parse(profile)
    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            sc.libc().prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            sc.libc().seccomp(program.program, program.flags)
            code = probe()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def exit_code(status: int) -> int:
    assert os.WIFEXITED(status), f"killed by signal {os.WTERMSIG(status)}"
    return os.WEXITSTATUS(status)


def _mkdir(tmp_path: str) -> Callable[[], int]:
    def probe() -> int:
        try:
            os.mkdir(os.path.join(tmp_path, "d"))
            return 0
        except OSError as e:
            return e.errno

    return probe


def test_the_kernel_takes_the_program_and_returns_its_errnos(tmp_path):
    deny = {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    assert exit_code(in_child(deny, _mkdir(str(tmp_path)))) == errno.EPERM
    custom = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSPC}]}
    assert exit_code(in_child(custom, _mkdir(str(tmp_path)))) == errno.ENOSPC
    assert exit_code(in_child({"defaultAction": "SCMP_ACT_ALLOW"},
                              _mkdir(str(tmp_path)))) == 0


def test_kill_process_and_x32_calls_end_the_process_with_sigsys():
    kill = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    status = in_child(kill, lambda: os.getppid() and 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
    if ARCH == "x86_64":
        status = in_child({"defaultAction": "SCMP_ACT_ALLOW"},
                          lambda: _raw(0x40000000 | TABLE["getpid"]))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_an_argument_rule_and_a_long_program():
    # kill(0, sig) is allowed only for signal 0: every call also has a rule
    # of its own, with a value of its own (libseccomp shares identical
    # code), so the program is thousands of instructions long.
    table = TABLE
    # kill's two rules do not overlap: when two argument rules of one call
    # with different actions both match, libseccomp's tree decides, not
    # the order they are given in.
    rules = [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
              "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_NE"}]},
             {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
              "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}]
    rules += [{"names": [name], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 5, "value": nr << 16 | 0x1234, "op": "SCMP_CMP_NE"}]}
              for name, nr in table.items() if name != "kill"]
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules}
    assert len(seccomp.parse(profile).program) // 8 > 1000

    def probe() -> int:
        if _raw(table["kill"], os.getpid(), 0) != 0:
            return 1
        if _raw(table["kill"], os.getpid(), int(signal.SIGCONT)) != errno.EACCES:
            return 2
        if _raw(table["getppid"], 0, 0, 0, 0, 0,
                table["getppid"] << 16 | 0x1234) != errno.EPERM:
            return 3
        return 0

    assert exit_code(in_child(profile, probe)) == 0


def test_runtime_default_in_the_kernel():
    profile = seccomp.runtime_default(oci.DEFAULT_CAPABILITIES, ARCH)
    table = TABLE

    def probe() -> int:
        checks = [
            (_raw(table["getpid"]), 0),
            (_raw(table["unshare"], 0x20000), errno.EPERM),
            (_raw(table["mount"], 0, 0, 0, 0, 0), errno.EPERM),
            (_raw(table["clone3"], 0, 0), errno.ENOSYS),
            (_raw(table["keyctl"], 0, 0), errno.EPERM),
            (_raw(table["personality"], 0xFFFFFFFF), 0),
        ]
        for i, (got, want) in enumerate(checks):
            if got != want:
                return 10 + i
        pid = os.fork()  # glibc's fork is clone without namespace flags
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return 0

    assert exit_code(in_child(profile, probe)) == 0


# -- containers, one behaviour for every runtime --------------------------------------------


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    try:
        b = Boxes("seccomp")
    except (ControllerUnavailable, ImageError) as e:
        pytest.skip(str(e))
    runtimes: dict[str, Runtime] = {}
    b.runtimes = runtimes  # type: ignore[attr-defined]
    try:
        yield b
    finally:
        for rt in runtimes.values():
            rt.close()
        for box in list(b.boxes):
            b.teardown(box)
        ociclient.remove_empty_cgroups(b.prefix)
        leaks = b.close()
        assert leaks == {}


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, boxes: Boxes) -> Runtime:
    name = request.param
    runtimes: dict[str, Runtime] = boxes.runtimes  # type: ignore[attr-defined]
    if name not in runtimes:
        try:
            runtimes[name] = make_runtime(name, boxes.tmp)
        except ociclient.RuntimeNotFound as e:
            pytest.skip(str(e))
    return runtimes[name]


@pytest.fixture
def run(boxes: Boxes, runtime: Runtime,
        request: pytest.FixtureRequest) -> Callable[..., tuple[int, str]]:
    """run(script, profile) -> (exit code, stdout+stderr) of a container with that profile."""

    def go(script: str, profile: dict | None) -> tuple[int, str]:
        # One stream: stdout and stderr are two pipes, whose order is not kept.
        box = boxes.make(f"exec 2>&1; {script}",
                         seccomp=seccomp.parse(profile) if profile else None)

        def teardown() -> None:
            runtime.delete(box.id, box.bundle, box.cgroup)
            boxes.teardown(box)

        request.addfinalizer(teardown)
        start(boxes, runtime, box)
        return int(box.wait_exit()["exit_code"]), box.output()

    return go


def start(boxes: Boxes, runtime: Runtime, box: Box) -> None:
    result = runtime.start(box.id, box.bundle)
    box.monitor_pid, box.init_pid = result.monitor_pid, result.init_pid
    for pid in (result.monitor_pid, result.init_pid):
        t = start_time(pid)
        if t:
            boxes.started.append((pid, t))


def deny_mkdir(**extra: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [SCMP_ARCH[ARCH]],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", **extra}]}


def test_mkdir_fails_with_eperm_and_the_rest_works(run):
    code, out = run("echo hello > /tmp/f && cat /tmp/f && ls -d /etc; "
                    "mkdir /tmp/d || echo mkdir-failed; test -d /tmp/d || echo no-dir",
                    deny_mkdir())
    assert code == 0
    assert out == ("hello\n/etc\nmkdir: can't create directory '/tmp/d': "
                   "Operation not permitted\nmkdir-failed\nno-dir\n")


def test_errno_ret_sets_the_error(run):
    code, out = run("mkdir /tmp/d; echo $?", deny_mkdir(errnoRet=errno.ENOSPC))
    assert (code, out) == (0, "mkdir: can't create directory '/tmp/d': "
                              "No space left on device\n1\n")


def test_an_argument_rule_denies_only_that_mode(run):
    # chmod to 0777 is refused, any other mode is not (chmod and fchmodat:
    # either may be what libc calls).
    rules = [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
             {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}]}]
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    code, out = run("touch /tmp/f; chmod 755 /tmp/f && echo 755-ok; "
                    "chmod 777 /tmp/f 2>/dev/null || echo 777-denied; stat -c %a /tmp/f", profile)
    assert (code, out) == (0, "755-ok\n777-denied\n755\n")


def test_kill_process_ends_the_container_with_sigsys(run):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    code, out = run("echo before; exec mkdir /tmp/d", profile)
    assert (code, out) == (128 + signal.SIGSYS, "before\n")


def test_runtime_default_runs_busybox(run):
    profile = seccomp.runtime_default(oci.DEFAULT_CAPABILITIES, ARCH)
    code, out = run("ls / | grep -c . >/dev/null && cat /etc/hostname && "
                    "(sleep 0; echo subshell) && mkdir /tmp/d && echo mkdir-ok; "
                    "unshare -n true 2>/dev/null || echo unshare-denied; "
                    "mount -t tmpfs none /mnt 2>/dev/null || echo mount-denied", profile)
    assert (code, out) == (0, "kbox\nsubshell\nmkdir-ok\nunshare-denied\nmount-denied\n")


def test_unconfined_runs_too(run):
    code, out = run("mkdir /tmp/d && echo ok", None)
    assert (code, out) == (0, "ok\n")


def test_exec_into_the_container_gets_its_filter(boxes):
    # `mctl exec` (nsexec.py) loads the container's filter too: no way around it.
    box = boxes.make("exec sleep 30", seccomp=seccomp.parse(deny_mkdir()))
    try:
        boxes.start(box)
        proc = subprocess.run(
            [sys.executable, "-m", "mctl.agent.runtime.nsexec", "--pid", str(box.init_pid),
             "--bundle", box.bundle, "--", "sh", "-c", "mkdir /tmp/e 2>&1; echo $?"],
            capture_output=True, text=True, timeout=20)
        assert (proc.returncode, proc.stdout) == (0, "mkdir: can't create directory '/tmp/e': "
                                                     "Operation not permitted\n1\n"), proc.stderr
    finally:
        boxes.teardown(box)
