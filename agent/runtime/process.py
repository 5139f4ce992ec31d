"""The container's first process: from a forked child to exec, in order.

This runs in the child the monitor forks, after the monitor (for the pid
namespace) called unshare(CLONE_NEWPID), so that this child is pid 1 of the
new namespace (man 7 pid_namespaces). The steps, each named so a failure
says where it happened:

1. join the container's cgroup (writing 0 to cgroup.procs, or on v1 to
   `tasks`, moves the writer: CgroupDriver.self_join_files)
   before unsharing the cgroup namespace, so that namespace's root is the
   container's cgroup (man 7 cgroup_namespaces); set process.rlimits
   (rlimits.py) and process.oomScoreAdj while still the host's root;
2. join the namespaces config.json names by path (setns; the agent's
   prepared network namespace), unshare mount, uts, ipc, network and cgroup
   namespaces for the rest (man 2 unshare);
3. bring up loopback in a new network namespace; set the hostname;
4. mount /proc, /dev, /sys and the bundle's mounts; the createRuntime
   hooks (run by the runtime while this waits) and createContainer hooks
   (hooks.py); pivot_root (without a mount namespace: no mounts, a chroot
   only, so the caller's namespace is never changed); linux.sysctl
   (sysctl.py); mask paths; the
   AppArmor/SELinux exec labels (lsm.py);
5. drop capabilities, set no_new_privs (man 2 prctl), switch uid/gid;
6. reset signal dispositions Python changed, wire stdio, load the seccomp
   filter (seccomp/; before step 5 without no_new_privs), exec.
   `before_exec` (the CLI's create: wait for start) and the startContainer
   hooks come just before the exec.

When the parent makes the cgroup after the fork (`cgroup_later`; spawn.py
says why), step 1's join waits until after step 3 for the files the parent
sends once the cgroup exists, and the cgroup namespace is unshared then.

With a user namespace (userns.py) step 2 is different, and this process is
only the first of two: it unshares the user namespace first, so that every
namespace made after it is owned by it (which is what lets root in the
container mount /proc and set the hostname there); the runtime writes the
id mappings from outside; then this process becomes the namespace's root,
unshares the rest with the pid namespace, and forks the container's pid 1,
which goes on with step 3 while this one exits (runc's nsexec does the same
two stages). What needs the host's root is done before the user namespace:
joining the agent's network namespace, making mount points in image
directories, and mounting /sys for a network namespace the user namespace
does not own (the kernel lets only that namespace's owner mount sysfs).

Any failure aborts the container: the step and error go to the sync pipe
and the child exits 127. Nothing here falls back to running without a
namespace or a limit. No logging here: the child is a fork.
"""

from __future__ import annotations

import fcntl
import os
import struct

from . import privileges, rlimits, rootfs, signals, userns
from . import syscalls as sc

# typing.TYPE_CHECKING without importing typing, which `mctl-runtime run` would
# pay for at every call (bench/README.md, "Import costs on the start path");
# type checkers treat a module-level TYPE_CHECKING = False the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from .hooks import Lifecycle
    from .oci.config import Config

SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40

# Namespaces the child unshares itself; pid only applies to children, so it
# is unshared by the process that forks pid 1, and user comes first of all
# (enter_user_namespace).
_CHILD_NAMESPACES = ("mount", "uts", "ipc", "network", "cgroup")


def cgroup_later(config: Config) -> bool:
    """Whether the parent may make the cgroup while this child makes its namespaces.

    Not with a user namespace (spawn.py's other path), nor with a mount,
    cgroup or user namespace joined by path: the cgroup files are opened by
    their paths on the host, which joining those could change.
    """
    return "user" not in config.namespaces and not (
        {"mount", "cgroup", "user"} & config.namespace_paths.keys())


def join_cgroup(procs_files: list[str] | int) -> None:
    """Joins the container's cgroup: the files given, or those read from a pipe to its end.

    An empty pipe means the parent could not make the cgroup (it then ends this
    process anyway).
    """
    if isinstance(procs_files, int):
        chunks = []
        while chunk := os.read(procs_files, 65536):
            chunks.append(chunk)
        os.close(procs_files)
        procs_files = b"".join(chunks).decode().split("\n") if chunks else []
        if not procs_files:
            raise OSError("the runtime made no cgroup")
    for path in procs_files:
        with open(path, "w") as f:
            f.write("0")


def namespace_flags(config: Config) -> int:
    """The namespaces the child makes anew; those with a path are joined instead."""
    flags = 0
    for name in config.namespaces:
        if name in _CHILD_NAMESPACES and name not in config.namespace_paths:
            flags |= sc.NAMESPACE_FLAGS[name]
    return flags


