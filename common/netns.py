"""Named network namespaces, as `ip netns` keeps them (man 8 ip-netns, man 7 network_namespaces).

A network namespace lives as long as a process is in it or a file
refers to it. A *named* one is a bind mount of `/proc/<tid>/ns/net` on a file
in `/run/netns/`, which keeps it alive with no process inside and lets runc,
crun and `ip netns exec` find it by path. Both the local cluster (one
namespace per node) and the agent (one per container) make them here.

Namespaces are per thread, not per process (man 2 setns): a thread may
enter another network namespace while the rest of the process stays where
it is. So the work that must happen inside a namespace (making it, opening
a netlink socket in it, writing its /proc/sys/net) runs on a short-lived
thread of its own, which never forks (forking a threaded agent is unsafe,
and slower). A socket keeps the namespace it was made in, so a netlink
socket opened on such a thread keeps talking to that namespace from any
thread afterwards (`rtnl`).

As `ip netns add` does, /run/netns is first made a mount of its own with
shared propagation (it stays, as iproute2's does). Without that, the first
`ip netns add` on the machine after one of ours binds /run/netns onto
itself, copying our mounts into the new mount and hiding the originals
beneath it: removing the namespace later unmounts only the copy, and the
hidden original keeps the namespace alive for good.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from . import libc
from .rtnetlink import RtNetlink

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

T = TypeVar("T")


class NetnsError(OSError):
    """A network namespace could not be made, entered or removed."""


_libc = libc.load()
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"{what}: {os.strerror(err)}")


def path_of(name: str) -> str:
    """The file of the named namespace `name` (a path is returned as it is)."""
    return name if "/" in name else os.path.join(NETNS_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path_of(name))


def list_names(prefix: str) -> list[str]:
    """Names in /run/netns that start with `prefix`."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def on_own_thread(fn: Callable[[], T]) -> T:
    """Runs `fn` on a new thread and returns its result (or raises its exception).

    The thread exits afterwards, so a namespace it entered goes with it.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            error.append(e)

    t = threading.Thread(target=run, name="netns")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def enter(name: str) -> None:
    """Moves the calling thread (and the threads and children it makes later) into `name`."""
    path = path_of(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(errno.ENOENT, f"network namespace {path} does not exist") from None
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path})")
    finally:
        os.close(fd)


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Runs `fn` inside namespace `name`, on a thread of its own."""
    def inside() -> T:
        enter(name)
        return fn()
    return on_own_thread(inside)


_dir_shared = False
# Containers are made on several threads at once (the agent's start pool):
# two first creates must not both bind-mount the directory on itself.
_share_lock = threading.Lock()


def _share_dir(directory: str = NETNS_DIR) -> None:
    """Makes `directory` a shared mount of its own, as iproute2's netns_add does."""
    with _share_lock:
        _share_dir_locked(directory)


def _share_dir_locked(directory: str) -> None:
    global _dir_shared
    if _dir_shared:
        return
    os.makedirs(directory, exist_ok=True)
    d = directory.encode()
    if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: not a mount point yet
            raise NetnsError(err, f"make {directory} shared: {os.strerror(err)}")
        _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None),
               f"bind mount of {directory} on itself")
        _check(_libc.mount(b"none", d, None, MS_SHARED | MS_REC, None),
               f"make {directory} shared")
    _dir_shared = True


def create(name: str) -> str:
    """Makes the named namespace `name` (only loopback, down) and returns its path.

    Fails with EEXIST if the name is taken.
    """
    path = path_of(name)
    if os.path.dirname(path) == NETNS_DIR:
        _share_dir()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    except FileExistsError:
        raise NetnsError(errno.EEXIST, f"network namespace {path} already exists") from None

    def make() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
               f"bind mount of the new namespace on {path}")

    try:
        on_own_thread(make)
    except BaseException:
        os.unlink(path)
        raise
    return path


def remove(name: str) -> bool:
    """Unmounts and deletes the named namespace; False if it was not there.

    The kernel frees the namespace (and the veth ends in it) once no
    process is left inside.
    """
    path = path_of(name)
    if not os.path.exists(path):
        return False
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: not a mount point (a half-made one)
            raise NetnsError(err, f"umount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def netlink_socket(name: str) -> socket.socket:
    """A NETLINK_ROUTE socket bound to namespace `name`."""
    return run_in(name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))


def rtnl(name: str | None = None) -> RtNetlink:
    """An rtnetlink connection to namespace `name` (None: the calling thread's own)."""
    if name is None:
        return RtNetlink()
    return RtNetlink(netlink_socket(name))


def write_sysctl(name: str | None, key: str, value: str) -> None:
    """Writes /proc/sys/<key> as seen from namespace `name` (net.* keys are per namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    if name is None:
        write()
    else:
        run_in(name, write)
