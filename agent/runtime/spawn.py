"""Forking a container's first process: the step both native front ends share.

The in-agent monitor (monitor.py) and the `mctl-runtime` command (oci/cli.py)
start a container the same way: unshare the pid namespace (man 7
pid_namespaces: only children enter it, so the next fork is pid 1), fork,
and run process.exec_container in the child; make the cgroup that
config.json's linux.cgroupsPath and linux.resources describe. The parent
learns the outcome through a close-on-exec pipe: end-of-file means the child
got as far as exec (or as `before_exec` chose to report success), bytes are
the error.

The cgroup is made after the fork, while the child makes its namespaces
(`cgroup_later`): both take about a millisecond and they do not depend on
each other, so on a machine with a second core the start waits for one of
them, not both (bench/README.md, "The start path, third pass"). The child
gets the files to join over a pipe and joins before it makes its cgroup
namespace, whose root must be the container's cgroup; runc's nsexec waits
for its parent's cgroup set-up at the same point. The child's work before
that (a new network namespace, `lo`) is charged to the caller's cgroup, as
runc's is. With a user namespace, or namespaces joined by a path that
could change how the cgroup files resolve, the cgroup is made first.

When config.json has prestart or createRuntime hooks, the channel is a
socket pair instead, on which the init asks the runtime to run them
(hooks.py); without hooks nothing is added to this path.

With a user namespace the child unshares it before anything else and forks
pid 1 itself (process.enter_user_namespace); this side writes the child's
id mappings when told (userns.map_child) and, as a child subreaper (man 2
prctl), inherits pid 1 when the first child exits, so it waits for it as
its own child either way.

Kept light on imports: `mctl-runtime run` pays for every module it loads.
"""

from __future__ import annotations

import gc
import os

from . import process, userns
from . import syscalls as sc
from .signals import SIGKILL

# typing.TYPE_CHECKING without importing typing, which `mctl-runtime run` would
# pay for at every call (bench/README.md, "Import costs on the start path");
# type checkers treat a module-level TYPE_CHECKING = False the same way.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from .cgroups.base import CgroupDriver, Limits
    from .hooks import Lifecycle
    from .oci.config import Config


def cgroup_path(config: Config) -> str:
    """linux.cgroupsPath as a path relative to each hierarchy's root."""
    return config.cgroups_path.strip("/")


def limits_of(config: Config) -> Limits:
    from .cgroups.base import Limits

    res = config.resources

    def limit(value: int | None) -> int | None:
        # OCI writes "unlimited" as -1 (or leaves it out); the driver wants None.
        return value if value is not None and value > 0 else None

    return Limits(cpu_quota_us=limit(res.cpu_quota), cpu_period_us=res.cpu_period or 100_000,
                  memory_bytes=limit(res.memory_limit), pids=limit(res.pids_limit))


