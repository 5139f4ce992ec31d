"""Container logs in the CRI format: reading, tailing and following, across rotation.

Each line of a container's log file is `<RFC3339Nano> <stream> <F|P> <data>`
(the format the kubelet and CRI-O write): the time the monitor read it, the
stream it came from, whether the line is full (F) or a part of a longer one
(P). A reader gets whole lines: the P parts of a stream are joined with the
F that ends them, and the line carries the time of its first part.

The monitor rotates the file at a size (agent/runtime/containerlog_writer.py, as the
kubelet's containerLogMaxSize / MaxFiles): `container.log` is the newest,
`container.log.1` the one before, up to `.N`, the oldest; each rotation
renames them one up and drops the last. Reading the last N lines goes back
through the rotated files as far as it needs; following notices when the
file it reads has been renamed away and goes on with the files that came
after it, by inode, so a rotation (or two) between polls loses nothing that
is still on disk. Parsing lives here because the agent (serving logs) and
tests read it.
"""

from __future__ import annotations

import calendar
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import BinaryIO

Line = tuple[int, str, bytes]  # (unix ns, stream, data without newline)
Entry = tuple[int, str, str, bytes]  # (unix ns, stream, tag F|P, data): one line of the file

FOLLOW_POLL_SECONDS = 0.1
BATCH = 500
# A stream that never ends its line is cut into lines of this size when read.
MAX_JOINED = 1 << 20
_STREAMS = (b"stdout", b"stderr")
# Rotated files a reader looks for beyond what any agent keeps.
_MAX_ROTATED = 100


# The last seconds part parsed and its value: lines come many to a second,
# and strptime is most of the cost of parsing one.
_last_secs: tuple[bytes, int] = (b"", 0)


def _seconds(secs: bytes) -> int:
    global _last_secs
    cached = _last_secs
    if cached[0] == secs:
        return cached[1]
    t = calendar.timegm(time.strptime(secs.decode(), "%Y-%m-%dT%H:%M:%S"))
    _last_secs = (secs, t)
    return t


def parse_entry(raw: bytes) -> Entry | None:
    """One line of the file, or None if it is not a CRI log line."""
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    stamp, stream, tag = parts[0], parts[1], parts[2]
    data = parts[3] if len(parts) == 4 else b""
    try:
        secs, _, frac = stamp.rstrip(b"Z").partition(b".")
        ns = _seconds(secs) * 1_000_000_000 + int((frac or b"0").ljust(9, b"0")[:9])
    except (ValueError, UnicodeDecodeError):
        return None
    return ns, stream.decode(errors="replace"), tag.decode(errors="replace"), data


def parse_line(raw: bytes) -> Line | None:
    """One line of the file without its F/P tag (see `Joiner` for whole lines)."""
    entry = parse_entry(raw)
    return None if entry is None else (entry[0], entry[1], entry[3])


class Joiner:
    """Turns entries into whole lines: each stream's P parts wait for their F."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, list[bytes], int]] = {}

    def push(self, entry: Entry) -> Line | None:
        ns, stream, tag, data = entry
        held = self._pending.pop(stream, None)
        if held is not None:
            ns, parts, size = held
            parts.append(data)
            size += len(data)
        else:
            parts, size = [data], len(data)
        if tag == "P" and size < MAX_JOINED:
            self._pending[stream] = (ns, parts, size)
            return None
        return ns, stream, b"".join(parts)

    def rest(self) -> list[Line]:
        """The lines still waiting for their end, as they are (for a reader that stops)."""
        out = [(ns, stream, b"".join(parts)) for stream, (ns, parts, _) in self._pending.items()]
        self._pending.clear()
        return sorted(out)


def rotated_paths(path: str) -> list[str]:
    """`path` and its rotated files that exist, oldest first (`path` last)."""
    older = []
    for i in range(1, _MAX_ROTATED + 1):
        candidate = f"{path}.{i}"
        if not os.path.exists(candidate):
            break
        older.append(candidate)
    return [*reversed(older), path]


def _entries(data: bytes) -> list[Entry]:
    return _parse(data.split(b"\n"))


def _parse(raws: list[bytes]) -> list[Entry]:
    return [e for raw in raws if raw and (e := parse_entry(raw)) is not None]


def _ends_line(raw: bytes) -> bool:
    """Whether a raw line is a CRI entry that ends its line (F), without parsing its time."""
    parts = raw.split(b" ", 3)
    return len(parts) >= 3 and parts[2] != b"P"


def _stream_of(raw: bytes) -> bytes:
    parts = raw.split(b" ", 3)
    return parts[1] if len(parts) >= 3 else b""


def _split_complete(data: bytes) -> tuple[bytes, bytes]:
    """(whole lines, the unterminated rest a writer is still writing)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def _last_lines(current: bytes, older: list[str], current_ino: int, tail: int,
                joiner: Joiner) -> list[Line]:
    """The last `tail` whole lines (all if tail < 0), reading older files only as needed.

    Raw lines are gathered newest file first until the last `tail` lines
    start, whole, inside them (`_start_of_tail`); only those are parsed.
    """
    blobs = [current]                   # newest first
    for path in reversed(older):
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != current_ino:  # else rotated while we read
                    blobs.append(f.read())
        except FileNotFoundError:
            continue
    unfinished = {stream for stream in _STREAMS if _newest_is_part(blobs, stream)}
    raws: list[bytes] = []
    start = -1
    for blob in blobs:
        raws = [raw for raw in blob.split(b"\n") if raw] + raws
        if tail >= 0:
            start = _start_of_tail(raws, tail, unfinished)
            if start >= 0:
                break
    entries = _parse(raws[start + 1:])
    lines = [line for e in entries if (line := joiner.push(e)) is not None]
    if tail < 0:
        return lines
    return list(deque(lines, maxlen=tail)) if tail else []