def join_namespaces(sys: sc.Syscalls, config: Config) -> None:
    """setns(2) into each namespace config.json gives a path for (man 2 setns).

    The mount namespace first, as runc orders them: the other paths and the
    bundle's rootfs are then resolved in it. A pid namespace is joined by
    the process that forks the init (spawn.py), since it applies to children.
    """
    # Every path is opened before the first setns, as runc's nsexec does: a
    # joined mount namespace may not show the host's /proc/PID/ns paths.
    opened: list[tuple[str, int]] = []
    try:
        for name in sorted(config.namespace_paths, key=lambda name: name != "mount"):
            if name != "pid":
                opened.append((name, os.open(config.namespace_paths[name],
                                             os.O_RDONLY | os.O_CLOEXEC)))
        for name, fd in opened:
            sys.setns(fd, sc.NAMESPACE_FLAGS[name])
    finally:
        for _, fd in opened:
            os.close(fd)


def enter_user_namespace(sys: sc.Syscalls, root: str, config: Config,
                         handshake: userns.Handshake) -> tuple[str, ...]:
    """The first stage with a user namespace; only the container's pid 1 returns.

    Returns the mount destinations already made (see rootfs.premount_sysfs).
    """
    premounted: tuple[str, ...] = ()
    if userns.needs_host_sysfs(config):
        # A mount namespace of the host's own, private: the sysfs mount is
        # made here, as the host's root, and copied into the container's.
        sys.unshare(sc.CLONE_NEWNS)
        premounted = rootfs.premount_sysfs(sys, root, config)
    rootfs.make_mount_points(root, config)
    sys.unshare(sc.CLONE_NEWUSER)
    handshake.child_says(userns.UNSHARED)
    reply = handshake.child_hears()
    if reply != userns.MAPPED:
        raise OSError(reply.decode(errors="replace") or "the runtime wrote no id mappings")
    # Until now this process was the host's root, which the namespace does
    # not map; as its root (uid 0 inside) files it makes get a mapped owner.
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    flags = namespace_flags(config)
    if "pid" in config.namespaces:
        flags |= sc.CLONE_NEWPID
    sys.unshare(flags)
    pid = os.fork()
    if pid != 0:
        handshake.child_says(str(pid).encode())
        os._exit(0)
    handshake.close()
    return premounted


def set_oom_score_adj(value: int) -> None:
    """process.oomScoreAdj for this process and what it execs (man 5 proc, oom_score_adj)."""
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    except OSError as e:
        # Below the inherited minimum needs CAP_SYS_RESOURCE (EACCES without it).
        raise OSError(f"writing {value} to /proc/self/oom_score_adj: {e.strerror}") from None
    finally:
        os.close(fd)


