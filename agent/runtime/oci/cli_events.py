"""`mctl-runtime events`: a container's resource statistics and OOM events as JSON lines.

    mctl-runtime events --stats ID              one stats event, then exit
    mctl-runtime events [--interval 5s] ID      a stats event every interval, and an
                                                {"type": "oom"} event when the kernel's
                                                OOM killer kills in the container

runc's shape, one JSON object a line: {"type": "stats", "id": ID, "data":
{cpu, memory, pids, blkio}} (cgroups/stats.py has the keys) and {"type":
"oom", "id": ID}. Without --stats the command runs until the container
stops (then exits 0) or it is interrupted. OOM kills are noticed by the
memory controller's oom_kill counter (v1 memory.oom_control, v2
memory.events), read every OOM_POLL seconds: runc registers an eventfd for
them instead, which would tie this command to v1's cgroup.event_control.
"""

from __future__ import annotations

import json
import sys
import time

from . import cli_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .cli_args import Invocation

OOM_POLL = 0.1
MIN_INTERVAL = 0.01
MAX_INTERVAL = 24 * 3600.0
_UNITS = (("ms", 0.001), ("us", 1e-6), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


class EventsError(Exception):
    """A bad --interval, a container without stats; one line."""


def parse_interval(text: str) -> float:
    """A Go duration as runc takes it: "5s", "100ms", "1m30s" -> seconds."""
    rest, total = text.strip(), 0.0
    if not rest:
        raise EventsError("--interval: empty (use a duration like 5s or 100ms)")
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        number, rest = rest[:i], rest[i:]
        unit = next((u for u in _UNITS if rest.startswith(u[0])), None)
        try:
            value = float(number)
        except ValueError:
            value = -1.0
        if unit is None or value < 0:
            raise EventsError(f"--interval: {text!r} is not a duration like 5s or 100ms")
        total += value * unit[1]
        rest = rest[len(unit[0]):]
    if not MIN_INTERVAL <= total <= MAX_INTERVAL:
        raise EventsError(f"--interval: {text!r} is outside [10ms, 24h]")
    return total


def events(inv: Invocation, write: Callable[[str], None] | None = None,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> int:
    from ..cgroups import CgroupError, detect, stats

    out = write or _print
    interval = parse_interval(inv.interval)
    c = cli_state.load(inv.root, inv.id)
    if c.status() == cli_state.STOPPED:
        raise EventsError(f"container {inv.id} is stopped: no stats")
    try:
        driver = detect()

        def stats_event() -> None:
            out(json.dumps({"type": "stats", "id": inv.id,
                            "data": stats.collect(driver, c.cgroup)}))

        if inv.stats:
            stats_event()
            return 0
        ooms = driver.oom_killed(c.cgroup)
        next_stats = clock()
        while c.status() != cli_state.STOPPED:
            now = clock()
            if now >= next_stats:
                stats_event()
                next_stats = now + interval
            seen = driver.oom_killed(c.cgroup)
            if seen > ooms:
                out(json.dumps({"type": "oom", "id": inv.id}))
            ooms = seen
            sleep(min(OOM_POLL, max(next_stats - clock(), 0.0)))
    except CgroupError as e:
        if c.status() == cli_state.STOPPED:
            return 0  # the container ended while we read its cgroup
        raise EventsError(f"container {inv.id}: {e}") from None
    return 0


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
