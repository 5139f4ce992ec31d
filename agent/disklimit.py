"""A container's disk limit (`resources.disk`), enforced like the kubelet's ephemeral storage.

What a container writes (writable layer, /etc files, logs: diskusage.py)
is held to its workload's `resources.disk`, or to the node's default
(`mctl-agent --default-disk-limit`, 10Gi) when the workload gives none.
Every few seconds (`--disk-check-period`, 5 s) the guard measures each
running container; one over its limit is stopped (TERM, grace, KILL) with
the reason recorded in its exit, as a failed health check is. The replica
then reads `DiskLimit` with a message naming use and limit, and its
restart policy applies as for any other failure; the restart begins from
an empty writable layer, fresh /etc files and only the last log file
(ContainerManager.start).

Why measure and stop rather than have the kernel refuse the write: the
agent's state dir is usually on the root file system (here ext4 without
`prjquota`), so project quotas (the kubelet's
LocalStorageCapacityIsolationFSQuotaMonitoring) cannot be assumed; a
size-capped tmpfs would spend memory, and a loop-mounted image per
container needs mkfs and a loop device on every start. Measuring works on
any file system; between two checks a container can write past its limit
by what it writes in one period, as under the kubelet.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .containers import Container, ContainerManager
from .diskusage import container_bytes, over_limit
from .volumes import emptydir_over

log = logging.getLogger(__name__)

CHECK_SECONDS = 5.0


class DiskGuard:
    """Measures the running containers every `period` seconds and stops those over their limit."""

    def __init__(self, manager: ContainerManager, stop_grace: float,
                 on_change: Callable[[], None], period: float = CHECK_SECONDS,
                 measure: Callable[[str], int] = container_bytes) -> None:
        self.manager = manager
        self.stop_grace = stop_grace
        self.on_change = on_change
        self.period = period
        self.measure = measure
        self._used: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used(self, cid: str) -> int | None:
        """The container's bytes at the last check; None if it was not measured."""
        return self._used.get(cid)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="disk", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - the guard must outlive one bad pass
                log.exception("disk check failed")

    def check_once(self) -> list[Container]:
        """Measures every running container; starts stopping those over; returns them."""
        used: dict[str, int] = {}
        over = []
        for c in self.manager.snapshot():
            if c.busy or c.unhealthy or c.disk_limit or not c.running():
                # Being removed or stopped, or not running: nothing new is written.
                if c.id in self._used:
                    used[c.id] = self._used[c.id]
                continue
            used[c.id] = self.measure(c.bundle)
            why = (over_limit(used[c.id], self.manager.disk_limit_of(c))
                   or emptydir_over(c.bundle, c.replica))
            if why is not None:
                # Marked here, so the next pass and the other checkers leave it alone.
                c.disk_limit = why
                over.append(c)
                threading.Thread(target=self._evict, args=(c, why), name=f"evict-{c.id}",
                                 daemon=True).start()
        self._used = used
        return over

    def _evict(self, c: Container, why: str) -> None:
        log.warning("container=%s over its disk limit, stopping it: %s", c.id, why)
        try:
            self.manager.mark_disk_limit(c, why)
        except OSError as e:
            # Stopped all the same: on a full disk most of all. Only an agent
            # restarted before its restart would forget the reason.
            log.warning("container=%s disk limit not recorded in its bundle: %s", c.id, e)
        try:
            self.manager.stop(c, self.stop_grace)
            if c.exit is not None:
                c.exit = c.exit.replace(disk_limit=why)
        except Exception:  # noqa: BLE001 - logged; the next pass measures again
            log.exception("container=%s not stopped for its disk use", c.id)
        finally:
            c.disk_limit = ""
            self.on_change()
