"""Drift: the kernel no longer holds what the agent made there, and what was done about it.

The agent owns things in the kernel that others can change behind its
back: a link blip deletes the routes through that link, an operator flushes
an nft table or deletes an address, a cgroup or mount of a running
container disappears. Being level-triggered means comparing, again and
again, what should be with what is, and putting back the difference
(selfcheck.py runs the checks; network.py compares and repairs the node
network). Each difference found is a Repair; DriftLog keeps the counts
and the latest ones for `mctl debug node NODE drift`; Incidents holds the
ones not yet told to the scheduler, which makes them Node events
(`mctl describe node NODE`).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import NamedTuple

KEPT_REPAIRS = 50
# Incidents waiting for a status report, and how many one report carries:
# a node whose routes flap cannot flood the scheduler's events (repeats are
# folded into one with a count; past the bound the oldest are dropped and
# the drop is said in one event).
PENDING_INCIDENTS = 20
INCIDENTS_PER_REPORT = 5
MESSAGE_CHARS = 200
DROPPED = "EventsDropped"
# Repair.outcome: put back; tried and failed (retried on the next check);
# found and only reported, on purpose (a running container's lost cgroup).
REPAIRED, FAILED, REPORTED = "repaired", "failed", "reported"


def stamp(t: float) -> str:
    """A wall-clock time to the millisecond, as the agent's log lines have it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class Repair(NamedTuple):
    """One difference between what the agent owns and the kernel, and what was done."""

    what: str            # the object: "route 10.244.1.0/24", "bridge mctl0", "nft table ip mctl0"
    found: str           # "missing", "down", "address 10.244.2.1/24 missing"...
    done: str            # "re-added", "set up", "rewritten"; for a failure, why
    outcome: str = REPAIRED

    @property
    def ok(self) -> bool:
        return self.outcome != FAILED

    def line(self) -> str:
        state = "NOT REPAIRED: " if self.outcome == FAILED else ""
        return f"{self.what}: {self.found}; {state}{self.done}"


class DriftLog:
    """Counts of checks and repairs, and the latest repairs, for the debug view."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checks = 0
        self.found = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.last_check = 0.0
        self.last_found = 0.0
        self.last_check_ms = 0.0
        # CPU time of the checks themselves (the agent's thread; nft's own
        # process not counted): what the self-check costs the node.
        self.cpu_s = 0.0
        self.started = time.monotonic()
        self.triggers: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[tuple[float, Repair]] = collections.deque(
            maxlen=KEPT_REPAIRS)

    def checked(self, trigger: str, elapsed_s: float, repairs: list[Repair],
                cpu_s: float = 0.0) -> None:
        now = time.time()
        with self._lock:
            self.checks += 1
            self.cpu_s += cpu_s
            self.triggers[trigger] += 1
            self.last_check = now
            self.last_check_ms = elapsed_s * 1000
            for r in repairs:
                self.found += 1
                self.last_found = now
                self.outcomes[r.outcome] += 1
                self.recent.append((now, r))

    def lines(self, limit: int = 0) -> list[str]:
        """What `mctl debug node NODE drift` prints."""
        def when(t: float) -> str:
            return f"{stamp(t)} ({time.time() - t:.0f}s ago)" if t else "never"

        with self._lock:
            triggers = ", ".join(f"{k} {v}" for k, v in sorted(self.triggers.items()))
            share = self.cpu_s / max(time.monotonic() - self.started, 1e-9) * 100
            out = [f"checks: {self.checks} ({triggers or 'none yet'}); last {when(self.last_check)}"
                   f", took {self.last_check_ms:.1f} ms; cpu {self.cpu_s * 1000:.0f} ms in all "
                   f"({share:.3f}% of a core)",
                   f"drift found: {self.found}, "
                   + ", ".join(f"{k}: {self.outcomes[k]}" for k in (REPAIRED, FAILED, REPORTED))
                   + f"; last found {when(self.last_found)}"]
            recent = list(self.recent)
        if limit > 0:
            recent = recent[-limit:]
        if recent:
            out.append("")
            out += [f"{stamp(t)} {r.line()}" for t, r in recent]
        return out


class Incidents:
    """Node events not yet delivered to the scheduler, bounded and deduplicated.

    The node loop takes a few with each status report and forgets them only
    once the report was delivered, so a scheduler that is down loses none
    of the latest PENDING_INCIDENTS.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (reason, message) -> [type, times seen, first seen unix ms], oldest first.
        self._pending: collections.OrderedDict[tuple[str, str], list] = (
            collections.OrderedDict())
        self._dropped = 0

    def add(self, reason: str, message: str, warning: bool = False) -> None:
        key = (reason, message[:MESSAGE_CHARS])
        with self._lock:
            if key in self._pending:
                self._pending[key][1] += 1
                return
            if len(self._pending) >= PENDING_INCIDENTS:
                self._pending.popitem(last=False)
                self._dropped += 1
            self._pending[key] = ["Warning" if warning else "Normal", 1, int(time.time() * 1000)]

    def repaired(self, repairs: list[Repair]) -> None:
        """One incident per repair: DriftRepaired, DriftNotRepaired or DriftFound."""
        for r in repairs:
            reason = {REPAIRED: "DriftRepaired", FAILED: "DriftNotRepaired"}.get(
                r.outcome, "DriftFound")
            self.add(reason, r.line(), warning=r.outcome != REPAIRED)

    def peek(self, limit: int = INCIDENTS_PER_REPORT) -> list[tuple[str, str, str, int, int]]:
        """The oldest `limit`: (type, reason, message, times, unix ms); a drop notice first."""
        with self._lock:
            out = []
            if self._dropped:
                out.append(("Warning", DROPPED,
                            f"{self._dropped} node events dropped (more than "
                            f"{PENDING_INCIDENTS} waiting for the scheduler)", self._dropped, 0))
            for (reason, message), (type_, times, unix_ms) in self._pending.items():
                if len(out) >= limit:
                    break
                out.append((type_, reason, message, times, unix_ms))
            return out

    def delivered(self, sent: list[tuple[str, str, str, int, int]]) -> None:
        """Forgets what a delivered report carried (repeats seen since are kept)."""
        with self._lock:
            for _, reason, message, times, _ in sent:
                if reason == DROPPED:
                    self._dropped = max(0, self._dropped - times)
                    continue
                entry = self._pending.get((reason, message))
                if entry is None:
                    continue
                if entry[1] > times:
                    entry[1] -= times
                else:
                    del self._pending[(reason, message)]
