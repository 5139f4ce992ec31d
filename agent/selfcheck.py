"""The agent's self-check: what it owns in the kernel, compared and repaired on every resync.

Run by the node loop on each pass (node.py), so it is level-triggered: it
does not matter what changed or whether a notification was missed, the
next pass compares again. What is checked, each from one dump or read per
kind of object (never a syscall per container in a loop), and how often:

- the node network (network.py's repair: bridge, its address and up
  state, routes to other nodes' subnets and the service CIDR's into the
  bridge, forwarding, the containers' veths): every pass, at most once
  per NETWORK_SECONDS, and at once on a link, address or route
  notification (kernelwatch.py);
- the node's nft tables (hostPort DNAT, the guard, and the services table
  through `more_nft`, services_sync.py's repair): every NFT_SECONDS (it
  runs `nft`, a process) and at once on an nftables notification;
- the cgroup and rootfs mount of every running container: every
  CONTAINER_SECONDS, from one listing of the cgroup parent and one read of
  mountinfo. A missing one is logged and reported, not repaired: the
  container's processes may be anywhere by then, and restarting it
  blindly could lose its work; the operator (or the next exit) decides.

Every difference found is logged in one line (what was found, what was
done), so it is also in the agent's recent events (`mctl debug node NODE
events`), and counted in a DriftLog (`mctl debug node NODE drift`). A
repair that keeps failing (a route while its link is down) is logged when
it starts failing and when it succeeds, not on every pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

from .containers import Container, ContainerManager
from .drift import FAILED, REPORTED, DriftLog, Incidents, Repair
from .kernelwatch import KernelWatch

log = logging.getLogger(__name__)

NETWORK_SECONDS = 1.0
NFT_SECONDS = 5.0
CONTAINER_SECONDS = 5.0
# Notifications come in bursts (a container start is several link changes,
# a repair of ours is itself notified): a check they trigger waits this
# long after the last one of its kind, so a burst costs a few checks, and
# a table that somehow never compares equal is rewritten at most this often.
MIN_GAP_SECONDS = 0.2


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point of this mount namespace (proc(5): field 5, octal escapes undone)."""
    points = set()
    with open(mountinfo) as f:
        for line in f:
            fields = line.split(" ", 5)
            if len(fields) > 4:
                points.add(fields[4].encode().decode("unicode_escape")
                           if "\\" in fields[4] else fields[4])
    return points


