"""Host uid/gid ranges for containers with a user namespace, kept on disk.

A container with `securityContext.userNamespace: true` gets a range of
`size` host ids of its own (65536 by default, so every id an image may use,
nobody's 65534 included, maps): slot n is `base + n * size` up to the next
slot, and ids 0..size-1 inside map onto it (runtime/userns.py). No two
containers of the node share a slot, so root in one is a different host
user from root in another, and none of them is a user of the host's (ids
below 65536, where /etc/passwd's live).

As ipam.py keeps addresses (claims.py): one file per slot in use, named by
its number and holding its owner (the container id). The lowest free slot
is handed out.
"""

from __future__ import annotations

from dataclasses import dataclass

from mctl.common.claims import Claims

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
    """The id ranges this node's containers hold, one claim file each under `directory`."""

    def __init__(self, directory: str, base: int = 100_000, size: int = MIN_SIZE,
                 count: int = 0) -> None:
        """`count` caps the ranges (0: as many as fit below ID_LIMIT), so agents sharing
        a host (a local cluster's nodes) can be given windows that do not overlap."""
        if base < MIN_BASE:
            raise IdRangeError(f"user namespace id base {base} is below {MIN_BASE}, "
                               "among the host's own users")
        if size < MIN_SIZE:
            raise IdRangeError(f"user namespace range size {size} is below {MIN_SIZE}: "
                               "images use ids up to 65534 (nobody)")
        fit = (ID_LIMIT - base) // size
        if fit < 1:
            raise IdRangeError(f"no range of {size} ids fits between {base} and {ID_LIMIT}")
        if count < 0:
            raise IdRangeError(f"user namespace range count {count} must not be negative")
        if count > fit:
            raise IdRangeError(f"{count} user namespace ranges of {size} ids from {base} "
                               f"do not fit below {ID_LIMIT} (at most {fit})")
        self.count = count or fit
        self.directory = directory
        self.base = base
        self.size = size
        self._claims = Claims(directory, str.isdigit)  # slot number -> owner

    def _range(self, slot: str) -> IdRange:
        return IdRange(self.base + int(slot) * self.size, self.size)

    def held(self) -> dict[str, IdRange]:
        """owner -> range, for every range handed out."""
        return {owner: self._range(slot) for slot, owner in self._claims.held().items()}

    def allocate(self, owner: str) -> IdRange:
        """The range of `owner`: the one it holds already, else the lowest free one."""
        with self._claims.locked() as held:
            for slot, who in held.items():
                if who == owner:
                    return self._range(slot)
            for n in range(self.count):
                slot = str(n)
                if slot not in held and self._claims.claim(held, slot, owner):
                    return self._range(slot)
            raise IdRangeError(f"all {self.count} user namespace id ranges are in use")

    def release(self, owner: str) -> bool:
        """Frees the range `owner` holds; False if it held none."""
        with self._claims.locked() as held:
            return any(self._claims.drop(held, slot, owner)
                       for slot, who in list(held.items()) if who == owner)

    def release_all_but(self, owners: set[str]) -> list[str]:
        """Frees every range whose owner is not in `owners`; returns the owners freed."""
        before = self._claims.held()
        return [before[slot] for slot in self._claims.release_all_but(owners)]
