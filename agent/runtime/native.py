"""The native runtime, in-process: the agent's fast path for starting containers.

`NativeRuntime.start(bundle)` realizes an OCI bundle through the zygote
(zygote.py), which forks a monitor per container. Starting costs one message
on a socket pair plus the forks; no interpreter starts per container.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading

from .crilog import LogLimits
from .monitor import StartResult

log = logging.getLogger(__name__)


class StartError(Exception):
    """The runtime could not start a container; the message says which step failed."""


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
    import mctl.agent
    import mctl.common

    folders: list[str] = []
    for package in (mctl.agent, mctl.common):
        folder = os.path.dirname(list(package.__path__)[0])
        if folder not in folders:
            folders.append(folder)
    return [sys.executable, "-I", "-S", "-c", _ZYGOTE_BOOT, *folders, "--", str(fd), cgroup_root]


class NativeRuntime:
    name = "native"

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup",
                 log_limits: LogLimits | None = None) -> None:
        self._cgroup_root = cgroup_root
        self.log_limits = log_limits or LogLimits()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    def _ensure_zygote(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        if self._proc is not None:
            log.warning("zygote exited with %s; starting a new one", self._proc.returncode)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
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
        with self._lock:
            self._ensure_zygote()

    def start(self, container_id: str, bundle: str) -> StartResult:
        """Creates and starts the container of `bundle`; returns its monitor and init pids."""
        request = json.dumps(self._request(container_id, bundle)).encode()
        with self._lock:
            sock = self._ensure_zygote()
            try:
                sock.send(request)
                reply = sock.recv(65536)
            except OSError as e:
                self._close_locked()
                raise StartError(f"zygote: {e}") from e
        result = StartResult.from_bytes(reply)
        if result.error:
            raise StartError(result.error)
        return result

    def _request(self, container_id: str, bundle: str) -> dict[str, object]:
        return {"bundle": os.path.abspath(bundle), "id": container_id,
                "log": {"max_size": self.log_limits.max_size,
                        "max_files": self.log_limits.max_files}}

    def kill(self, container_id: str, bundle: str, pid: int, sig: int) -> None:
        """Sends `sig` to the container's init (`pid`, checked alive by the caller)."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def remove(self, container_id: str, bundle: str, cgroup: str) -> None:
        """Removes what the runtime keeps beyond the bundle and the cgroup: nothing here."""

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
        with self._lock:
            self._close_locked()
