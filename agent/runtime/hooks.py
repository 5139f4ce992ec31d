"""OCI hooks: programs the runtime runs at set points of a container's lifecycle.

runtime-spec config.md "POSIX-platform Hooks" and runtime.md "Lifecycle".
A hook is a program (absolute `path`, `args`, `env`, `timeout` in seconds)
that gets the container's state, the JSON `mctl-runtime state` prints
(oci/cli_state.py), on its stdin. Where and when each stage runs here:

    stage            operation   runs in                                 status    pid
    prestart         create      the runtime, its own namespaces         created   host pid
    createRuntime    create      the runtime, right after prestart       creating  host pid
    createContainer  create      the init: its namespaces, mounts made,  creating  1 (own pid
                                 before pivot_root (host paths resolve)            namespace)
    startContainer   start, run  the init, after `start`, pivoted, as    created   1
                                 the container's user, just before exec
    poststart        start, run  the runtime, once the program exec'd    running   host pid
    poststop         delete, run the runtime, once the container is gone stopped   0

`prestart` is deprecated; as runc does, it runs at createRuntime time, just
before those hooks. The pids are what runc passes (crun passes 0 inside).

The sync point. createRuntime hooks run in the runtime's namespaces, yet
after the init has made the container's namespaces and mounts and before
it pivots, so the init must stop there and wait. Only when the config has
prestart or createRuntime hooks, the spawn's sync channel is a socket pair
instead of the usual close-on-exec pipe (spawn.fork_init): the init writes
one NUL byte (`REQUEST`; its error reports are text and never start with
one), blocks reading, and goes on when the runtime answers `GO_ON`; if a
hook fails the runtime closes its end instead and the init exits. In a user
namespace the init is the second child, which inherited the same channel.

Failures. A prestart, createRuntime, createContainer or startContainer hook
that exits non-zero, is killed, cannot be run or outlives its timeout fails
the operation with one line naming it, `hooks.createRuntime[0] (/usr/bin/x):
exited 1: <its stderr's last lines>`; the runtime then destroys the container
and runs the poststop hooks (runtime.md: "continue the lifecycle at step
12"), as runc 1.1 does. A poststart or poststop failure is a warning and the
operation succeeds (runtime.md's wording; runc 1.1 instead fails `start` on a
poststart failure and kills the container).

Running one hook: posix_spawn (the Python process is not forked), the hook
in a session of its own, its stdin a memfd holding the state (never blocks,
whatever the hook reads), stdout and stderr into pipes read until the hook
exits. A background child of the hook may keep the pipes open: the hook's
own exit (a pidfd) ends the wait, not end-of-file. A timeout kills the
hook's whole process group; runc kills only the hook process and then waits
for its pipes, so a 2 s timeout on `sh -c 'sleep 30'` took runc 1.1.5 30 s
here. `env` absent: the runtime's own environment, as runc and crun do
(Go's exec.Cmd with a nil Env); `args` absent: argv is just the path. The
working directory is the bundle for runtime hooks (runc's and crun's), the
rootfs for createContainer and process.cwd for startContainer (as runc
and crun do).

Only imported when config.json has hooks: the start path pays nothing else.
"""

from __future__ import annotations

import os
import select
import time

from . import cjson
from .oci.config import HOOK_STAGES
from .signals import SIGKILL, SIGPIPE, SIGXFSZ

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .oci.config import Hook, Hooks

# The init's request on the sync channel ("run the createRuntime hooks now")
# and the runtime's answer. One byte each: the init waits for the answer
# before it writes anything else, so a read is never two messages.
REQUEST = b"\0"
GO_ON = b"0"

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"

_KEEP = 16 * 1024      # of each output stream, for the error message
_TAIL = 400            # characters of output in the one-line error


class HookFailed(Exception):
    """A hook failed; the message is the whole line, naming the hook."""


def _tail(data: bytes) -> str:
    """The end of a hook's output as one line (its last lines joined by " | ")."""
    lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
    text = " | ".join(line for line in lines if line)
    return text if len(text) <= _TAIL else "..." + text[-_TAIL:]


