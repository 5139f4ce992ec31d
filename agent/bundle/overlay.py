"""A container's root filesystem on the host: the image's layers under an overlay.

`mount_overlay` stacks the image's read-only layers under a per-container
writable upper dir (man 5 overlayfs; Documentation/filesystems/overlayfs.rst)
at bundle/rootfs, and `unmount` takes it down again. With a user namespace
the layers it stacks are idmapped mounts of the image's (idmap.py).
`mounts_under` says what is still mounted in a bundle before it is removed.
"""

from __future__ import annotations

import errno
import os

from ..runtime import syscalls as sc

# mount(2) copies at most one page of options, its NUL included.
MOUNT_DATA_MAX = 4096


def mount_overlay(sys: sc.Syscalls, lower: list[str], upper: str, work: str,
                  target: str, owner: tuple[int, int] | None = None) -> None:
    """Mounts the overlay of `lower` (top layer first) + `upper` at `target`.

    `owner` (host uid, gid) owns the upper dir, so it owns the rootfs' "/":
    a user namespace's mapped root (runtime/userns.py).
    """
    for d in (upper, work, target):
        os.makedirs(d, exist_ok=True)
    if owner is not None:
        os.chown(upper, *owner)
    data = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    if len(data.encode()) < MOUNT_DATA_MAX:
        sys.mount("overlay", target, "overlay", 0, data)
        return
    # More layers than one page of options holds (~35 under /var/lib/mctl).
    from ..runtime import newmount

    newmount.mount_overlay(lower, upper, work, target)


def unmount(sys: sc.Syscalls, target: str) -> bool:
    """Unmounts `target` if it is mounted; returns whether something was."""
    try:
        sys.umount(target, sc.MNT_DETACH)
        return True
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
            return False
        raise


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash come as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mounts_under(directory: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `directory` in this mount namespace (before an rmtree)."""
    directory = os.path.abspath(directory)
    with open(mountinfo) as f:
        points = [_unescape(line.split()[4]) for line in f if len(line.split()) > 4]
    return [p for p in points if p == directory or p.startswith(directory + "/")]