def fork_init(
    sys: sc.Syscalls,
    cgroups: CgroupDriver,
    cgroup: str,
    bundle: str,
    config: Config,
    stdio: tuple[int, int, int],
    cap_top: int,
    before_exec: Callable[[int], None] | None = None,
    close_in_child: tuple[int, ...] = (),
    lifecycle: Lifecycle | None = None,
    console_fd: int = -1,
    cgroup_extras: Callable[[], None] | None = None,
) -> tuple[int, int]:
    """Creates the cgroup and forks the container's init; returns (pid, sync read end).

    Read the sync pipe with `wait_ready`. The caller must be single-threaded
    (the child runs Python between fork and exec). `lifecycle` runs
    config.json's hooks (hooks.py); a config with hooks needs one.
    `console_fd` is the connected --console-socket for process.terminal
    (terminal.py); the child closes it, the caller keeps its own copy.
    `cgroup_extras`, if given, runs once the cgroup exists and before the
    child joins it (mctl-runtime adds runc's other hierarchies there).
    On an error after the fork the child is killed and reaped before it raises.
    """
    if "user" in config.namespaces:
        # Checked before anything is made, so the error is all that happens.
        reason = userns.unavailable() or _unreachable_rootfs(config.rootfs(bundle))
        if reason:
            raise OSError(f"user namespace: {reason}")
    if config.hooks is not None or config.sysctl or config.apparmor_profile or \
            config.selinux_label or config.mount_label:
        reason = _unsupported_here(config, lifecycle)
        if reason:
            raise OSError(reason)
    later = process.cgroup_later(config)
    # The files the child writes to join the cgroup, or the pipe that brings them.
    procs: list[str] | int = [] if later else _make_cgroup(cgroups, cgroup, config,
                                                            cgroup_extras)
    if lifecycle is not None and lifecycle.runtime_sync:
        # Two-way: the init asks for the createRuntime hooks and waits (hooks.py).
        sync_r, sync_w = lifecycle.sync_pair()
    else:
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    if "user" in config.namespaces:
        return _fork_in_user_namespace(sys, procs, bundle, config, stdio, cap_top,
                                       before_exec, close_in_child, sync_r, sync_w, lifecycle,
                                       console_fd)
    cgroup_w = -1
    if later:
        # The child reads the files to join from here (process.join_cgroup).
        procs, cgroup_w = os.pipe2(os.O_CLOEXEC)
    own_pid_ns = -1
    if "pid" in config.namespaces:
        joined = config.namespace_paths.get("pid")
        if lifecycle is not None or joined:
            own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        if joined:
            # The init is forked into it (setns of a pid namespace applies to
            # children); then this process's children are its own again, below.
            fd = os.open(joined, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sys.setns(fd, sc.CLONE_NEWPID)
            finally:
                os.close(fd)
        else:
            sys.unshare(sc.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os.close(sync_r)
        if cgroup_w >= 0:
            os.close(cgroup_w)
        for fd in close_in_child:
            os.close(fd)
        process.exec_container(sys, bundle, config, procs, sync_w, stdio, cap_top, before_exec,
                               lifecycle=lifecycle, console_fd=console_fd)
    os.close(sync_w)
    if own_pid_ns >= 0:
        # Our next children in our own pid namespace again: hooks run from here
        # belong to the runtime's, and once the container's pid 1 is gone its
        # namespace takes no new process at all (fork fails with ENOMEM).
        sys.setns(own_pid_ns, sc.CLONE_NEWPID)
        os.close(own_pid_ns)
    if cgroup_w >= 0:
        assert isinstance(procs, int)
        os.close(procs)
        try:
            files = _make_cgroup(cgroups, cgroup, config, cgroup_extras)
        except BaseException:
            # The child waits for the files: without them it must not go on.
            os.close(cgroup_w)
            os.kill(pid, SIGKILL)
            os.waitpid(pid, 0)
            os.close(sync_r)
            raise
        try:
            _write_all(cgroup_w, "\n".join(files).encode())
        except BrokenPipeError:
            pass  # the child failed before it joined: wait_ready reads its error
        finally:
            os.close(cgroup_w)
    return pid, sync_r


def _make_cgroup(cgroups: CgroupDriver, cgroup: str, config: Config,
                 extras: Callable[[], None] | None) -> list[str]:
    """Creates the container's cgroup; returns the files its init writes to join it."""
    cgroups.create(cgroup, limits_of(config))
    if config.resources.has_memory_extras():
        from .cgroups import memory_extras

        memory_extras.apply(cgroups, cgroup, config.resources)
    if extras is not None:
        extras()
    return cgroups.self_join_files(cgroup)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _unsupported_here(config: Config, lifecycle: Lifecycle | None) -> str:
    """What of hooks, sysctls and LSM labels this host or caller cannot do ("" if none)."""
    if config.hooks is not None and lifecycle is None:
        # The agent never writes hooks; a caller that cannot run them refuses.
        return ("hooks: not run by the in-agent native runtime "
                "(mctl-runtime, runc and crun run them)")
    if config.sysctl:
        from . import sysctl

        reason = sysctl.netns_problem(config.sysctl, config.namespace_paths)
        if reason:
            return reason
    if config.apparmor_profile or config.selinux_label or config.mount_label:
        from . import lsm

        return lsm.unavailable(config)
    return ""


def _unreachable_rootfs(rootfs: str) -> str:
    blocked = userns.unreachable_ancestor(rootfs)
    if not blocked:
        return ""
    return (f"{blocked} is not searchable by other users, so the container's mapped root "
            f"cannot reach its rootfs {rootfs} (chmod o+x {blocked})")


def _fork_in_user_namespace(
    sys: sc.Syscalls,
    procs: list[str] | int,
    bundle: str,
    config: Config,
    stdio: tuple[int, int, int],
    cap_top: int,
    before_exec: Callable[[int], None] | None,
    close_in_child: tuple[int, ...],
    sync_r: int,
    sync_w: int,
    lifecycle: Lifecycle | None,
    console_fd: int,
) -> tuple[int, int]:
    # pid 1 is forked by the first child, which then exits: as a subreaper
    # this process becomes its parent, as it is without a user namespace.
    sys.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    handshake = userns.Handshake()
    pid = os.fork()
    if pid == 0:
        os.close(sync_r)
        for fd in close_in_child:
            os.close(fd)
        handshake.as_child()
        process.exec_container(sys, bundle, config, procs, sync_w, stdio, cap_top, before_exec,
                               handshake, lifecycle, console_fd)
    os.close(sync_w)
    handshake.as_parent()
    try:
        init = userns.map_child(handshake, pid, config)
    finally:
        handshake.close()
        # The first child exits once it has forked pid 1 (or failed).
        os.waitpid(pid, 0)
    return init or pid, sync_r


def read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def wait_ready(pid: int, sync_r: int, lifecycle: Lifecycle | None = None) -> str:
    """The child's setup error ("" if it reached exec or `before_exec`); reaps it on error.

    With `lifecycle`, the prestart and createRuntime hooks run here when the
    init asks (hooks.py); a hook's failure is the error then.
    """
    if lifecycle is not None and lifecycle.runtime_sync:
        error = lifecycle.serve(pid, sync_r)
    else:
        error = read_all(sync_r)
    os.close(sync_r)
    if error:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # a user namespace's first child, reaped by fork_init already
    return error.decode(errors="replace")


def fits_ahead(config: Config) -> bool:
    """Whether a container's init forked ahead (`InitAhead`) can be the one config.json asks for.

    It was forked into a new pid namespace with no cgroup yet, so only a
    config that would take fork_init's own path with a new pid namespace and
    the cgroup made later (cgroup_later) fits; anything else (a user
    namespace, a joined or no pid namespace, hooks, sysctls, LSM labels) is
    started by fork_init, which also says why it cannot be.
    """
    return ("pid" in config.namespaces and "pid" not in config.namespace_paths
            and process.cgroup_later(config) and config.hooks is None and not config.sysctl
            and not (config.apparmor_profile or config.selinux_label or config.mount_label))


class InitAhead:
    """A container's init forked before its request, waiting on a pipe for the request.

    fork(2) of the init took 1.1-1.8 ms of each in-agent start while the
    request waited (bench/start.py's trace at f9a9ba2); the spare monitor
    (zygote.py) forks its container's init ahead, as the zygote forks the
    spare itself. The pid namespace is unshared for it first, as fork_init
    does, and this process's own is taken back at once, so an OCI runtime
    command the monitor may run instead is forked in the host's.

    `go_r` brings the request: the zygote writes it there right after it
    has handed it to the spare, so this init and its monitor wake together
    rather than one after the other. Until it has the request the init dies
    with this process (PR_SET_PDEATHSIG), and it reads end-of-file if the
    zygote lets go of the spare, so none is left behind. Then it is what
    fork_init's child is: it reads config.json itself (while the monitor
    reads it too and makes the cgroup) and goes through
    process.exec_container, which waits for the cgroup files on a pipe; it
    exits instead if the request is for an OCI runtime command or the
    config does not fit (`fits_ahead`): the monitor decides the same,
    `cancel`s it and forks the init anew if need be. `take` makes the
    cgroup for it.
    """

    def __init__(self, sys: sc.Syscalls, stdio: tuple[int, int, int], cap_top: int,
                 close_in_child: tuple[int, ...], warm: Callable[[], None], go_r: int) -> None:
        self.sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        cgroup_r, self.cgroup_w = os.pipe2(os.O_CLOEXEC)
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        sys.unshare(sc.CLONE_NEWPID)
        gc.freeze()     # as zygote.Spare does before its fork
        try:
            self.pid = os.fork()
        except BaseException:
            sys.setns(own_pid_ns, sc.CLONE_NEWPID)
            for fd in (own_pid_ns, sync_w, cgroup_r, self.sync_r, self.cgroup_w):
                os.close(fd)
            raise
        if self.pid == 0:
            try:
                # getppid() is 0 for a pid namespace's init, so a parent that
                # died before this prctl is not seen that way; it is seen as
                # end-of-file on `go_r` once the zygote closes its end.
                sys.prctl(sc.PR_SET_PDEATHSIG, SIGKILL)
                for fd in (self.sync_r, self.cgroup_w, own_pid_ns, *close_in_child):
                    os.close(fd)
                _init_ahead(sys, go_r, cgroup_r, sync_w, stdio, cap_top, warm)
            finally:
                os._exit(127)   # never back into the monitor's code
        sys.setns(own_pid_ns, sc.CLONE_NEWPID)
        for fd in (own_pid_ns, sync_w, cgroup_r):
            os.close(fd)

    def take(self, cgroups: CgroupDriver, cgroup: str, config: Config) -> tuple[int, int] | None:
        """Makes the cgroup for the init, as fork_init does; (pid, sync read end).

        None, with the init gone, if it is gone already (it was killed while
        it waited) or config.json does not fit.
        """
        if not fits_ahead(config):
            self.cancel()
            return None
        if os.waitpid(self.pid, os.WNOHANG)[0]:
            # Dead before its exec: its sync pipe's end-of-file would read as success.
            self.cancel(reaped=True)
            return None
        try:
            files = _make_cgroup(cgroups, cgroup, config, None)
        except BaseException:
            self.cancel()
            raise
        try:
            _write_all(self.cgroup_w, "\n".join(files).encode())
        except BrokenPipeError:
            pass  # the child failed before it joined: wait_ready reads its error
        finally:
            os.close(self.cgroup_w)
            self.cgroup_w = -1
        return self.pid, self.sync_r

    def cancel(self, reaped: bool = False) -> None:
        """Ends and reaps the init, and closes its pipes."""
        for fd in (self.cgroup_w, self.sync_r):
            if fd >= 0:
                os.close(fd)
        if not reaped:
            os.kill(self.pid, SIGKILL)
            os.waitpid(self.pid, 0)


def _init_ahead(sys: sc.Syscalls, go_r: int, cgroup_r: int, sync_w: int,
                stdio: tuple[int, int, int], cap_top: int, warm: Callable[[], None]) -> NoReturn:
    """The init forked ahead: warm, wait for the request, then fork_init's child."""
    from . import cjson
    from .oci.config import ConfigError, load_config

    warm()
    msg = read_all(go_r)
    os.close(go_r)
    if not msg:
        os._exit(0)    # the zygote let go of the spare (it died, or the zygote did)
    request = cjson.loads(msg)
    bundle = request.get("bundle") if isinstance(request, dict) else None
    if not isinstance(bundle, str) or request.get("runtime"):
        os._exit(0)    # not a start of the native runtime's: the monitor cancels this
    # As a child forked at the request would be: not tied to the monitor's life.
    sys.prctl(sc.PR_SET_PDEATHSIG, 0)
    try:
        config = load_config(bundle)
    except ConfigError:
        os._exit(0)    # the monitor reads the same file, reports it and ends this
    if not fits_ahead(config):
        os._exit(0)    # likewise decided by the monitor, which forks the init anew
    process.exec_container(sys, bundle, config, cgroup_r, sync_w, stdio, cap_top)