def _env(entries: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def run_one(hook: Hook, name: str, state: bytes, cwd: str | None) -> None:
    """Runs one hook to its end; HookFailed with one line if it did not succeed.

    `name` is the hook's place in config.json, e.g. "hooks.poststart[1]";
    `cwd` None: this process's own.
    """
    label = f"{name} ({hook.path})"
    memfd = os.memfd_create("oci-state", os.MFD_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(memfd, state)
        os.lseek(memfd, 0, os.SEEK_SET)
        # posix_spawn has no chdir action in Python: change ours around it.
        here = -1 if cwd is None else os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if cwd is not None:
                try:
                    os.chdir(cwd)
                except OSError as e:
                    raise HookFailed(f"{label}: cannot run in {cwd}: {e.strerror}") from None
            pid = os.posix_spawn(
                hook.path, list(hook.args) or [hook.path],
                os.environ if hook.env is None else _env(hook.env),
                file_actions=[(os.POSIX_SPAWN_DUP2, memfd, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                              (os.POSIX_SPAWN_DUP2, err_w, 2)],
                # Its own session, so a timeout kills its children too; and the
                # signals Python ignores back to default (ignoring survives exec).
                setsid=True, setsigdef=(SIGPIPE, SIGXFSZ))
        except OSError as e:
            raise HookFailed(f"{label}: cannot run: {e.strerror or e}") from None
        finally:
            if here >= 0:
                os.fchdir(here)
                os.close(here)
    finally:
        for fd in (memfd, out_w, err_w):
            os.close(fd)
    try:
        status, out, err = _wait(pid, out_r, err_r, hook.timeout)
    finally:
        os.close(out_r)
        os.close(err_r)
    if status is None:
        raise HookFailed(f"{label}: timed out after {hook.timeout}s")
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return
    what = f"exited {code}" if code > 0 else f"killed by signal {-code}"
    tail = _tail(err) or _tail(out)
    raise HookFailed(f"{label}: {what}: {tail}" if tail else f"{label}: {what}")


def _wait(pid: int, out_r: int, err_r: int,
          timeout: int | None) -> tuple[int | None, bytes, bytes]:
    """Reads the hook's output until it exits: (wait status or None on timeout, out, err)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (out_r, err_r, pidfd):
        poller.register(fd, select.POLLIN)
    kept = {out_r: b"", err_r: b""}
    try:
        exited = False
        while not exited:
            wait_ms = -1
            if deadline is not None:
                # Checked on every turn: a hook that keeps writing still times out.
                left = deadline - time.monotonic()
                if left <= 0:
                    try:
                        os.killpg(pid, SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    return None, kept[out_r], kept[err_r]
                wait_ms = int(left * 1000) + 1
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    exited = True
                elif data := os.read(fd, 65536):
                    kept[fd] = (kept[fd] + data)[-_KEEP:]
                else:
                    poller.unregister(fd)
        _, status = os.waitpid(pid, 0)
        # What the hook wrote before it exited is in the pipes now; a child it
        # left running may hold them open, so take what is there, no more.
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            try:
                while data := os.read(fd, 65536):
                    kept[fd] = (kept[fd] + data)[-_KEEP:]
            except BlockingIOError:
                pass
        return status, kept[out_r], kept[err_r]
    finally:
        os.close(pidfd)


class Lifecycle:
    """One container's hooks and the state document they are given."""

    __slots__ = ("hooks", "state", "bundle")

    def __init__(self, hooks: Hooks, state: dict[str, object]) -> None:
        """`state`: the container's OCI state (oci/cli_state.py, Container.oci_state_as)."""
        self.hooks = hooks
        self.state = state
        self.bundle = str(state.get("bundle", "/"))

    @property
    def runtime_sync(self) -> bool:
        """Whether the init must stop before pivot_root for the runtime's hooks."""
        return bool(self.hooks.prestart or self.hooks.create_runtime)

    def _state(self, status: str, pid: int) -> bytes:
        return cjson.dumps({**self.state, "status": status, "pid": pid}).encode()

    def run(self, stage: str, status: str, pid: int, cwd: str | None) -> None:
        """Runs every hook of `stage` in order; the first failure raises HookFailed."""
        hooks = getattr(self.hooks, HOOK_STAGES[stage])
        if hooks:
            state = self._state(status, pid)
            for i, hook in enumerate(hooks):
                run_one(hook, f"hooks.{stage}[{i}]", state, cwd)

    def run_all(self, stage: str, status: str, pid: int) -> list[str]:
        """Runs every hook of `stage` (poststart, poststop) in the bundle; returns the failures.

        Each runs even if one before it failed: their failures are warnings.
        """
        failures = []
        hooks = getattr(self.hooks, HOOK_STAGES[stage])
        if hooks:
            state = self._state(status, pid)
            for i, hook in enumerate(hooks):
                try:
                    run_one(hook, f"hooks.{stage}[{i}]", state, self.bundle)
                except HookFailed as e:
                    failures.append(str(e))
        return failures

    # -- the runtime's side of the sync channel --------------------------------------------

    @staticmethod
    def sync_pair() -> tuple[int, int]:
        """(runtime's end, init's end) of a close-on-exec socket pair, the sync channel."""
        # _socket, not socket: the wrapper module would cost `mctl-runtime run`
        # its import (selectors and more) for this one call (bench/README.md,
        # "Import costs on the start path"). Sockets are made close-on-exec
        # (PEP 446).
        import _socket

        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        return ours.detach(), theirs.detach()

    def serve(self, pid: int, fd: int) -> bytes:
        """Runtime side: answers the init's request with prestart and createRuntime hooks.

        Returns what the init reported (b"" once it exec'd or handed over),
        or a hook's failure; then the caller closes `fd`, which ends an init
        still waiting for the answer.
        """
        first = _read(fd)
        if first != REQUEST:
            return first + _read_all(fd) if first else b""
        try:
            # crun passes "created": the spec runs prestart hooks once the
            # runtime environment is created (runtime.md "Lifecycle", step 6).
            self.run("prestart", CREATED, pid, self.bundle)
            self.run("createRuntime", CREATING, pid, self.bundle)
        except HookFailed as e:
            return str(e).encode()
        try:
            os.write(fd, GO_ON)
        except BrokenPipeError:
            pass  # the init is gone; what it said, if anything, is still to read
        return _read_all(fd)

    # -- the init's side, between fork and exec ---------------------------------------------

    def before_pivot(self, sync_fd: int, rootfs: str) -> None:
        """In the init, namespaces and mounts made: the runtime's hooks, then createContainer."""
        if self.runtime_sync:
            os.write(sync_fd, REQUEST)
            if _read(sync_fd) != GO_ON:
                # The runtime reports the hook that failed; nothing to add.
                os._exit(127)
        self.run("createContainer", CREATING, os.getpid(), rootfs)

    def start_container(self) -> None:
        """In the init, after `start`, just before exec: the startContainer hooks.

        In the process's cwd, as runc and crun run them.
        """
        self.run("startContainer", CREATED, os.getpid(), None)


def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 4096)
        except InterruptedError:
            continue


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := _read(fd):
        chunks.append(chunk)
    return b"".join(chunks)
