"""Container logs in the CRI format: reading, tailing and following.

Each line of a container's log file is `<RFC3339Nano> <stream> <F|P> <data>`
(the format the kubelet and CRI-O write): the time the monitor read it, the
stream it came from, whether the line is full (F) or a part of a longer one
(P). Parsing lives here because both the agent (serving logs) and tests read it.
"""

from __future__ import annotations

import calendar
import os
import time
from collections import deque
from collections.abc import Callable, Iterator

Line = tuple[int, str, bytes]  # (unix ns, stream, data without newline)

FOLLOW_POLL_SECONDS = 0.1
BATCH = 500


def parse_line(raw: bytes) -> Line | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    stamp, stream = parts[0], parts[1]
    data = parts[3] if len(parts) == 4 else b""
    try:
        secs, _, frac = stamp.rstrip(b"Z").partition(b".")
        t = calendar.timegm(time.strptime(secs.decode(), "%Y-%m-%dT%H:%M:%S"))
        ns = t * 1_000_000_000 + int((frac or b"0").ljust(9, b"0")[:9])
    except ValueError:
        return None
    return ns, stream.decode(), data


def read(path: str, tail: int, follow: bool, alive: Callable[[], bool]) -> Iterator[list[Line]]:
    """Yields batches of lines: the last `tail` (all if tail < 0), then new ones if following.

    Following ends when the file is removed (the container was deleted) or
    `alive()` turns false (the caller went away).
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        if tail >= 0:
            last: deque[bytes] = deque(f, maxlen=tail) if tail else deque()
            if tail == 0:
                f.seek(0, os.SEEK_END)
            lines = [p for raw in last if (p := parse_line(raw)) is not None]
        else:
            lines = [p for raw in f if (p := parse_line(raw)) is not None]
        for i in range(0, len(lines), BATCH):
            yield lines[i : i + BATCH]
        if not follow:
            return
        pending = b""
        while alive():
            chunk = f.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                batch = [p for raw in complete if (p := parse_line(raw)) is not None]
                if batch:
                    yield batch
                continue
            if not os.path.exists(path):
                return
            time.sleep(FOLLOW_POLL_SECONDS)
