"""How much disk a container has written: its writable layer, /etc files and logs.

A container writes to disk in four places, all under its bundle: its
writable layer (the overlay's `upper/`, with `work/`, overlay's scratch),
its /etc files (`etc/`, bound in read-write), its disk emptyDirs
(`scratch/`) and its log (`container.log` and the rotated
`container.log.N`). `container_bytes` adds them up by walking them
with os.scandir, as `du` does: blocks are counted (st_blocks), not
apparent sizes, so a sparse file takes only what it wrote; each inode
counts once (hard links); nothing below another mount is counted.
disklimit.py holds the sum to the container's limit.

A directory's mtime does not change when a file in it grows, so no
directory can be skipped as unchanged: a walk is one lstat per file. That
is cheap for the usual container (a handful of files written) and is paid
only for running ones (docs/disk-limit.md has a measure).

What a walk cannot see: a file the container deleted while keeping it open
takes its blocks until closed (the kubelet's du-based measure has the same
gap). The container's tmpfs mounts (/dev, /dev/shm) take memory, which its
memory limit bounds.
"""

from __future__ import annotations

import os
import stat

from mctl.common.quantity import format_bytes_short

from .runtime.state import LOG_FILE

# The node's default limit (mctl-agent --default-disk-limit): above what a
# workload's scratch files and logs (20Mi with the default rotation) normally
# take, well below a node's disk, so one runaway container cannot fill it alone.
DEFAULT_LIMIT_BYTES = 10 << 30
# What the container writes to, relative to its bundle (containers.py's layout);
# scratch/ holds its disk emptyDirs (volumes.py), which count as the kubelet
# counts them in a pod's ephemeral storage. Its other volumes do not: tmpfs
# is memory, and a hostPath or named volume is not the container's own.
WRITABLE_DIRS = ("upper", "work", "etc", "scratch")


def over_limit(used: int, limit: int) -> str | None:
    """Why a container using `used` bytes must stop under `limit`, or None while it fits."""
    if used <= limit:
        return None
    return (f"writable layer and logs use {format_bytes_short(used)},"
            f" limit {format_bytes_short(limit)}")


def tree_bytes(path: str, seen: set[tuple[int, int]]) -> int:
    """Bytes of disk the tree at `path` takes: its blocks, each inode once (`seen`)."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    total = top.st_blocks * 512
    stack = [path] if stat.S_ISDIR(top.st_mode) else []
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:          # removed meanwhile, or not a directory any more
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != top.st_dev:
                    continue     # a mount point: another file system's blocks
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
    return total


def log_files(bundle: str) -> list[str]:
    """The container's log files: the current one and the rotated `.N` ones."""
    try:
        names = os.listdir(bundle)
    except FileNotFoundError:
        return []
    return [os.path.join(bundle, n) for n in names
            if n == LOG_FILE or (n.startswith(LOG_FILE + ".") and n[len(LOG_FILE) + 1:].isdigit())]


def container_bytes(bundle: str) -> int:
    """What the container of `bundle` has written: writable layer, /etc files and logs."""
    seen: set[tuple[int, int]] = set()
    total = sum(tree_bytes(os.path.join(bundle, d), seen) for d in WRITABLE_DIRS)
    return total + sum(tree_bytes(path, seen) for path in log_files(bundle))


def trim_logs(bundle: str, limit: int) -> None:
    """Before a restart after DiskLimit: only the current log file stays, if it is small.

    It holds the stopped run's last output (`mctl logs`); the rotated ones
    go. A current file over half the limit is emptied too, or the restarted
    container would start near its limit with nothing written.
    """
    current = os.path.join(bundle, LOG_FILE)
    for path in log_files(bundle):
        if path != current:
            os.unlink(path)
    try:
        if os.stat(current).st_blocks * 512 > limit // 2:
            os.truncate(current, 0)
    except FileNotFoundError:
        pass
