"""The native runtime, in-process: the agent's fast path for starting containers.

`NativeRuntime.start(bundle)` realizes an OCI bundle through the zygote
(zygote.py), which forks a monitor per container. Starting costs one message
on a socket pair plus the forks; no interpreter starts per container.
`Zygote` is the agent's end of that socket pair; the OCI command runtime
(oci/command.py) starts its monitors through it too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading

from .api import StartError
from .containerlog_writer import LogLimits
from .state import Exit, StartResult, State, read_exit, read_state

log = logging.getLogger(__name__)


# Run by `python -I -S -c`: makes `mctl` importable from the folders given
# before "--" (no `site`, so no site-packages) and serves.
_ZYGOTE_BOOT = (
    "import sys; end = sys.argv.index('--'); mctl = type(sys)('mctl'); "
    "mctl.__path__ = sys.argv[1:end]; sys.modules['mctl'] = mctl; del sys.argv[1:end + 1]; "
    "from mctl.agent.runtime.zygote import main; main()"
)


def zygote_argv(fd: int, cgroup_root: str) -> list[str]:
    """The command that starts a zygote serving on descriptor `fd`.

    Without `site` (-S) and isolated from PYTHON* variables (-I): the zygote
    needs only the standard library and mctl's runtime, and every module
    `site` would load (setuptools' editable finder, pathlib, re, ...) would sit
    in the memory that each container start forks and then tears down. The
    folders holding mctl's packages are passed in, as this process found them.
    """
    import mctl.common

    # The folder holding agent/ (this file is agent/runtime/native.py there)
    # and the one holding common/: the same one, unless installed apart.
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    folders = [here]
    common = os.path.dirname(list(mctl.common.__path__)[0])
    if common not in folders:
        folders.append(common)
    return [sys.executable, "-I", "-S", "-c", _ZYGOTE_BOOT, *folders, "--", str(fd), cgroup_root]


class Zygote:
    """The agent's end of the zygote: started on first use, and again if it died.

    Starts from several threads are in flight at once (zygote.py tags each
    request and its reply). Whichever waiting thread finds no one reading
    the socket reads it for all: it files each reply under its tag and
    wakes the others, until its own has come, then leaves the reading to
    the next waiter. No thread of its own is kept for that.
    """

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup") -> None:
        self._cgroup_root = cgroup_root
        # Guards all below; sends happen under it too (one message each).
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._next_tag = 0
        # Tag -> reply (bytes), or the error that lost it (the zygote died).
        self._replies: dict[int, bytes | StartError] = {}
        # Tag -> the socket it was sent on (a zygote started anew has another).
        self._waiting: dict[int, socket.socket] = {}
        self._reading = False

    @property
    def pid(self) -> int:
        """The zygote's pid; 0 before it started."""
        return self._proc.pid if self._proc is not None else 0

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        if self._proc is not None:
            log.warning("zygote exited with %s; starting a new one", self._proc.returncode)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The zygote's PR_SET_PDEATHSIG fires when the *thread* that forked it
        # ends: it is started from long-lived threads (the agent's main
        # thread by warm_up, else a thread of the node loop's start pool).
        self._proc = subprocess.Popen(
            zygote_argv(theirs.fileno(), self._cgroup_root),
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._sock = ours
        log.info("zygote started pid=%d", self._proc.pid)
        return ours

    def warm_up(self) -> None:
        """Starts the zygote now, so the first container does not pay for it."""
        with self._cond:
            self._ensure()

    def start(self, container_id: str, bundle: str, log_limits: LogLimits,
              runtime_argv: list[str] | None = None) -> StartResult:
        """Has a monitor start the container of `bundle` (zygote.py's protocol); StartError.

        `runtime_argv`: the OCI runtime command that realizes the bundle, or
        None for the monitor to do it itself. Safe to call from several
        threads: their starts run at once.
        """
        doc: dict[str, object] = {
            "bundle": os.path.abspath(bundle), "id": container_id,
            "log": {"max_size": log_limits.max_size, "max_files": log_limits.max_files}}
        if runtime_argv is not None:
            doc["runtime"] = runtime_argv
        with self._cond:
            self._next_tag += 1
            tag = self._next_tag
            sock = self._ensure()
            try:
                sock.send(b"%d\n" % tag + json.dumps(doc).encode())
            except OSError as e:
                self._fail_locked(sock, StartError(f"zygote: {e}"))
                raise StartError(f"zygote: {e}") from e
            self._waiting[tag] = sock
        reply = self._await(tag, sock)
        if isinstance(reply, StartError):
            raise reply
        result = StartResult.from_bytes(reply)
        if result.error:
            raise StartError(result.error)
        return result

    def _await(self, tag: int, sock: socket.socket) -> bytes | StartError:
        """The reply to `tag`: read by this thread or filed by the one reading."""
        with self._cond:
            while True:
                if tag in self._replies:
                    return self._replies.pop(tag)
                if not self._reading:
                    self._reading = True
                    break
                self._cond.wait()
        try:
            while True:
                try:
                    msg = sock.recv(65536)
                except OSError as e:
                    msg, error = b"", f"zygote: {e}"
                else:
                    error = "zygote: exited before replying"
                with self._cond:
                    if not msg:
                        self._fail_locked(sock, StartError(error))
                    else:
                        got, _, body = msg.partition(b"\n")
                        if self._waiting.pop(int(got), None) is not None:
                            self._replies[int(got)] = body
                    self._cond.notify_all()
                    if tag in self._replies:
                        return self._replies.pop(tag)
        finally:
            with self._cond:
                self._reading = False
                self._cond.notify_all()

    def _fail_locked(self, sock: socket.socket | None, error: StartError) -> None:
        """The zygote of `sock` is lost: every start waiting on it fails; the next start
        makes a new one."""
        for tag in [t for t, s in self._waiting.items() if s is sock or sock is None]:
            del self._waiting[tag]
            self._replies[tag] = error
        if sock is None or sock is self._sock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._cond:
            self._fail_locked(None, StartError("zygote: closed"))


class NativeRuntime:
    """mctl's own runtime (the `Runtime` protocol, api.py): the monitor realizes the bundle."""

    name = "native"

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup",
                 log_limits: LogLimits | None = None) -> None:
        self.log_limits = log_limits or LogLimits()
        self.zygote = Zygote(cgroup_root)

    def warm_up(self) -> None:
        self.zygote.warm_up()

    def start(self, container_id: str, bundle: str) -> StartResult:
        return self.zygote.start(container_id, bundle, self.log_limits)

    def kill(self, container_id: str, bundle: str, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def state(self, bundle: str) -> State | None:
        return read_state(bundle)

    def exit(self, bundle: str) -> Exit | None:
        return read_exit(bundle)

    def delete(self, container_id: str, bundle: str, cgroup: str) -> None:
        """Nothing to remove: this runtime keeps nothing beyond the bundle and the cgroup."""

    def close(self) -> None:
        self.zygote.close()
