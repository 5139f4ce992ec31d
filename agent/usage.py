"""Per-container usage, sampled cheaply from the cgroup files.

CPU is reported in cores: the growth of the cgroup's cumulative CPU time over
the wall time between two samples. Memory is the working set (usage minus
inactive file cache, as the kubelet reports), and pids the current count.
Disk is what the disk guard measured last (disklimit.py: writable layer,
/etc files and logs), taken as it is rather than walked again.
Samples are kept in memory; the scheduler receives them with the status
reports and keeps only the latest, never in etcd.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mctl.v1 import types_pb2

from .containers import ContainerManager
from .runtime.cgroups.base import CgroupError

log = logging.getLogger(__name__)


class UsageSampler:
    def __init__(self, manager: ContainerManager, interval: float = 5.0,
                 disk: Callable[[str], int | None] | None = None) -> None:
        self.manager = manager
        self.interval = interval
        # A container's bytes on disk at the disk guard's last check (DiskGuard.used).
        self.disk = disk
        self._prev: dict[str, tuple[int, float]] = {}   # id -> (cpu ns, monotonic s)
        self._latest: dict[str, types_pb2.Usage] = {}
        self._stop = threading.Event()

    def latest(self, cid: str) -> types_pb2.Usage | None:
        return self._latest.get(cid)

    def node_total(self) -> types_pb2.Usage:
        total = types_pb2.Usage()
        for u in list(self._latest.values()):
            total.cpu_cores += u.cpu_cores
            total.memory_bytes += u.memory_bytes
            total.pids += u.pids
            total.disk_bytes += u.disk_bytes
        return total

    def sample_once(self) -> None:
        latest = {}
        prev = {}
        for c in self.manager.snapshot():
            if not c.running():
                continue
            try:
                u = self.manager.cgroups.usage(c.cgroup)
            except CgroupError:
                continue
            now = time.monotonic()
            cores = 0.0
            before = self._prev.get(c.id)
            if before is not None and now > before[1]:
                cores = max(0, u.cpu_usage_ns - before[0]) / 1e9 / (now - before[1])
            prev[c.id] = (u.cpu_usage_ns, now)
            latest[c.id] = types_pb2.Usage(cpu_cores=round(cores, 3),
                                           memory_bytes=u.memory_working_set, pids=u.pids,
                                           disk_bytes=self._disk_bytes(c.id))
        self._prev = prev
        self._latest = latest

    def _disk_bytes(self, cid: str) -> int:
        used = self.disk(cid) if self.disk is not None else None
        return used or 0

    def run(self, on_sample: object = None) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - sampling must never stop the agent
                log.exception("usage sampling failed")
            if callable(on_sample):
                on_sample()

    def start(self, on_sample: object = None) -> None:
        threading.Thread(target=self.run, args=(on_sample,), name="usage",
                         daemon=True).start()

    def close(self) -> None:
        self._stop.set()
