"""Retrying a compare-and-swap: read, decide, write; on a lost race, again.

Every write that depends on a read compares mod revisions (store.py), so a
concurrent writer makes it fail with Conflict instead of being overwritten.
The answer is always the same: read again and decide again, a few times,
then give up and let the caller say so (the API answers ABORTED: the client
may try again). One helper, so the number of attempts and the error are the
same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .store import Conflict, NotLeader

T = TypeVar("T")

ATTEMPTS = 5


class TooManyConflicts(Conflict):
    """Every attempt lost to a concurrent writer."""


def retry_conflicts(attempt: Callable[[int], T], attempts: int = ATTEMPTS,
                    what: str = "change") -> T:
    """Runs `attempt(n)` (n = 0, 1, ...) until it does not raise Conflict.

    Each attempt must read what it decides on afresh: `n > 0` says the last
    one lost a race, so caches may be stale. A lost leadership (NotLeader)
    is not a race and is raised at once.
    """
    last: Conflict | None = None
    for n in range(attempts):
        try:
            return attempt(n)
        except NotLeader:
            raise
        except Conflict as e:
            last = e
    raise TooManyConflicts(f"{what} lost {attempts} races to concurrent changes ({last})")
