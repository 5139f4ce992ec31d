"""The runtime's side of a container's terminal: --console-socket, or the pty proxied.

A process with `process.terminal` (or `exec --tty`) gets a pty made inside
the container (../terminal.py); its master goes to whoever listens on
`--console-socket` (podman's conmon, containerd's shim), which is runc's
protocol. The rules of when a socket is needed are runc's:

- the runtime does not stay (`create`, `run --detach`, `exec --detach`):
  a terminal needs --console-socket, else nobody would hold the master;
- the runtime stays (`run`, `exec` in the foreground): it holds the
  master itself and copies between it and its own stdin and stdout (as
  `runc run -t` does for an interactive shell), with its own terminal, if
  stdin is one, in raw mode meanwhile and its window size passed on, also
  on SIGWINCH. --console-socket is refused there, as runc refuses it;
- --console-socket without a terminal is refused (runc: "cannot use
  console socket if runc will not detach or allocate tty").
"""

from __future__ import annotations

import os
import socket

# The master's name as runc sends it is a few bytes; more is not a pty's.
_MAX_NAME = 4096


def check(terminal: bool, detach: bool, console_socket: str) -> str:
    """The usage problem of this combination, "" if none (the rules above)."""
    if console_socket and not terminal:
        return ("--console-socket: only for a process with a terminal "
                "(process.terminal, exec --tty)")
    if console_socket and not detach:
        return ("--console-socket: only when the runtime detaches (create, run --detach, "
                "exec --detach); in the foreground it proxies the terminal itself")
    if terminal and detach and not console_socket:
        return ("process.terminal: needs --console-socket when the runtime detaches "
                "(create, run --detach, exec --detach): nobody would hold the terminal")
    return ""


def open_for(terminal: bool, detach: bool, console_socket: str) -> tuple[int, Proxy | None]:
    """(the console socket descriptor the process gets, or -1; the proxy when the runtime
    holds the terminal itself). OSError with the one-line problem if the rules forbid it."""
    if not terminal and not console_socket:
        return -1, None
    problem = check(terminal, detach, console_socket)
    if problem:
        raise OSError(problem)
    if console_socket:
        return connect(console_socket), None
    proxy = Proxy()
    return proxy.child_end, proxy


def close_child_side(console_fd: int, proxy: Proxy | None) -> None:
    """Once the process is forked: the runtime's copy of what the process got."""
    if proxy is not None:
        proxy.close_child_end()
    elif console_fd >= 0:
        os.close(console_fd)


def connect(path: str) -> int:
    """A stream connection to the caller's console socket, as a close-on-exec descriptor."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise OSError(f"--console-socket {path}: {e.strerror or e}") from None
    return sock.detach()


def receive_fd(sock_fd: int) -> int:
    """The descriptor a process sent over `sock_fd` (terminal.send_fd); OSError if none came."""
    sock = socket.socket(fileno=sock_fd)
    try:
        _, fds, _, _ = socket.recv_fds(sock, _MAX_NAME, 1)
    finally:
        sock.detach()
    if not fds:
        raise OSError("process.terminal: the process sent no terminal (did its setup fail?)")
    return fds[0]


class Proxy:
    """The terminal of a foreground `run`/`exec`, held and copied by the runtime."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ours = ours.detach()
        # Given to the process as its console socket; close_child_end after the fork.
        self.child_end = theirs.detach()
        os.set_inheritable(self._ours, False)
        os.set_inheritable(self.child_end, False)
        self.master = -1
        self._saved: list | None = None   # our terminal's attributes while it is raw

    def close_child_end(self) -> None:
        if self.child_end >= 0:
            os.close(self.child_end)
            self.child_end = -1

    def receive(self, size_given: bool) -> None:
        """Takes the master; our window size goes to it unless process.consoleSize was given."""
        self.close_child_end()
        try:
            self.master = receive_fd(self._ours)
        finally:
            os.close(self._ours)
            self._ours = -1
        if os.isatty(0):
            import termios
            import tty

            if not size_given:
                self.resize()
            self._saved = termios.tcgetattr(0)
            tty.setraw(0)

    def resize(self) -> None:
        """Our terminal's size onto the container's (on SIGWINCH too)."""
        from .. import terminal

        if self.master >= 0 and os.isatty(0):
            try:
                terminal.set_size(self.master, *terminal.get_size(0))
            except OSError:
                pass

    def pump(self, pid: int) -> int:
        """Copies stdin -> master and master -> stdout until `pid` has exited and the
        terminal is drained; returns its wait status."""
        import select

        status: int | None = None
        watch = [self.master, 0]
        try:
            while True:
                if status is None:
                    done, wstatus = os.waitpid(pid, os.WNOHANG)
                    if done:
                        status = wstatus
                # After the exit: only what is already buffered, then stop.
                ready, _, _ = select.select(watch, [], [], 0 if status is not None else 0.1)
                if status is not None and self.master not in ready:
                    return status
                if 0 in ready:
                    data = os.read(0, 65536)
                    if data:
                        _write_all(self.master, data)
                    else:
                        watch.remove(0)     # our stdin is at its end; keep the output
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:         # EIO: every slave descriptor is closed
                        data = b""
                    if data:
                        _write_all(1, data)
                    elif status is None:
                        _, wstatus = os.waitpid(pid, 0)
                        return wstatus
                    else:
                        return status
        finally:
            self.close()

    def close(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)
            self._saved = None
        for fd in (self.master, self._ours):
            if fd >= 0:
                os.close(fd)
        self.master = self._ours = -1
        self.close_child_end()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
