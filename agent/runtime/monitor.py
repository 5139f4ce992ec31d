"""The per-container monitor: the process that owns one container.

Like conmon for CRI-O, a small monitor process sits between the agent and
the container, so the container outlives an agent restart:
- it creates the container's cgroup from config.json, forks the container's
  first process (see process.py) and learns whether exec succeeded through a
  close-on-exec pipe: EOF means exec happened, bytes are the error;
- it holds the container's stdout and stderr pipes and writes them to
  `container.log` in the CRI log format (`<RFC3339Nano> <stream> F <line>`);
- it waits for the container to exit and writes `exit.json` (exit code,
  signal, OOM kill, time), so the result is recorded even while no agent runs.

It is a session leader of its own and is never the agent's child, so signals
to the agent's process group do not reach it.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import time
from dataclasses import dataclass
from typing import NoReturn

from mctl.common.procfs import start_time as process_start_time

from . import process
from . import syscalls as sc
from .cgroups.base import CgroupDriver, Limits
from .oci import Config

LOG_FILE = "container.log"
STATE_FILE = "state.json"
EXIT_FILE = "exit.json"
# A line longer than this is written in parts, tagged P (partial) as CRI does.
MAX_LINE = 16 * 1024


@dataclass(frozen=True)
class StartResult:
    monitor_pid: int
    init_pid: int
    error: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps({"monitor_pid": self.monitor_pid, "init_pid": self.init_pid,
                           "error": self.error}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StartResult:
        if not data:
            return cls(0, 0, "the monitor exited before reporting")
        doc = json.loads(data)
        return cls(int(doc["monitor_pid"]), int(doc["init_pid"]), str(doc["error"]))


def cgroup_path(config: Config) -> str:
    return config.cgroups_path.strip("/")


def limits_of(config: Config) -> Limits:
    res = config.resources

    def limit(value: int | None) -> int | None:
        # OCI writes "unlimited" as -1 (or leaves it out); the driver wants None.
        return value if value is not None and value > 0 else None

    return Limits(cpu_quota_us=limit(res.cpu_quota), cpu_period_us=res.cpu_period or 100_000,
                  memory_bytes=limit(res.memory_limit), pids=limit(res.pids_limit))


def write_json(path: str, doc: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(
    sys: sc.Syscalls,
    cgroups: CgroupDriver,
    bundle: str,
    container_id: str,
    config: Config,
    report_fd: int,
    cap_top: int,
) -> NoReturn:
    """The monitor's whole life, in a freshly forked process. Never returns."""
    code = 1
    try:
        code = _monitor(sys, cgroups, bundle, container_id, config, report_fd, cap_top)
    except BaseException as e:  # noqa: BLE001 - reported, then exit
        try:
            os.write(report_fd, StartResult(os.getpid(), 0, f"monitor: {e}").to_bytes())
        except OSError:
            pass
    finally:
        os._exit(code)


def _monitor(
    sys: sc.Syscalls,
    cgroups: CgroupDriver,
    bundle: str,
    container_id: str,
    config: Config,
    report_fd: int,
    cap_top: int,
) -> int:
    os.setsid()
    # Like conmon: hold none of the agent's stdio, or whoever reads the
    # agent's output never sees end-of-file while a container lives.
    null_rw = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null_rw, fd)
    os.close(null_rw)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cg = cgroup_path(config)
    cgroups.create(cg, limits_of(config))
    procs = cgroups.procs_files(cg)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY)
    if "pid" in config.namespaces:
        # Only this process's children enter the new namespace: the next
        # fork is the container's pid 1.
        sys.unshare(sc.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os.close(report_fd)
        process.exec_container(sys, bundle, config, procs, sync_w,
                               (null, out_w, err_w), cap_top)
    for fd in (out_w, err_w, sync_w, null):
        os.close(fd)
    error = read_all(sync_r)
    os.close(sync_r)
    if error:
        os.waitpid(pid, 0)
        os.write(report_fd, StartResult(os.getpid(), pid, error.decode(errors="replace"))
                 .to_bytes())
        return 1
    started = now_ms()
    write_json(os.path.join(bundle, STATE_FILE), {
        "id": container_id, "monitor_pid": os.getpid(), "init_pid": pid,
        "started_unix_ms": started, "monitor_start_time": process_start_time(os.getpid()),
        "init_start_time": process_start_time(pid),
    })
    os.write(report_fd, StartResult(os.getpid(), pid).to_bytes())
    os.close(report_fd)
    status = _pump_logs(os.path.join(bundle, LOG_FILE), out_r, err_r, pid)
    oom = 0
    try:
        oom = cgroups.oom_killed(cg)
    except Exception:  # noqa: BLE001 - the record matters more than this detail
        pass
    exit_code = os.waitstatus_to_exitcode(status)
    write_json(os.path.join(bundle, EXIT_FILE), {
        "exit_code": exit_code if exit_code >= 0 else 128 - exit_code,
        "signal": -exit_code if exit_code < 0 else 0,
        "oom_killed": oom > 0,
        "started_unix_ms": started,
        "finished_unix_ms": now_ms(),
    })
    return 0


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class _LogWriter:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        out = []
        for line in lines:
            # A long line that arrived whole is split too, not only a long remainder.
            while len(line) > MAX_LINE:
                out.append(self._line(stream, "P", line[:MAX_LINE]))
                line = line[MAX_LINE:]
            out.append(self._line(stream, "F", line))
        while len(self.partial[stream]) > MAX_LINE:
            out.append(self._line(stream, "P", self.partial[stream][:MAX_LINE]))
            self.partial[stream] = self.partial[stream][MAX_LINE:]
        if out:
            os.write(self.fd, b"".join(out))

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                os.write(self.fd, self._line(stream, "F", rest))
        self.partial = {"stdout": b"", "stderr": b""}

    @staticmethod
    def _line(stream: str, tag: str, line: bytes) -> bytes:
        ns = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
        return b"%s.%09dZ %s %s %s\n" % (stamp.encode(), ns % 1_000_000_000,
                                         stream.encode(), tag.encode(), line)


def _pump_logs(path: str, out_r: int, err_r: int, pid: int) -> int:
    """Copies the container's output to the log until it exits; returns its wait status.

    The child's exit is watched through a pidfd as well as the pipes: a
    process that escaped into the background may hold the pipes open after
    the main process is gone (without a pid namespace nothing kills it).
    """
    writer = _LogWriter(path)
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, "stdout")
    sel.register(err_r, selectors.EVENT_READ, "stderr")
    sel.register(pidfd, selectors.EVENT_READ, None)
    open_pipes = 2
    exited = False
    while open_pipes and not exited:
        for key, _ in sel.select():
            if key.data is None:
                exited = True
                continue
            try:
                data = os.read(key.fd, 65536)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                data = b""
            if data:
                writer.feed(key.data, data)
            else:
                sel.unregister(key.fd)
                open_pipes -= 1
    _, status = os.waitpid(pid, 0)
    # Whatever is still buffered in the pipes was written before the exit.
    for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
        os.set_blocking(fd, False)
        try:
            while data := os.read(fd, 65536):
                writer.feed(stream, data)
        except (BlockingIOError, OSError):
            pass
        os.close(fd)
    writer.flush()
    os.close(pidfd)
    os.close(writer.fd)
    return status
