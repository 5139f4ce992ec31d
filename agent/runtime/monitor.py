"""The per-container monitor: the process that owns one container.

Like conmon for CRI-O, a small monitor process sits between the agent and
the container, so the container outlives an agent restart:
- it creates the container's cgroup from config.json, forks the container's
  first process (see process.py) and learns whether exec succeeded through a
  close-on-exec pipe: EOF means exec happened, bytes are the error;
- it holds the container's stdout and stderr pipes and writes them to
  `container.log` in the CRI log format (`<RFC3339Nano> <stream> F <line>`),
  rotated at a size (crilog.py);
- it waits for the container to exit and writes `exit.json` (exit code,
  signal, OOM kill, time), so the result is recorded even while no agent runs.

It is a session leader of its own and is never the agent's child, so signals
to the agent's process group do not reach it.
"""

from __future__ import annotations

import errno
import os
import select
import time

from mctl.common.procfs import start_time as process_start_time

from . import lightjson, signals, spawn
from . import syscalls as sc
from .crilog import MAX_LINE, LogLimits, LogWriter
from .record import Record
from .spawn import cgroup_path, limits_of, read_all

# Imports are kept light: this module is loaded by the zygote, which every
# monitor and container process is forked from, so whatever it holds in
# memory each fork copies the page tables of and each exec tears down
# (see zygote.py). typing.TYPE_CHECKING without importing typing:
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from .cgroups.base import CgroupDriver
    from .oci import Config

__all__ = ["MAX_LINE", "LogLimits", "StartResult", "cgroup_path", "limits_of", "read_all", "run"]

LOG_FILE = "container.log"
STATE_FILE = "state.json"
EXIT_FILE = "exit.json"


class StartResult(Record):
    __slots__ = ("monitor_pid", "init_pid", "error")

    def __init__(self, monitor_pid: int, init_pid: int, error: str = "") -> None:
        self.monitor_pid = monitor_pid
        self.init_pid = init_pid
        self.error = error

    def to_bytes(self) -> bytes:
        return lightjson.dumps({"monitor_pid": self.monitor_pid, "init_pid": self.init_pid,
                           "error": self.error}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StartResult:
        if not data:
            return cls(0, 0, "the monitor exited before reporting")
        doc = lightjson.loads(data)
        return cls(int(doc["monitor_pid"]), int(doc["init_pid"]), str(doc["error"]))


def write_json(path: str, doc: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(lightjson.dumps(doc))
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
    runtime: list[str] | None = None,
    log_limits: LogLimits | None = None,
) -> NoReturn:
    """The monitor's whole life, in a freshly forked process. Never returns.

    `runtime`, if given, is the argv prefix of an OCI runtime command
    (ociclient.py) that realizes the bundle instead of this process forking
    the container itself. `log_limits` caps container.log (crilog.py).
    """
    code = 1
    try:
        code = _monitor(sys, cgroups, bundle, container_id, config, report_fd, cap_top,
                        runtime, log_limits or LogLimits())
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
    runtime: list[str] | None,
    log_limits: LogLimits,
) -> int:
    os.setsid()
    # Like conmon: hold none of the agent's stdio, or whoever reads the
    # agent's output never sees end-of-file while a container lives.
    null_rw = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null_rw, fd)
    os.close(null_rw)
    signals.signal(signals.SIGCHLD, signals.SIG_DFL)
    signals.signal(signals.SIGTERM, signals.SIG_DFL)
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    cg = cgroup_path(config)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open("/dev/null", os.O_RDONLY)
    stdio = (null, out_w, err_w)
    if runtime:
        from . import ociclient

        # Like containerd-shim: the init that `create` leaves behind is
        # re-parented to us, so we wait for it and see its real exit status.
        sys.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        pid, error = ociclient.create_and_start(runtime, bundle, container_id, stdio)
        for fd in stdio:
            os.close(fd)
    else:
        pid, sync_r = spawn.fork_init(sys, cgroups, cg, bundle, config, stdio, cap_top,
                                      close_in_child=(report_fd,))
        for fd in stdio:
            os.close(fd)
        error = spawn.wait_ready(pid, sync_r)
    if error:
        os.write(report_fd, StartResult(os.getpid(), pid, error).to_bytes())
        return 1
    started = now_ms()
    write_json(os.path.join(bundle, STATE_FILE), {
        "id": container_id, "monitor_pid": os.getpid(), "init_pid": pid,
        "started_unix_ms": started, "monitor_start_time": process_start_time(os.getpid()),
        "init_start_time": process_start_time(pid),
    })
    os.write(report_fd, StartResult(os.getpid(), pid).to_bytes())
    os.close(report_fd)
    status = _pump_logs(os.path.join(bundle, LOG_FILE), out_r, err_r, pid, log_limits)
    oom = 0
    try:
        oom = cgroups.oom_killed(cg)
    except Exception:  # noqa: BLE001 - the record matters more than this detail
        pass
    if runtime:
        from . import ociclient

        # Before exit.json: once that exists the agent may restart this id.
        ociclient.delete(runtime, bundle, container_id)
    exit_code = os.waitstatus_to_exitcode(status)
    write_json(os.path.join(bundle, EXIT_FILE), {
        "exit_code": exit_code if exit_code >= 0 else 128 - exit_code,
        "signal": -exit_code if exit_code < 0 else 0,
        "oom_killed": oom > 0,
        "started_unix_ms": started,
        "finished_unix_ms": now_ms(),
    })
    return 0


# The writer's old name here (tests and tools use it).
_LogWriter = LogWriter


def _pump_logs(path: str, out_r: int, err_r: int, pid: int, limits: LogLimits) -> int:
    """Copies the container's output to the log until it exits; returns its wait status.

    The child's exit is watched through a pidfd as well as the pipes: a
    process that escaped into the background may hold the pipes open after
    the main process is gone (without a pid namespace nothing kills it).
    """
    writer = LogWriter(path, limits)
    pidfd = os.pidfd_open(pid)
    # select.poll rather than `selectors`, which imports collections.
    poller = select.poll()
    streams = {out_r: "stdout", err_r: "stderr"}
    for fd in (out_r, err_r, pidfd):
        poller.register(fd, select.POLLIN)
    open_pipes = 2
    exited = False
    while open_pipes and not exited:
        for fd, _ in poller.poll():
            if fd == pidfd:
                exited = True
                continue
            try:
                data = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                data = b""
            if data:
                writer.feed(streams[fd], data)
            else:
                poller.unregister(fd)
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
    writer.close()
    return status
