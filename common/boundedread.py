"""Reading a file the user names, with a bound on bytes and on waiting.

`mctl apply -f` takes any path: a regular file, but also /dev/zero (endless),
a FIFO (which blocks in open(2) until a writer comes, and may never end), or
a directory of files. Reading such a thing "until EOF" exhausts memory or
hangs, so this reads at most `limit` bytes, in chunks, and says so at
`limit + 1` instead of parsing a prefix; and it opens with O_NONBLOCK, so
open(2) of a FIFO returns at once, then waits for data with poll(2) for at
most `idle_seconds` between chunks (regular files are always ready; stdin
from a terminal is waited on forever: a person may be typing).

See open(2) on O_NONBLOCK and fifo(7) on opening a FIFO.
"""

from __future__ import annotations

import os
import select
import stat

CHUNK = 64 << 10
DEFAULT_IDLE_SECONDS = 30.0


class TooLarge(Exception):
    """More than the limit was there to read."""


class Stalled(Exception):
    """Nothing came for `idle_seconds` (a FIFO with no writer, a writer that hangs)."""


def read_path(path: str, limit: int, idle_seconds: float | None = None) -> bytes:
    """At most `limit` bytes of `path`; TooLarge past it, Stalled, or OSError.

    `idle_seconds` None: DEFAULT_IDLE_SECONDS, as it is when called.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return read_fd(fd, limit, DEFAULT_IDLE_SECONDS if idle_seconds is None
                       else idle_seconds)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int, idle_seconds: float | None = DEFAULT_IDLE_SECONDS) -> bytes:
    """At most `limit` bytes from `fd` until EOF; `idle_seconds` None waits forever."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "Is a directory")
    if stat.S_ISREG(mode) or (idle_seconds is not None and os.isatty(fd)):
        idle_seconds = None      # always ready (a file), or a person typing
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    parts: list[bytes] = []
    size = 0
    while True:
        if idle_seconds is not None and not poller.poll(idle_seconds * 1000):
            raise Stalled(f"nothing to read for {idle_seconds:.0f}s")
        try:
            data = os.read(fd, min(CHUNK, limit + 1 - size))
        except BlockingIOError:
            # Ready said poll, yet nothing: a FIFO without a writer (yet).
            if idle_seconds is None:
                poller.poll()
            continue
        if not data:
            return b"".join(parts)
        parts.append(data)
        size += len(data)
        if size > limit:
            raise TooLarge(f"larger than {describe(limit)}")


def describe(size: int) -> str:
    """A limit as users read it: "4 MiB"."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"
