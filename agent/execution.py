"""`mctl exec` on the node: start a command in a container and relay its stdio.

The command is started through runtime/nsexec.py as a plain child process
(fork+exec from a threaded process is safe; fork alone is not), which joins
the container's cgroup and namespaces and drops to its privileges. Its
stdio is either three pipes, or with a terminal the slave side of a pty
whose master the agent reads and writes (stdout and stderr then arrive
merged, as with `docker exec -t`). Inputs from the caller (stdin, resizes)
are fed by a thread; outputs are streamed back until the command exits.
When the caller hangs up, the command gets SIGHUP, then SIGKILL.

What goes wrong inside the container (it is at its pids limit, the command
does not exist) nsexec says in one line on the command's stderr, with
status 126 or 127, as `docker exec` does; what goes wrong here (the node
cannot start a process at all) is an `ExecError`, one line for the caller.
"""

from __future__ import annotations

import fcntl
import logging
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

from mctl.v1 import control_pb2

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# <asm-generic/ioctls.h>; Python's termios does not export these two.
TIOCGPTN = 0x80045430       # the pty's number
TIOCSPTLCK = 0x40045431     # (un)lock the slave
KILL_AFTER_SECONDS = 2.0


def nsexec_argv(init_pid: int, bundle: str, command: list[str], tty: bool = False) -> list[str]:
    """The command line that runs `command` inside the container (runtime/nsexec.py)."""
    return [sys.executable, "-m", "mctl.agent.runtime.nsexec", "--pid", str(init_pid),
            "--bundle", bundle, *(["--tty"] if tty else []), "--", *command]


class ExecError(OSError):
    """The node could not start the exec; the message is one line for the user."""


def _spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    except OSError as e:
        # EAGAIN or ENOMEM from fork(2) (the agent's own limits), E2BIG from
        # execve(2) (a huge command line): the user's to read, not a bug to trace.
        raise ExecError(f"the node cannot start the command: {e.strerror or e}") from None


class Exec:
    """One running exec: the process and the fds the agent relays."""

    def __init__(self, init_pid: int, bundle: str, start: control_pb2.ExecStart,
                 container: str) -> None:
        self.container = container
        self.tty = start.tty
        argv = nsexec_argv(init_pid, bundle, list(start.command), start.tty)
        self.master = -1
        self.stdin_fd = -1
        self._lock = threading.Lock()
        if start.tty:
            self.master, slave = container_pty(init_pid)
            try:
                if start.HasField("size"):
                    set_size(self.master, start.size)
                stdin = slave
                self.proc = _spawn(argv, stdin=stdin, stdout=slave, stderr=slave,
                                   close_fds=True, start_new_session=True)
            finally:
                os.close(slave)
            self.stdin_fd = self.master
            self.outputs = {self.master: "stdout"}
        else:
            self.proc = _spawn(
                argv, stdin=subprocess.PIPE if start.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                start_new_session=True)
            if self.proc.stdin is not None:
                self.stdin_fd = self.proc.stdin.fileno()
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self.outputs = {self.proc.stdout.fileno(): "stdout",
                            self.proc.stderr.fileno(): "stderr"}
        log.info("container=%s exec pid=%d tty=%s command=%s", container, self.proc.pid,
                 start.tty, " ".join(start.command)[:200])

    def feed(self, inputs: Iterator[control_pb2.ExecInput]) -> None:
        """Copies the caller's stdin and resizes to the command (a thread)."""
        try:
            for msg in inputs:
                if msg.HasField("resize") and self.master >= 0:
                    set_size(self.master, msg.resize)
                if msg.stdin and self.stdin_fd >= 0:
                    _write_all(self.stdin_fd, msg.stdin)
                if msg.stdin_closed:
                    self._close_stdin()
        except Exception as e:  # noqa: BLE001 - caller gone or command gone: both end it
            log.debug("container=%s exec input ended: %s", self.container, e)
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.tty:
            return      # the terminal stays; the user's ^D travels as a byte
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.stdin_fd = -1

    def outputs_until_exit(self) -> Iterator[control_pb2.ExecOutput]:
        sel = selectors.DefaultSelector()
        for fd in self.outputs:
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(self.outputs)
        while open_fds:
            for key, _ in sel.select(timeout=1.0):
                try:
                    data = os.read(key.fd, CHUNK)
                except OSError:      # EIO: the pty's last slave closed
                    data = b""
                if not data:
                    sel.unregister(key.fd)
                    open_fds.discard(key.fd)
                    continue
                if self.outputs[key.fd] == "stdout":
                    yield control_pb2.ExecOutput(stdout=data)
                else:
                    yield control_pb2.ExecOutput(stderr=data)
            if self.tty and self.proc.poll() is not None and not _readable(self.master):
                break   # a background process may hold the pty open; the command is done
        sel.close()
        code = self.proc.wait()
        log.info("container=%s exec pid=%d exited code=%d", self.container, self.proc.pid, code)
        yield control_pb2.ExecOutput(exited=True, exit_code=code)

    def stop(self) -> None:
        """The caller hung up: hang up on the command, then kill it."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGHUP)
                self.proc.wait(timeout=KILL_AFTER_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()

    def close(self) -> None:
        with self._lock:     # the RPC's end and the caller's hang-up may race here
            if self.master >= 0:
                os.close(self.master)
                self.master = -1
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None and not f.closed:
                    f.close()


def run(init_pid: int, bundle: str, container: str,
        first: control_pb2.ExecInput, inputs: Iterator[control_pb2.ExecInput],
        on_hangup: Callable[[Callable[[], None]], object]) -> Iterator[control_pb2.ExecOutput]:
    """Starts the exec `first` asks for and streams its outputs to the end."""
    ex = Exec(init_pid, bundle, first.start, container)
    on_hangup(ex.stop)
    threading.Thread(target=ex.feed, args=(inputs,), name=f"exec-{ex.proc.pid}",
                     daemon=True).start()
    try:
        yield from ex.outputs_until_exit()
    finally:
        ex.close()


def container_pty(init_pid: int) -> tuple[int, int]:
    """A pty from the container's own devpts, so that inside it `tty` names it.

    A pty of the host's /dev/pts would work as a terminal but have no name in
    the container's /dev/pts (a separate devpts instance).
    """
    root = f"/proc/{init_pid}/root/dev"
    master = os.open(f"{root}/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))      # unlockpt
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
        slave = os.open(f"{root}/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        raise
    return master, slave


def set_size(fd: int, size: control_pb2.TerminalSize) -> None:
    import termios  # terminals only: not in an idle agent

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _readable(fd: int) -> bool:
    sel = selectors.DefaultSelector()
    try:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout=0))
    finally:
        sel.close()
