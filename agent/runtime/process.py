"""The container's first process: from a forked child to exec, in order.

This runs in the child the monitor forks, after the monitor has made the
cgroup and (for the pid namespace) called unshare(CLONE_NEWPID), so that
this child is pid 1 of the new namespace (man 7 pid_namespaces). The steps,
each named so a failure says where it happened:

1. join the container's cgroup (writing 0 to cgroup.procs moves the writer)
   before unsharing the cgroup namespace, so that namespace's root is the
   container's cgroup (man 7 cgroup_namespaces);
2. unshare mount, uts, ipc, network and cgroup namespaces (man 2 unshare);
3. bring up loopback in the new network namespace; set the hostname;
4. mount /proc, /dev, /sys and the bundle's mounts; pivot_root; mask paths;
5. drop capabilities, set no_new_privs (man 2 prctl), switch uid/gid;
6. reset signal dispositions Python changed, wire stdio, exec.

Any failure aborts the container: the step and error go to the sync pipe
and the child exits 127. Nothing here falls back to running without a
namespace or a limit. No logging here: the child is a fork.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
from typing import NoReturn

from . import capabilities, rootfs
from . import syscalls as sc
from .oci import Config

SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40

# Namespaces the child unshares itself; pid is unshared by its parent (it
# only applies to children) and user is not supported yet.
_CHILD_NAMESPACES = ("mount", "uts", "ipc", "network", "cgroup")


def namespace_flags(config: Config) -> int:
    flags = 0
    for name in config.namespaces:
        if name in _CHILD_NAMESPACES:
            flags |= sc.NAMESPACE_FLAGS[name]
    return flags


def loopback_up() -> None:
    """Sets `lo` up in the current network namespace (a new one starts it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, ifreq)


def env_dict(env: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def exec_container(
    sys: sc.Syscalls,
    bundle: str,
    config: Config,
    procs_files: list[str],
    sync_fd: int,
    stdio: tuple[int, int, int],
    cap_top: int,
) -> NoReturn:
    """The child between fork and exec. Never returns."""
    step = "start"
    try:
        step = "cgroup"
        for path in procs_files:
            with open(path, "w") as f:
                f.write("0")
        step = "unshare"
        sys.unshare(namespace_flags(config))
        if "network" in config.namespaces:
            step = "loopback"
            loopback_up()
        if "uts" in config.namespaces and config.hostname:
            step = "hostname"
            sys.sethostname(config.hostname)
        step = "mounts"
        root = config.rootfs(bundle)
        rootfs.prepare(sys, root, config)
        step = "pivot_root"
        rootfs.pivot(sys, root, config.root_readonly)
        step = "masked paths"
        rootfs.mask_paths(sys, config)
        step = "capabilities"
        keep = capabilities.mask_of(config.capabilities)
        capabilities.drop_bounding(sys, keep, cap_top)
        if config.uid != 0:
            # setuid would clear the permitted set; keep it, capset trims it below.
            sys.prctl(sc.PR_SET_KEEPCAPS, 1)
        step = "user"
        os.setgroups(list(config.additional_gids))
        os.setgid(config.gid)
        os.setuid(config.uid)
        step = "capabilities"
        capabilities.set_capabilities(sys, keep)
        if config.no_new_privileges:
            sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        step = "cwd"
        os.chdir(config.cwd)
        step = "stdio"
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        step = "exec"
        os.closerange(3, sync_fd)
        os.closerange(sync_fd + 1, 1 << 16)
        os.execvpe(config.args[0], list(config.args), env_dict(config.env))
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        try:
            os.write(sync_fd, f"{step}: {e}".encode()[:4000])
        finally:
            os._exit(127)