def _newest_is_part(blobs: list[bytes], stream: bytes) -> bool:
    """Whether the newest entry of `stream` in `blobs` (newest first) is a P part.

    Found by searching the bytes from the end, not by splitting them into
    lines: a stream that wrote nothing for a long time costs no parsing.
    """
    needle = b" " + stream + b" "
    for blob in blobs:
        end = len(blob)
        while (at := blob.rfind(needle, 0, end)) >= 0:
            line_start = blob.rfind(b"\n", 0, at) + 1
            if b" " not in blob[line_start:at]:     # the stamp, then the stream: an entry
                return blob[at + len(needle):at + len(needle) + 2] == b"P "
            end = at                                # the words were in some line's data
    return False


def _start_of_tail(raws: list[bytes], tail: int, unfinished: set[bytes]) -> int:
    """The index after which the last `tail` lines begin, whole; -1 if not within `raws`.

    The streams' lines interleave: a long stdout line's first part may come
    before the stderr line where the last `tail` line ends begin, and a
    line still being written (`unfinished`) may have begun long before. So
    the start goes back to the previous line end of each stream with
    something after it or a line unfinished; what that adds ends earlier
    and is dropped.
    """
    cut = -1
    ends = 0
    for i in range(len(raws) - 1, -1, -1):
        if _ends_line(raws[i]):
            ends += 1
            if ends > tail:
                cut = i
                break
    if cut < 0:
        return -1
    need = {_stream_of(raw) for raw in raws[cut + 1:]} | unfinished
    for i in range(cut, -1, -1):
        stream = _stream_of(raws[i])
        if stream in need and _ends_line(raws[i]):
            need.discard(stream)
            if not need:
                return i
    return -1


def _trailing_parts(data: bytes) -> list[Entry]:
    """The P entries at the end of `data` whose line has not ended yet, in order."""
    found: list[Entry] = []
    ended: set[str] = set()
    for raw in reversed(data.split(b"\n")[-(MAX_JOINED // 16384 * 2 + 4):]):
        entry = parse_entry(raw) if raw else None
        if entry is None:
            continue
        if entry[2] != "P":
            ended.add(entry[1])
        elif entry[1] not in ended:
            found.append(entry)
        if len(ended) == 2:
            break
    return found[::-1]


def read(path: str, tail: int, follow: bool, alive: Callable[[], bool],
         since_ns: int = 0) -> Iterator[list[Line]]:
    """Yields batches of whole lines: the last `tail` (all if tail < 0), then new ones if following.

    With `since_ns`, only lines whose time is at or after it, the tail taken
    of those (as the kubelet applies --since before --tail).
    Following ends when the log is removed (the container was deleted) or
    `alive()` turns false (the caller went away).
    """
    try:
        f: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        return
    joiner = Joiner()
    try:
        data, pending = _split_complete(f.read())
        older = rotated_paths(path)[:-1]
        if tail == 0:
            lines: list[Line] = []
        else:
            # Since a time: which lines count for the tail is known only once
            # their times are, so every file is read (as many as the writer keeps).
            lines = _last_lines(data, older, os.fstat(f.fileno()).st_ino,
                                -1 if since_ns else tail, joiner)
        if not follow:
            # A line still being written is shown as it is, and counts as one.
            lines += joiner.rest()
        if since_ns:
            lines = [line for line in lines if line[0] >= since_ns]
        if tail >= 0 and (not follow or since_ns):
            lines = lines[-tail:] if tail else []
        for i in range(0, len(lines), BATCH):
            yield lines[i : i + BATCH]
        if not follow:
            return
        if tail == 0:
            # Parts of a line still waiting for its end start the first line shown.
            for entry in _trailing_parts(data):
                joiner.push(entry)
        while alive():
            chunk = f.read()
            if chunk:
                complete, pending = _split_complete(pending + chunk)
                batch = [ln for e in _entries(complete) if (ln := joiner.push(e)) is not None
                         and ln[0] >= since_ns]
                if batch:
                    yield batch
                continue
            if not os.path.exists(path):
                return
            successor = _next_file(path, os.fstat(f.fileno()).st_ino)
            if successor is None:
                time.sleep(FOLLOW_POLL_SECONDS)
                continue
            # Rotated: what the old file still holds was written before the
            # rename, then the files after it, in order.
            rest, _ = _split_complete(pending + f.read())
            batch = [ln for e in _entries(rest) if (ln := joiner.push(e)) is not None]
            f.close()
            f, pending = successor, b""
            if batch:
                yield batch
    finally:
        f.close()


def _next_file(path: str, ino: int) -> BinaryIO | None:
    """The file that came after the one with inode `ino`, opened; None if that is `path`.

    If `ino` is gone altogether (rotated away between polls), the oldest
    file left is next.
    """
    for _ in range(5):   # a rotation while we look: look again
        chain = []
        for p in rotated_paths(path):
            try:
                chain.append((p, os.stat(p).st_ino))
            except FileNotFoundError:
                continue
        inodes = [i for _, i in chain]
        if not chain or inodes[-1] == ino:
            return None
        at = inodes.index(ino) + 1 if ino in inodes else 0
        name, want = chain[at]
        try:
            f = open(name, "rb")
        except FileNotFoundError:
            continue
        if os.fstat(f.fileno()).st_ino == want:
            return f
        f.close()
    return None
