"""The lock between making containers from images and removing images.

`image rm` and image GC ask which containers use an image and remove it
if none does; a container made from the image between that answer and the
removal would lose its layers. So the two exclude each other. But the node
loop makes several containers at once (node.py's parallel starts), and
those need not exclude each other: they only read the store. Hence a
shared/exclusive lock: makers hold it shared, `image rm` and image GC
exclusive (`with lock:`, re-entrant for the thread that holds it).

A waiting exclusive holder keeps new shared holders out, so a node that
keeps making containers cannot starve image GC; removals are rare and
short, so the makers wait little.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class UsersLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._owner: int | None = None      # the thread holding it exclusive
        self._depth = 0
        self._exclusive_waiting = 0

    def __enter__(self) -> UsersLock:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return self
            self._exclusive_waiting += 1
            try:
                while self._owner is not None or self._shared:
                    self._cond.wait()
            finally:
                self._exclusive_waiting -= 1
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("UsersLock released by a thread that does not hold it")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held by each container being made; many at once, none while an exclusive holder
        holds or waits (unless this thread is that holder)."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me:
                while self._owner is not None or self._exclusive_waiting:
                    self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if self._shared == 0:
                    self._cond.notify_all()
