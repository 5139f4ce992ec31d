"""Keeping the image store's disk bounded: unused images go, least recently used first.

As the kubelet's image GC: when the filesystem holding the store is more
than `--image-gc-high` percent full, images no container of the node uses
are removed, the one used longest ago first, until it is at most
`--image-gc-low` percent full (or nothing more may go). Removing an image
removes the layers (and kept blobs) no other image names (importer.py).
`busybox:latest` is built into every node and stays.

"Used" is when a container was last created from the image (the store
stamps the image record: `ImageStore.touch`); an image never used counts
from when it was stored. Every removal is logged with what it freed and
handed to `on_removed` as one line, which the agent sends as a Node event
(reason ImageGarbageCollected: `mctl events`, `describe node`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mctl.common.quantity import format_bytes_short

from .importer import ImageImporter
from .store import ImageError

log = logging.getLogger(__name__)

BUILT_IN = "busybox:latest"
PERIOD_S = 30.0
EVENT_REASON = "ImageGarbageCollected"


@dataclass(frozen=True)
class Candidate:
    name: str
    last_used: float          # unix seconds


def order(candidates: Iterable[Candidate], in_use: set[str]) -> list[str]:
    """The images that may go, least recently used first (ties: by name, to be stable)."""
    free = [c for c in candidates if c.name not in in_use and c.name != BUILT_IN]
    return [c.name for c in sorted(free, key=lambda c: (c.last_used, c.name))]


def used_percent(path: str) -> float:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    if total == 0:
        return 0.0
    return 100.0 * (total - st.f_bavail * st.f_frsize) / total


class ImageGC:
    def __init__(self, importer: ImageImporter, in_use: Callable[[], set[str]],
                 high: float = 85.0, low: float = 80.0, period: float = PERIOD_S,
                 on_removed: Callable[[str], None] = lambda _line: None) -> None:
        if not 0 < low <= high <= 100:
            raise ValueError(f"--image-gc-low {low} and --image-gc-high {high}: "
                             "need 0 < low <= high <= 100")
        self.importer = importer
        self.store = importer.store
        self.in_use = in_use
        self.high, self.low = high, low
        self.period = period
        self.on_removed = on_removed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[str]:
        """Removes unused images while the store's filesystem is over the high mark."""
        used = used_percent(self.store.root)
        if used <= self.high:
            return []
        removed: list[str] = []
        candidates = [Candidate(i.name, self.store.last_used(i.name)) for i in self.store.list()]
        for name in order(candidates, self.in_use()):
            if used <= self.low:
                break
            # Asked again for each, under the lock the node loop holds while
            # it makes a container: none is made from it until it is gone.
            with self.store.users_lock:
                if name in self.in_use():
                    continue
                try:
                    layers, freed = self.importer.remove(name)
                except (ImageError, OSError) as e:
                    log.warning("image gc could not remove %s: %s", name, e)
                    continue
            after = used_percent(self.store.root)
            log.warning("image gc removed image=%s layers=%d bytes=%d disk_used=%.1f%%->%.1f%% "
                        "(high %.0f%%, low %.0f%%)", name, layers, freed, used, after,
                        self.high, self.low)
            self.on_removed(f"removed unused image {name} ({layers} layers, "
                            f"{format_bytes_short(freed)} freed): disk {used:.0f}% -> "
                            f"{after:.0f}% used (high {self.high:g}%, low {self.low:g}%)")
            removed.append(name)
            used = after
        if used > self.low:
            log.warning("image gc: disk still %.1f%% used (low mark %.0f%%): the rest is in use "
                        "or not images", used, self.low)
        return removed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="image-gc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the next period tries again
                log.exception("image gc pass failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
