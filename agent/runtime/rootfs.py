"""The container's root filesystem: an overlay of image layers, then pivot_root.

Two halves:
- On the host (agent side): `mount_overlay` stacks the image's read-only
  layers under a per-container writable upper dir (man 5 overlayfs;
  Documentation/filesystems/overlayfs.rst) at bundle/rootfs, and
  `unmount` takes it down again.
- In the container's new mount namespace (child side, between fork and exec):
  `prepare` makes every mount private so nothing propagates back to the host
  (man 7 mount_namespaces), mounts /proc, /dev, /sys and the bind mounts of
  config.json inside the rootfs, hides masked paths, then `pivot` switches
  the root with pivot_root(2) and detaches the old one, so the host's tree is
  no longer reachable.

The child side must not log or allocate much: it runs in a forked process.
"""

from __future__ import annotations

import errno
import os
import stat

from . import syscalls as sc
from .oci import Config, Mount

# Mount options that are flags; everything else is passed as data.
_FLAG_OPTIONS = {
    "ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV,
    "noexec": sc.MS_NOEXEC, "noatime": sc.MS_NOATIME, "strictatime": sc.MS_STRICTATIME,
    "bind": sc.MS_BIND, "rbind": sc.MS_BIND | sc.MS_REC,
}
_IGNORED_OPTIONS = {"rw", "private", "rprivate", "slave", "rslave"}

# The device nodes every container gets (type, major, minor, mode), as runc's
# default devices: /dev is a fresh tmpfs, never the host's.
_DEVICES = {
    "null": (stat.S_IFCHR, 1, 3), "zero": (stat.S_IFCHR, 1, 5),
    "full": (stat.S_IFCHR, 1, 7), "random": (stat.S_IFCHR, 1, 8),
    "urandom": (stat.S_IFCHR, 1, 9), "tty": (stat.S_IFCHR, 5, 0),
}
_DEV_LINKS = {
    "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore",
}


def mount_overlay(sys: sc.Syscalls, lower: list[str], upper: str, work: str,
                  target: str) -> None:
    """Mounts the overlay of `lower` (top layer first) + `upper` at `target`."""
    for d in (upper, work, target):
        os.makedirs(d, exist_ok=True)
    data = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    sys.mount("overlay", target, "overlay", 0, data)


def unmount(sys: sc.Syscalls, target: str) -> bool:
    """Unmounts `target` if it is mounted; returns whether something was."""
    try:
        sys.umount(target, sc.MNT_DETACH)
        return True
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
            return False
        raise


def split_options(options: tuple[str, ...]) -> tuple[int, str]:
    flags = 0
    data = []
    for opt in options:
        flag = _FLAG_OPTIONS.get(opt)
        if flag is not None:
            flags |= flag
        elif opt not in _IGNORED_OPTIONS:
            data.append(opt)
    return flags, ",".join(data)


def _inside(rootfs: str, dest: str) -> str:
    # Joined lexically; the mount namespace is private and the image is one
    # the node imported, so a symlink here cannot reach the host's tree.
    return os.path.join(rootfs, dest.lstrip("/"))


def _mount_one(sys: sc.Syscalls, rootfs: str, m: Mount) -> None:
    target = _inside(rootfs, m.destination)
    flags, data = split_options(m.options)
    if m.type == "bind" or flags & sc.MS_BIND:
        if os.path.isdir(m.source):
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        sys.mount(m.source, target, "", flags | sc.MS_BIND)
        if flags & sc.MS_RDONLY:
            # A bind mount ignores MS_RDONLY until it is remounted (man 2 mount).
            sys.mount("", target, "", flags | sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
        return
    os.makedirs(target, exist_ok=True)
    sys.mount(m.source, target, m.type, flags, data)


def _make_devices(rootfs: str) -> None:
    dev = os.path.join(rootfs, "dev")
    for name, (kind, major, minor) in _DEVICES.items():
        os.mknod(os.path.join(dev, name), kind | 0o666, os.makedev(major, minor))
        os.chmod(os.path.join(dev, name), 0o666)  # mknod's mode is masked by umask
    for name, target in _DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))


def prepare(sys: sc.Syscalls, rootfs: str, config: Config) -> None:
    """Child side: every mount of config.json, inside `rootfs`, in a private namespace."""
    sys.mount("", "/", "", sc.MS_REC | sc.MS_PRIVATE)
    # pivot_root needs the new root to be a mount point; a bind onto itself
    # makes it one even when the bundle's rootfs is a plain directory.
    sys.mount(rootfs, rootfs, "", sc.MS_BIND | sc.MS_REC)
    made_dev = False
    for m in config.mounts:
        _mount_one(sys, rootfs, m)
        if m.destination == "/dev" and m.type == "tmpfs":
            _make_devices(rootfs)
            made_dev = True
    if not made_dev:
        raise OSError(errno.EINVAL, "config.json mounts no tmpfs at /dev")


def mask_paths(sys: sc.Syscalls, config: Config) -> None:
    """Child side, after pivot: hide masked paths, make read-only paths read-only."""
    for path in config.masked_paths:
        if not os.path.lexists(path):
            continue  # this kernel has no such file: nothing to hide
        if os.path.isdir(path):
            sys.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
        else:
            sys.mount("/dev/null", path, "", sc.MS_BIND)
    for path in config.readonly_paths:
        if not os.path.lexists(path):
            continue
        sys.mount(path, path, "", sc.MS_BIND | sc.MS_REC)
        sys.mount(path, path, "", sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT | sc.MS_RDONLY
                  | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def pivot(sys: sc.Syscalls, rootfs: str, readonly: bool) -> None:
    """Child side: make `rootfs` the root and detach the host's tree.

    pivot_root(".", ".") stacks the old root on top of the new one, so it can
    be unmounted without a put_old directory inside the image (as runc does).
    """
    os.chdir(rootfs)
    sys.pivot_root(".", ".")
    sys.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    if readonly:
        sys.mount("", "/", "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)