class SelfCheck:
    """Due times, the kernel watch, and the record of drift found, for one node loop."""

    def __init__(self, manager: ContainerManager, wake: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic,
                 more_nft: Callable[[], list[Repair]] | None = None) -> None:
        self.manager = manager
        # Checks of nft tables the network does not own, run in the nft pass.
        self.more_nft = more_nft
        self.wake = wake
        self.clock = clock
        self.record = DriftLog()
        # Sent with the status reports: the scheduler's Node events.
        self.incidents = Incidents()
        self._lock = threading.Lock()
        # Why each kind of check is due early ("" for not early).
        self._hints: dict[str, str] = {}
        self._last: dict[str, float] = {}
        self._failing: dict[str, str] = {}        # what -> the failure last logged
        self._reported: set[tuple[str, str]] = set()   # (container, "cgroup"/"rootfs")
        self._watch: KernelWatch | None = None
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        network = self.manager.network
        if network is not None:
            self._watch = KernelWatch(self.notified, network.node_netns)
            self._watch.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def notified(self, kind: str, why: str) -> None:
        """A kernel notification (kernelwatch.py's thread): check `kind` on the next pass, now."""
        with self._lock:
            self._hints.setdefault(kind, why)
        self.wake()

    def _wake_later(self, seconds: float) -> None:
        """One pending wake of the loop at most (callers hold _lock)."""
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Timer(seconds, self.wake)
            self._timer.daemon = True
            self._timer.start()

    def _due(self, kind: str, every: float, now: float, hints_wait: bool = False) -> str:
        """Why `kind` is to be checked now ("" if not yet), and marks it checked.

        With `hints_wait`, a notification waits (kept) for a pass without it,
        and only the periodic check runs meanwhile.
        """
        last = self._last.get(kind, float("-inf"))
        with self._lock:
            hint = self._hints.pop(kind, "")
            if hint and (hints_wait or now - last < MIN_GAP_SECONDS):
                # Kept, and the loop woken again once the gap is over (a
                # waiting hint: the pass after the starts, node.py's).
                self._hints[kind] = hint
                hint = ""
                if not hints_wait:
                    self._wake_later(MIN_GAP_SECONDS - (now - last))
        if hint:
            why = f"notified: {hint}"
        elif now - last >= every * 0.95:
            why = "resync"
        else:
            return ""
        self._last[kind] = now
        return why

    def run(self, containers: Iterable[Container], starting: bool = False) -> list[Repair]:
        """One pass: the checks that are due; `containers` are those not being torn down.

        `starting`: containers are being made. Their veths are then most of
        the link notifications, and a check each brought (every
        MIN_GAP_SECONDS: four dumps of every link per node during an apply
        of 30 replicas) found nothing; the periodic check still runs every
        NETWORK_SECONDS meanwhile, and the notifications' check at the first
        pass after the starts.
        """
        network = self.manager.network
        containers = list(containers)
        now = self.clock()
        found: list[Repair] = []
        if network is not None and network.ready and not network.disabled:
            why = self._due("links", NETWORK_SECONDS, now, hints_wait=starting)
            if why:
                attachments = {c.id: c.network for c in containers if c.network is not None}
                found += self._timed("network", why, lambda: network.repair(attachments))
            why = self._due("nft", NFT_SECONDS, now)
            if why:
                more = self.more_nft
                found += self._timed("nft", why, network.repair_nft if more is None else
                                     lambda: network.repair_nft() + more())
        why = self._due("containers", CONTAINER_SECONDS, now)
        if why:
            found += self._timed("containers", why, lambda: self._check_containers(containers))
        return found

    def _timed(self, kind: str, why: str, check: Callable[[], list[Repair]]) -> list[Repair]:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            repairs = check()
        except Exception as e:  # noqa: BLE001 - the next pass checks again
            log.exception("%s check failed", kind)
            repairs = [Repair(f"{kind} check", "not done", str(e), FAILED)]
        elapsed, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        news = [r for r in repairs if self._is_news(r)]
        for r in news:
            (log.warning if r.ok else log.error)("drift found (%s): %s", why, r.line())
        self._settle(kind, repairs)
        self.record.checked(f"{kind} {why.split(':')[0]}", elapsed, news, cpu)
        self.incidents.repaired(news)
        return news

    def _is_news(self, r: Repair) -> bool:
        """False for a failure already logged in the same words (retried every pass)."""
        if r.ok:
            self._failing.pop(r.what, None)
            return True
        if self._failing.get(r.what) == r.done:
            return False
        self._failing[r.what] = r.done
        return True

    def _settle(self, kind: str, repairs: list[Repair]) -> None:
        """Forgets failures of `kind`'s objects that no longer differ (fixed by someone else)."""
        still = {r.what for r in repairs}
        prefixes = {"network": ("bridge", "route", "veth", "net."), "nft": ("nft", "nftables"),
                    "containers": ("container",)}[kind]
        for what in [w for w in self._failing if w.startswith(prefixes) and w not in still]:
            log.info("drift gone: %s", what)
            del self._failing[what]

    def _check_containers(self, containers: list[Container]) -> list[Repair]:
        running = [c for c in containers if c.running() and not c.busy]
        if not running:
            self._reported.clear()
            return []
        cgroups = self.manager.cgroups
        parent = self.manager.cgroup_parent
        children = {f"{parent}/{name}" for name in cgroups.list_children(parent)}
        mounted = mount_points()
        out: list[Repair] = []
        problems: set[tuple[str, str]] = set()
        for c in running:
            missing = []
            if c.cgroup not in children:
                missing.append(("cgroup", f"cgroup {c.cgroup} missing"))
            rootfs = os.path.join(c.bundle, "rootfs")
            if rootfs not in mounted:
                missing.append(("rootfs", f"rootfs mount {rootfs} missing"))
            if not missing:
                continue
            # It may have exited since the snapshot: then nothing is wrong.
            self.manager.refresh(c)
            if not c.running():
                continue
            for key, found in missing:
                problems.add((c.id, key))
                if (c.id, key) not in self._reported:
                    out.append(Repair(f"container {c.id}", found,
                                      "not restarted (its processes may still run)", REPORTED))
        self._reported = problems
        return out
