"""A container process's terminal: a pty of the container's own, its master sent away.

With `process.terminal` the process's stdin, stdout and stderr are the
slave side of a pseudo-terminal, which is also its controlling terminal,
and whoever started the runtime holds the master side. The protocol is
runc's, which podman's conmon, containerd's shim and crun all speak:

- the caller listens on a unix stream socket and passes its path as
  `--console-socket PATH`;
- the runtime connects to it before entering the container (the path is
  on the host's filesystem, out of reach after the mount namespace is
  joined or pivoted);
- inside the container, once its /dev/pts is mounted (after pivot_root
  for `create`/`run`, after setns for `exec`), the process opens /dev/ptmx
  there, so the slave is one of the container's own devpts (`tty` prints
  /dev/pts/0), unlocks it, sets process.consoleSize on it and sends the
  master over the socket: one sendmsg(2) whose data is the name
  "/dev/ptmx" (what runc sends; receivers ignore it) and whose one
  SCM_RIGHTS control message carries the descriptor (man 7 unix);
- then it closes its copy of the master, starts a session (setsid),
  makes the slave its controlling terminal (TIOCSCTTY, man 4 tty_ioctl)
  and puts it on descriptors 0, 1 and 2. With a mount namespace of its own
  the slave is also bound onto /dev/console, as runc does.

Runs in the container's process between fork and exec, so nothing here
logs or imports at call time (the `socket` module is imported up front
only by callers that use a terminal).
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from . import syscalls as sc

# linux/ioctl.h numbers (asm-generic): unlockpt(3) and ptsname(3) in ioctl form.
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
# sys/socket.h: a control message of descriptors.
SOL_SOCKET = 1
SCM_RIGHTS = 1
# What runc sends as the message's data (the master's name as it opened it).
MASTER_NAME = "/dev/ptmx"


def rights_message(name: str, fd: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """The data and ancillary part of the sendmsg(2) that passes `fd` (man 3 cmsg)."""
    return name.encode(), [(SOL_SOCKET, SCM_RIGHTS, struct.pack("i", fd))]


def send_fd(sock_fd: int, name: str, fd: int) -> None:
    """Sends `fd` over the connected unix socket `sock_fd`, runc's way."""
    import socket  # loaded up front by callers with a terminal (see the docstring)

    data, ancillary = rights_message(name, fd)
    sock = socket.socket(fileno=sock_fd)
    try:
        sent = sock.sendmsg([data], ancillary)
        if sent != len(data):
            raise OSError(f"console socket: sent {sent} of {len(data)} bytes")
    finally:
        sock.detach()   # the descriptor stays the caller's to close


def open_pty(dev: str = "/dev") -> tuple[int, int, str]:
    """A new pty from `dev`/ptmx: (master, slave, the slave's path under /dev/pts)."""
    master = os.open(f"{dev}/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
        slave = os.open(f"{dev}/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        os.close(master)
        raise
    return master, slave, f"/dev/pts/{number}"


def set_size(fd: int, rows: int, cols: int) -> None:
    """The window size a terminal reports (TIOCSWINSZ; SIGWINCH reaches its foreground)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def _bind_console(sys: sc.Syscalls, slave_path: str) -> None:
    """The slave bound onto /dev/console, as runc's mountConsole (a tmpfs /dev: made if absent)."""
    fd = os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_NOCTTY | os.O_CLOEXEC, 0o666)
    os.close(fd)
    sys.mount(slave_path, "/dev/console", "", sc.MS_BIND)


def attach(sys: sc.Syscalls, console_fd: int, size: tuple[int, int] | None,
           bind_console: bool) -> None:
    """Makes a pty, sends its master over `console_fd` and takes the slave as stdio and
    controlling terminal. `size` is process.consoleSize as (height, width)."""
    master, slave, slave_path = open_pty()
    try:
        if size is not None and size[0] and size[1]:
            set_size(slave, *size)
        if bind_console:
            _bind_console(sys, slave_path)
        send_fd(console_fd, MASTER_NAME, master)
    finally:
        os.close(master)
        os.close(console_fd)
    # A process that leads a process group cannot setsid: callers fork first.
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