def loopback_up() -> None:
    """Sets `lo` up in the current network namespace (a new one starts it down)."""
    ifreq = struct.pack("16sh", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
    fd = sc.inet_dgram_socket()
    try:
        fcntl.ioctl(fd, SIOCSIFFLAGS, ifreq)
    finally:
        os.close(fd)


def env_dict(env: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def exec_program(args: list[str], env: dict[str, str]) -> NoReturn:
    """execvp(3): args[0] looked up in env's PATH unless it holds a slash.

    Not os.execvpe: its PATH search imports `warnings` on first use, and
    after pivot_root the host's standard library is out of reach. Errors
    as execvp's: EACCES if some candidate was not executable, else the last.
    """
    program = args[0]
    if "/" in program:
        os.execve(program, args, env)
    denied: OSError | None = None
    last: OSError = FileNotFoundError(2, "executable file not found in $PATH", program)
    for directory in env.get("PATH", "/usr/bin:/bin").split(":"):
        try:
            os.execve(os.path.join(directory or ".", program), args, env)
        except PermissionError as e:
            denied = e
        except OSError as e:
            last = e
    raise denied or last


def exec_container(
    sys: sc.Syscalls,
    bundle: str,
    config: Config,
    procs_files: list[str] | int,
    sync_fd: int,
    stdio: tuple[int, int, int],
    cap_top: int,
    before_exec: Callable[[int], None] | None = None,
    handshake: userns.Handshake | None = None,
    lifecycle: Lifecycle | None = None,
    console_fd: int = -1,
) -> NoReturn:
    """The child between fork and exec. Never returns.

    `before_exec(sync_fd)`, if given, runs once the container is set up, just
    before exec: the OCI CLI's `create` (oci/cli.py) reports success there and
    waits for `start`. `handshake` is given with a user namespace: the
    parent maps its ids through it (spawn.py). `lifecycle` runs config.json's
    hooks: createRuntime's (in the runtime, through the sync channel) and
    createContainer's before pivot_root, startContainer's after `before_exec`.
    `console_fd`, a unix socket connected to the caller's --console-socket,
    is given with process.terminal: the process's stdio is then a pty of the
    container's own, whose master goes over it (terminal.py).
    `procs_files` are the cgroup files to join, or a pipe that brings them
    once the parent has made the cgroup (spawn.py).
    """
    step = "start"
    try:
        later = isinstance(procs_files, int)
        if not later:
            step = "cgroup"
            join_cgroup(procs_files)
        step = "rlimits"
        rlimits.apply(config.rlimits)
        if config.oom_score_adj is not None:
            # Now, as the host's root: in a user namespace lowering it is refused.
            step = "process.oomScoreAdj"
            set_oom_score_adj(config.oom_score_adj)
        step = "join namespaces"
        join_namespaces(sys, config)
        root = config.rootfs(bundle)
        premounted: tuple[str, ...] = ()
        if handshake is not None:
            step = "user namespace"
            premounted = enter_user_namespace(sys, root, config, handshake)
        else:
            step = "unshare"
            # With the cgroup made later, its namespace comes after the join, below.
            sys.unshare(namespace_flags(config) & ~(sc.CLONE_NEWCGROUP if later else 0))
        if "network" in config.namespaces and "network" not in config.namespace_paths:
            # A joined network namespace is the preparer's to configure.
            step = "loopback"
            loopback_up()
        if "uts" in config.namespaces and config.hostname:
            step = "hostname"
            sys.sethostname(config.hostname)
        if later:
            step = "cgroup"
            join_cgroup(procs_files)
            if namespace_flags(config) & sc.CLONE_NEWCGROUP:
                step = "unshare"
                sys.unshare(sc.CLONE_NEWCGROUP)
        # Without a mount namespace of its own nothing may be mounted or
        # pivoted: that would be the caller's namespace (config.py refuses the
        # mounts); the rootfs is only chrooted into, as runc does.
        own_mounts = "mount" in config.namespaces and "mount" not in config.namespace_paths
        if own_mounts:
            step = "mounts"
            rootfs.prepare(sys, root, config, premounted)
        if lifecycle is not None:
            step = ""  # a hook's error names the hook
            lifecycle.before_pivot(sync_fd, root)
        # What the steps after pivot_root import, imported while the host's files
        # are in reach (oci/config.py and spawn.py have already, so this costs nothing).
        if config.sysctl:
            from . import sysctl
        if config.apparmor_profile or config.selinux_label:
            from . import lsm
        if console_fd >= 0:
            import socket  # noqa: F401 - for terminal.send_fd, after pivot_root

            from . import terminal
        if own_mounts:
            step = "pivot_root"
            rootfs.pivot(sys, root, config.root_readonly, config.rootfs_propagation)
        else:
            step = "chroot"
            rootfs.enter_by_chroot(sys, root)
        # A process.cwd the image lacks is made (0755, by the container's
        # root, inside its root), as runc and Docker do.
        step = "process.cwd"
        os.makedirs(config.cwd, 0o755, exist_ok=True)
        if config.sysctl:
            # After /proc is mounted, before readonlyPaths makes /proc/sys read-only.
            step = "linux.sysctl"
            sysctl.apply(config.sysctl)
        if console_fd >= 0:
            # After pivot_root (the container's /dev/pts), before the paths are
            # masked and privileges dropped (the /dev/console bind), as runc.
            step = "process.terminal"
            terminal.attach(sys, console_fd, config.console_size, bind_console=own_mounts)
            stdio = (0, 1, 2)
        step = "masked paths"
        rootfs.mask_paths(sys, config)
        if config.apparmor_profile or config.selinux_label:
            # While still root and before no_new_privs (lsm.py says why not at exec).
            step = "process.apparmorProfile/selinuxLabel"
            lsm.set_exec_labels(config)
        step = "linux.seccomp"
        privileges.load_seccomp(sys, config, right_before_exec=False)
        step = "capabilities, user, no_new_privs"
        privileges.drop_to(sys, config, cap_top)
        step = "cwd"
        os.chdir(config.cwd)
        step = "stdio"
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec.
        for sig in (signals.SIGPIPE, signals.SIGXFSZ, signals.SIGCHLD, signals.SIGINT):
            signals.set_handler(sig, signals.SIG_DFL)
        step = "exec"
        if before_exec is not None:
            before_exec(sync_fd)
        if lifecycle is not None:
            step = ""
            lifecycle.start_container()
            step = "exec"
        os.closerange(3, sync_fd)
        os.closerange(sync_fd + 1, 1 << 16)
        step = "linux.seccomp"
        privileges.load_seccomp(sys, config, right_before_exec=True)
        step = "exec"
        exec_program(list(config.args), env_dict(config.env))
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        try:
            os.write(sync_fd, (f"{step}: {e}" if step else str(e)).encode()[:4000])
        finally:
            os._exit(127)
