"""Inode flags (chattr(1)) the agent sets on its own directories.

The one used: FS_TOPDIR_FL ("chattr +T") on the folder of container
bundles. ext4 then places each new subdirectory as it places top-level
ones (its Orlov allocator spreads them over the block groups with the most
free inodes), and a bundle's files follow their directory. Without it every
bundle lands in its parent's group, and on an ext4 without a journal (this
machine's root) finding a free inode there skips each one deleted in the
last 60 s to 6 min, one inode-table lookup each: 30 bundles made right
after 30 removed cost 45 ms of CPU, then 180 ms as removals piled up,
against a steady 17 ms with the flag (bench/README.md, "Fourth pass").

Only a hint: a filesystem without the flag (tmpfs, xfs, overlay) refuses
it and nothing else changes.
"""

from __future__ import annotations

import fcntl
import os
import struct

# linux/fs.h: FS_IOC_GETFLAGS = _IOR('f', 1, long), FS_IOC_SETFLAGS = _IOW('f', 2, long);
# the kernel reads and writes an int through them, as chattr does.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def get_flags(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0])
    finally:
        os.close(fd)


def spread_subdirs(path: str) -> bool:
    """Sets FS_TOPDIR_FL on directory `path`; False where its filesystem has no such flag."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        return True
    except OSError:
        # ENOTTY/EOPNOTSUPP: no inode flags here; EPERM: not ours to change.
        return False
    finally:
        os.close(fd)
