"""A directory of claims: one file per claimed name, holding its owner.

What the node's address pool (agent/ipam.py) and user-namespace id ranges
(agent/idranges.py) keep on disk, like CNI's host-local plugin, and the
host-wide windows of user-namespace ids of local clusters' nodes
(cli/cluster.py): a claim is a file named by what is claimed (an address,
a slot number) and holding its owner (a container id, a node), created
with O_EXCL so that a name never gets two owners, even across threads,
processes or a crash in the middle. The directory is read once per
`Claims`; the agent, its directories' only writer, keeps them in memory
after that. A restarted agent reads them back, keeps the claims of the
containers it adopts and frees the rest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Claims:
    def __init__(self, directory: str, is_name: Callable[[str], bool]) -> None:
        self.directory = directory
        self._is_name = is_name  # other files (a crash's temporaries) are not claims
        self._lock = threading.Lock()
        self._cache: dict[str, str] | None = None

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read(self) -> dict[str, str]:
        out = {}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        for name in names:
            if not self._is_name(name):
                continue
            try:
                with open(self._path(name)) as f:
                    out[name] = f.read().strip()
            except FileNotFoundError:
                continue
        return out

    @contextmanager
    def locked(self) -> Iterator[dict[str, str]]:
        """name -> owner of every claim, to read and change (through `claim` and `drop`)
        while no other thread does."""
        with self._lock:
            if self._cache is None:
                self._cache = self._read()
            yield self._cache

    def held(self) -> dict[str, str]:
        """A copy of name -> owner."""
        with self.locked() as held:
            return dict(held)

    def claim(self, held: dict[str, str], name: str, owner: str) -> bool:
        """Claims `name` for `owner`; False if its file exists already, whatever the cache says."""
        for _ in range(3):
            os.makedirs(self.directory, exist_ok=True)
            try:
                fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                return False
            except FileNotFoundError:
                continue  # the directory was removed as empty meanwhile (remove_if_empty)
        else:
            raise FileNotFoundError(f"{self.directory}: removed while claiming {name}")
        with os.fdopen(fd, "w") as f:
            f.write(owner)
        held[name] = owner
        return True

    def drop(self, held: dict[str, str], name: str, owner: str) -> bool:
        """Frees `name` if its file says `owner` holds it; False if not."""
        try:
            with open(self._path(name)) as f:
                if f.read().strip() != owner:
                    return False
            os.unlink(self._path(name))
            return True
        except FileNotFoundError:
            return False
        finally:
            if held.get(name) == owner:
                del held[name]

    def remove_if_empty(self) -> None:
        """Removes the directory if no claim is left in it (a claim racing this retries)."""
        try:
            os.rmdir(self.directory)
        except OSError:
            pass  # not empty, or gone

    def release_all_but(self, owners: set[str]) -> list[str]:
        """Frees every claim whose owner is not in `owners`; returns the names freed."""
        with self.locked() as held:
            return [name for name, who in list(held.items())
                    if who not in owners and self.drop(held, name, who)]
