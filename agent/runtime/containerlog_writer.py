"""The container log a monitor writes: CRI format, per stream, size-capped with rotation.

Each line is `<RFC3339Nano> <stream> <F|P> <data>`, as the kubelet and
CRI-O write it (common/containerlog.py reads it): the time the monitor read
the output, stdout or stderr, and F for a full line or P for a part of one
longer than MAX_LINE (16 KiB, CRI's size), which is cut however the output
happened to arrive.

Like the kubelet's containerLogMaxSize and containerLogMaxFiles: before a
line would take `container.log` past `max_size` bytes, the files move one
up (`container.log` becomes `.1`, `.1` becomes `.2`, ...) and the oldest
beyond `max_files` (the current one included) is dropped, so a chatty
container holds at most about max_files * max_size bytes of disk. The
current name always exists, also in the middle of a rotation (a hard link
keeps the old file at `.1` while a new one replaces the name), so a reader
never mistakes a rotation for the log being removed.
"""

from __future__ import annotations

import os
import time

from .record import Record

# A longer line is written in parts, tagged P (partial) as CRI does.
MAX_LINE = 16 * 1024


class LogLimits(Record):
    __slots__ = ("max_size", "max_files")

    def __init__(self, max_size: int = 10 * 1024 * 1024, max_files: int = 2) -> None:
        self.max_size = max_size        # bytes per file, as the kubelet's default
        self.max_files = max_files      # files kept, the current one included
        if self.max_size < 2 * MAX_LINE:
            raise ValueError(f"log max size {self.max_size} is below {2 * MAX_LINE} bytes "
                             "(two longest lines)")
        if self.max_files < 2:
            raise ValueError(f"log max files {self.max_files} is below 2 (the current file "
                             "and one rotated)")


def _open(path: str, truncate: bool = False) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    return os.open(path, flags | (os.O_TRUNC if truncate else 0), 0o640)


class LogWriter:
    """Turns the container's output into CRI lines in `path`, rotating at `limits`."""

    def __init__(self, path: str, limits: LogLimits | None = None) -> None:
        self.path = path
        self.limits = limits or LogLimits()
        self.fd = _open(path)
        # A restarted container appends to the log it had.
        self.size = os.fstat(self.fd).st_size
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        out = []
        for line in lines:
            # A long line that arrived whole is split too, not only a long remainder.
            while len(line) > MAX_LINE:
                out.append(self._line(stream, "P", line[:MAX_LINE]))
                line = line[MAX_LINE:]
            out.append(self._line(stream, "F", line))
        while len(self.partial[stream]) > MAX_LINE:
            out.append(self._line(stream, "P", self.partial[stream][:MAX_LINE]))
            self.partial[stream] = self.partial[stream][MAX_LINE:]
        self._write(out)

    def flush(self) -> None:
        """Writes what is left of unfinished lines (the container has exited)."""
        out = [self._line(stream, "F", rest) for stream, rest in self.partial.items() if rest]
        self.partial = {"stdout": b"", "stderr": b""}
        self._write(out)

    def close(self) -> None:
        os.close(self.fd)

    def _write(self, lines: list[bytes]) -> None:
        batch: list[bytes] = []
        batch_size = 0
        for line in lines:
            if self.size + batch_size + len(line) > self.limits.max_size and (
                    self.size + batch_size) > 0:
                self._write_now(batch)
                batch, batch_size = [], 0
                self._rotate()
            batch.append(line)
            batch_size += len(line)
        self._write_now(batch)

    def _write_now(self, batch: list[bytes]) -> None:
        if batch:
            data = b"".join(batch)
            os.write(self.fd, data)
            self.size += len(data)

    def _rotate(self) -> None:
        path, keep = self.path, self.limits.max_files
        # .N-2 -> .N-1, ..., .1 -> .2: the oldest kept is replaced, so dropped.
        for i in range(keep - 1, 1, -1):
            try:
                os.replace(f"{path}.{i - 1}", f"{path}.{i}")
            except FileNotFoundError:
                pass
        try:
            os.unlink(f"{path}.1")
        except FileNotFoundError:
            pass
        os.link(path, f"{path}.1")
        fresh = f"{path}.new"
        new_fd = _open(fresh, truncate=True)   # not what a crash may have left there
        os.replace(fresh, path)
        os.close(self.fd)
        self.fd, self.size = new_fd, 0

    @staticmethod
    def _line(stream: str, tag: str, line: bytes) -> bytes:
        ns = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
        return b"%s.%09dZ %s %s %s\n" % (stamp.encode(), ns % 1_000_000_000,
                                         stream.encode(), tag.encode(), line)
