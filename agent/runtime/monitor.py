"""The per-container monitor: the process that owns one container.

Like conmon for CRI-O, a small monitor process sits between the agent and
the container, so the container outlives an agent restart:
- it creates the container's cgroup from config.json, forks the container's
  first process (see process.py) and learns whether exec succeeded through a
  close-on-exec pipe: EOF means exec happened, bytes are the error;
- it holds the container's stdout and stderr pipes and writes them to
  `container.log` in the CRI log format (`<RFC3339Nano> <stream> F <line>`),
  rotated at a size (containerlog_writer.py);
- it waits for the container to exit and writes `exit.json` (exit code,
  signal, OOM kill, time), so the result is recorded even while no agent runs.

It is a session leader of its own and is never the agent's child, so signals
to the agent's process group do not reach it.
"""

from __future__ import annotations

import errno
import os
import select
import signal

from mctl.common.procfs import start_time as process_start_time

from . import spawn
from . import syscalls as sc
from .containerlog_writer import MAX_LINE, LogLimits, LogWriter
from .spawn import cgroup_path, limits_of, read_all
from .state import EXIT_FILE, LOG_FILE, STATE_FILE, Exit, StartResult, State, now_ms, write_json

# Imports are kept light: this module is loaded by the zygote, which every
# monitor and container process is forked from, so whatever it holds in
# memory each fork copies the page tables of and each exec tears down
# (see zygote.py). typing.TYPE_CHECKING without importing typing:
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from .cgroups.base import CgroupDriver
    from .oci.config import Config

__all__ = ["MAX_LINE", "LogLimits", "Prepared", "cgroup_path", "limits_of", "read_all", "run"]


class Prepared:
    """What a monitor sets up before it knows its container; a spare does it ahead.

    A new session, /dev/null for its own stdio, the signal dispositions, the
    container's stdout and stderr pipes, and the container's init forked
    ahead (spawn.InitAhead) when `ahead` is given: zygote.py's spare monitor
    does all of it before its request arrives, so none of it is on a start's
    path. `ahead` is the warm-up the init runs before it waits (zygote.py),
    `go_r` the pipe its request comes on.
    """

    def __init__(self, sys: sc.Syscalls, cap_top: int, close_in_child: tuple[int, ...],
                 ahead: Callable[[], None] | None = None, go_r: int = -1) -> None:
        os.setsid()
        # Like conmon: hold none of the agent's stdio, or whoever reads the
        # agent's output never sees end-of-file while a container lives.
        null_rw = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null_rw, fd)
        os.close(null_rw)
        # SIG_DFL before the init is forked: with SIGCHLD ignored (the
        # zygote's setting) the kernel would reap it and waitpid could not.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        null = os.open("/dev/null", os.O_RDONLY)
        self.stdio = (null, out_w, err_w)
        self.init: spawn.InitAhead | None = None
        if ahead is not None and go_r >= 0:
            try:
                self.init = spawn.InitAhead(sys, self.stdio, cap_top,
                                            (self.out_r, self.err_r, *close_in_child), ahead,
                                            go_r)
            except OSError:
                pass  # forked at the request instead (fork_init), which reports what fails
        if go_r >= 0:
            os.close(go_r)   # the init's alone


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
    prepared: Prepared | None = None,
) -> NoReturn:
    """The monitor's whole life, in a freshly forked process. Never returns.

    `runtime`, if given, is the argv prefix of an OCI runtime command
    (oci/client.py) that realizes the bundle instead of this process forking
    the container itself. `log_limits` caps container.log (containerlog_writer.py).
    `prepared`: what a spare monitor set up before its request (Prepared).
    """
    code = 1
    try:
        code = _monitor(sys, cgroups, bundle, container_id, config, report_fd, cap_top,
                        runtime, log_limits or LogLimits(),
                        prepared or Prepared(sys, cap_top, (report_fd,)))
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
    prepared: Prepared,
) -> int:
    cg = cgroup_path(config)
    out_r, err_r, stdio = prepared.out_r, prepared.err_r, prepared.stdio
    start_times: tuple[int, int] | None = None
    if runtime and prepared.init is not None:
        prepared.init.cancel()
    if runtime:
        from .oci import client

        # Like containerd-shim: the init that `create` leaves behind is
        # re-parented to us, so we wait for it and see its real exit status.
        sys.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        pid, error = client.create_and_start(runtime, bundle, container_id, stdio)
        for fd in stdio:
            os.close(fd)
    else:
        taken = prepared.init.take(cgroups, cg, config) if prepared.init is not None else None
        pid, sync_r = taken or spawn.fork_init(sys, cgroups, cg, bundle, config, stdio,
                                               cap_top, close_in_child=(report_fd, out_r, err_r))
        for fd in stdio:
            os.close(fd)
        # Read while the child sets up, off the start's critical path: a start
        # time is set at fork and kept across exec (man 5 proc, field 22).
        start_times = (process_start_time(os.getpid()), process_start_time(pid))
        error = spawn.wait_ready(pid, sync_r)
    if error:
        os.write(report_fd, StartResult(os.getpid(), pid, error).to_bytes())
        return 1
    started = now_ms()
    if start_times is None:
        start_times = (process_start_time(os.getpid()), process_start_time(pid))
    state = State(container_id, os.getpid(), pid, started, *start_times)
    write_json(os.path.join(bundle, STATE_FILE), state.to_json())
    os.write(report_fd, StartResult(os.getpid(), pid).to_bytes())
    os.close(report_fd)
    # Recorded and reported: from now on it outlives the zygote and the agent
    # (until now it died with them: zygote.py's Spare).
    sys.prctl(sc.PR_SET_PDEATHSIG, 0)
    status = _pump_logs(os.path.join(bundle, LOG_FILE), out_r, err_r, pid, log_limits)
    oom = 0
    try:
        oom = cgroups.oom_killed(cg)
    except Exception:  # noqa: BLE001 - the record matters more than this detail
        pass
    if runtime:
        from .oci import client

        # Before exit.json: once that exists the agent may restart this id.
        client.delete(runtime, bundle, container_id)
    exit = Exit.of_wait_status(status, oom > 0, started)
    write_json(os.path.join(bundle, EXIT_FILE), exit.to_json())
    return 0


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
