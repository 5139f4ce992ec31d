"""Time stamps inside the native runtime's zygote, monitor and container child.

To say where a native container start spends its time without changing the
runtime, the benchmark forks a zygote of its own (instead of spawning
`python -m mctl.agent.runtime.zygote`) and, before it serves, replaces the
module attributes that the zygote, the monitor and the container's first
process call through with wrappers that record (step, start, end) on
CLOCK_MONOTONIC, which is one clock for every process of the machine.
Forks inherit the wrappers. The zygote and each monitor append their stamps
to a file when they exit. The container child cannot reach that file after
pivot_root and keeps no descriptor but its stdio, so it writes its stamps as
one line to its stdout right before exec: the monitor copies the line into
the container's log, where `collect` finds it.

The wrappers cost about a microsecond each; the child's write before exec
falls between "exec called" and the monitor seeing the exec.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime import zygote
from mctl.agent.runtime.state import StartResult

_now = time.monotonic_ns
MARKER = "MCTL-TRACE "

# Per process: its role, the pid of the monitor it belongs to, its stamps.
_role = "zygote"
_monitor_pid = 0
_stamps: list[tuple[str, int, int]] = []
_out = ""


def _flush() -> None:
    if not _stamps or not _out:
        return
    line = json.dumps({"role": _role, "monitor": _monitor_pid, "stamps": _stamps}) + "\n"
    if _role == "child":
        os.write(1, (MARKER + line).encode())
        _stamps.clear()
        return
    fd = os.open(_out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    _stamps.clear()


def _wrap(owner: object, attr: str, label: Callable[..., str] | str) -> bool:
    original = getattr(owner, attr, None)
    if original is None:
        return False

    def timed(*args: object, **kwargs: object) -> object:
        start = _now()
        try:
            return original(*args, **kwargs)
        finally:
            name = label(*args, **kwargs) if callable(label) else label
            _stamps.append((f"{_role}: {name}", start, _now()))
    setattr(owner, attr, timed)
    return True


_reads = 0  # read_all calls in this process since its fork


def _pipe_label(*_args: object) -> str:
    global _reads
    _reads += 1
    if _role == "monitor" and _reads == 1:
        # The monitor was forked as a spare before the request (zygote.Spare).
        return "spare: wait for a request"
    if _role == "child" and _reads == 1:
        # The init forked ahead by the spare (spawn.InitAhead).
        return "init ahead: wait for the bundle"
    return {"zygote": "wait for the monitor's report",
            "monitor": "wait for exec (sync pipe EOF)"}.get(_role, "read a pipe")


# (module under mctl.agent.runtime, attribute, label): what is timed. The
# runtime is still changing; a step whose function is not there is skipped
# and named by `install`, never guessed.
TARGETS: list[tuple[str, str, Callable[..., str] | str]] = [
    ("zygote", "load_config", "read config.json (request received)"),
    # The init forked ahead reads it too (spawn.InitAhead), through these.
    ("oci.config", "load_config", "read config.json"),
    ("spawn", "read_all", _pipe_label),
    ("monitor", "read_all", _pipe_label),
    ("spawn", "wait_ready", "wait for exec (sync pipe EOF)"),
    ("monitor", "write_json", lambda path, doc: f"write {os.path.basename(path)}"),
    ("monitor", "process_start_time", "read a start time from /proc"),
    ("monitor", "_pump_logs", "container runs; pump logs until exit, waitpid"),
    ("cgroups.v1", "V1Driver.create", "cgroup: mkdir + limits"),
    ("cgroups.v2", "V2Driver.create", "cgroup: mkdir + limits"),
    ("cgroups.v1", "V1Driver.oom_killed", "cgroup: read OOM count"),
    ("cgroups.v2", "V2Driver.oom_killed", "cgroup: read OOM count"),
    ("syscalls", "LibcSyscalls.unshare",
     lambda self, flags: "unshare pid" if flags == sc.CLONE_NEWPID
     else "unshare mnt, uts, ipc, net, cgroup"),
    ("syscalls", "LibcSyscalls.sethostname", "sethostname"),
    ("process", "join_namespaces", "join namespaces by path"),
    ("process", "join_cgroup", "join the cgroup (files from the monitor)"),
    ("spawn", "_make_cgroup", "cgroup: made after the fork"),
    ("process", "loopback_up", "loopback up (ioctl)"),
    ("rootfs", "prepare", "mount proc, dev, sys, binds; mknod devices"),
    ("rootfs", "pivot", "pivot_root, detach old root"),
    ("rootfs", "mask_paths", "masked and read-only paths"),
    ("capabilities", "drop_bounding", "drop bounding capabilities"),
    ("capabilities", "set_capabilities", "capset"),
]


def _install() -> None:
    from mctl.agent.runtime import process

    real_fork, real_exec, real_exit = os.fork, process.exec_program, os._exit

    def fork() -> int:
        global _role, _monitor_pid, _reads
        start = _now()
        pid = real_fork()
        end = _now()
        if pid == 0:
            _stamps.clear()
            _reads = 0
            if _role == "zygote":
                _role, _monitor_pid = "monitor", os.getpid()
            else:
                _role = "child"   # pid 1 of its namespace; _monitor_pid is its parent's
            _stamps.append((f"{_role}: fork, until the child runs", start, end))
        else:
            _stamps.append((f"{_role}: fork (parent side)", start, end))
        return pid

    def exec_program(*args: object) -> None:
        now = _now()
        _stamps.append(("child: exec called", now, now))
        _flush()
        real_exec(*args)

    def exit_now(code: int) -> None:
        now = _now()
        _stamps.append((f"{_role}: exit", now, now))
        _flush()
        real_exit(code)

    os.fork, process.exec_program, os._exit = fork, exec_program, exit_now
    _wrap(os, "closerange", "close inherited fds")
    for module, attr, label in TARGETS:
        owner = _resolve(module, attr)
        if owner is not None:
            _wrap(owner, attr.rsplit(".", 1)[-1], label)


def _resolve(module: str, attr: str) -> object | None:
    """The object holding `attr` ("Class.method" or "function") in a runtime module."""
    try:
        owner: object = importlib.import_module(f"mctl.agent.runtime.{module}")
    except ImportError:
        return None
    *classes, name = attr.split(".")
    for cls in classes:
        owner = getattr(owner, cls, None)
    return owner if owner is not None and hasattr(owner, name) else None


def untraced() -> list[str]:
    """The TARGETS this version of the runtime does not have."""
    return [f"{m}.{a}" for m, a, _ in TARGETS if _resolve(m, a) is None]


class TracedZygote:
    """A zygote forked from this process, with every step time-stamped into `out`."""

    def __init__(self, out: str, cgroup_root: str = "/sys/fs/cgroup") -> None:
        self.out = out
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the zygote: never returns
            global _out
            try:
                ours.close()
                _out = out
                sc.libc().prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _install()
                zygote.serve(theirs.fileno(), cgroup_root)
            finally:
                os._exit(0)
        theirs.close()
        self.pid = pid
        self.sock = ours

    def start(self, container_id: str, bundle: str) -> tuple[StartResult, int, int]:
        """Starts a bundle as the agent does; returns the result, send and reply times."""
        # zygote.py's protocol: `TAG\nJSON` each way; one start at a time here.
        request = b"1\n" + json.dumps({"bundle": os.path.abspath(bundle),
                                       "id": container_id}).encode()
        sent = _now()
        self.sock.send(request)
        reply = self.sock.recv(65536)
        received = _now()
        return StartResult.from_bytes(reply.partition(b"\n")[2]), sent, received

    def close(self) -> None:
        """Closes the socket (the zygote then flushes and exits) and reaps the zygote."""
        self.sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


@dataclass
class Step:
    label: str
    start_ms: float   # since the agent sent the request
    end_ms: float


@dataclass
class Traced:
    """One traced start: the monitor's pid, the agent's send and reply times, the log."""

    monitor_pid: int
    sent: int
    replied: int
    child_stamps: list[tuple[str, int, int]]


def child_stamps(container_log: str) -> list[tuple[str, int, int]]:
    """The stamps the container child wrote to its stdout, from the CRI-format log."""
    with open(container_log) as f:
        for line in f:
            # "<time> stdout F MCTL-TRACE {...}"
            _, _, rest = line.partition(" stdout F ")
            if rest.startswith(MARKER):
                return [tuple(s) for s in json.loads(rest[len(MARKER):])["stamps"]]
    return []


def collect(out: str, starts: list[Traced]) -> list[list[Step]]:
    """Per traced start: its steps in time order, in ms since the agent sent the request."""
    records = []
    with open(out) as f:
        for line in f:
            records.append(json.loads(line))
    zygote_stamps = [s for r in records if r["role"] == "zygote" for s in r["stamps"]]
    runs = []
    for t in starts:
        sent, replied = t.sent, t.replied
        stamps = [s for s in zygote_stamps if sent <= s[1] <= replied] + t.child_stamps
        stamps += [s for r in records if r["monitor"] == t.monitor_pid
                   and r["role"] == "monitor" for s in r["stamps"]]
        stamps.append(("agent: reply received", replied, replied))
        runs.append(sorted((Step(label, (t0 - sent) / 1e6, (t1 - sent) / 1e6)
                            for label, t0, t1 in stamps), key=lambda s: (s.start_ms, s.end_ms)))
    return runs
