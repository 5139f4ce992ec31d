"""Host uid/gid ranges for containers with a user namespace, kept on disk.

A container with `securityContext.userNamespace: true` gets a range of
`size` host ids of its own (65536 by default, so every id an image may use,
nobody's 65534 included, maps): slot n is `base + n * size` up to the next
slot, and ids 0..size-1 inside map onto it (runtime/userns.py). No two
containers of the node share a slot, so root in one is a different host
user from root in another, and none of them is a user of the host's (ids
below 65536, where /etc/passwd's live).

As ipam.py keeps addresses: one file per slot in use, named by its number
and holding its owner (the container id), made with O_EXCL so a slot never
gets two owners. A restarted agent reads the directory back, keeps the
slots of the containers it adopts and frees the rest. The lowest free slot
is handed out.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

# Ids stay below 2**31: some tools still read uids as signed 32-bit numbers.
ID_LIMIT = 1 << 31
MIN_BASE = 65536
MIN_SIZE = 65536


class IdRangeError(Exception):
    """No range could be given out (all in use), or the pool is misconfigured."""


@dataclass(frozen=True)
class IdRange:
    start: int      # first host id; the container's 0
    size: int


class IdRanges:
    """The id ranges this node's containers hold, one file each under `directory`."""

    def __init__(self, directory: str, base: int = 100_000, size: int = MIN_SIZE) -> None:
        if base < MIN_BASE:
            raise IdRangeError(f"user namespace id base {base} is below {MIN_BASE}, "
                               "among the host's own users")
        if size < MIN_SIZE:
            raise IdRangeError(f"user namespace range size {size} is below {MIN_SIZE}: "
                               "images use ids up to 65534 (nobody)")
        self.count = (ID_LIMIT - base) // size
        if self.count < 1:
            raise IdRangeError(f"no range of {size} ids fits between {base} and {ID_LIMIT}")
        self.directory = directory
        self.base = base
        self.size = size
        self._lock = threading.Lock()
        # slot -> owner, read from disk once: this agent is the directory's only writer.
        self._cache: dict[int, str] | None = None

    def _held(self) -> dict[int, str]:
        if self._cache is None:
            self._cache = self._read()
        return self._cache

    def _read(self) -> dict[int, str]:
        out = {}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(os.path.join(self.directory, name)) as f:
                    out[int(name)] = f.read().strip()
            except FileNotFoundError:
                continue
        return out

    def _range(self, slot: int) -> IdRange:
        return IdRange(self.base + slot * self.size, self.size)

    def held(self) -> dict[str, IdRange]:
        """owner -> range, for every range handed out."""
        with self._lock:
            return {owner: self._range(slot) for slot, owner in self._held().items()}

    def allocate(self, owner: str) -> IdRange:
        """The range of `owner`: the one it holds already, else the lowest free one."""
        with self._lock:
            os.makedirs(self.directory, exist_ok=True)
            held = self._held()
            for slot, who in held.items():
                if who == owner:
                    return self._range(slot)
            for slot in range(self.count):
                if slot in held:
                    continue
                try:
                    fd = os.open(os.path.join(self.directory, str(slot)),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue  # never give one slot twice, whatever the cache says
                with os.fdopen(fd, "w") as f:
                    f.write(owner)
                held[slot] = owner
                return self._range(slot)
            raise IdRangeError(f"all {self.count} user namespace id ranges are in use")

    def release(self, owner: str) -> bool:
        """Frees the range `owner` holds; False if it held none."""
        with self._lock:
            held = self._held()
            for slot, who in list(held.items()):
                if who == owner:
                    del held[slot]
                    try:
                        os.unlink(os.path.join(self.directory, str(slot)))
                    except FileNotFoundError:
                        pass
                    return True
            return False

    def release_all_but(self, owners: set[str]) -> list[str]:
        """Frees every range whose owner is not in `owners`; returns the owners freed."""
        freed = [owner for owner in self.held() if owner not in owners]
        for owner in freed:
            self.release(owner)
        return freed
