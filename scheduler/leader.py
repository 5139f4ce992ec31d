"""Leader election among scheduler processes, on an etcd lease.

Every scheduler serves the API; only the leader places and reconciles. To
lead, a process creates the `leader` key bound to a lease of its own (a
transaction that succeeds only if the key does not exist) and keeps the
lease alive. When the leader dies, its lease lapses after `ttl` seconds, etcd
deletes the key and the next campaigner to try creates it. A leader that
stops cleanly revokes its lease, so the hand-over is immediate.

Being elected yields a `Fence` (the key's create revision); the controller
passes it with every write, so that writes from a leader that lost its lease
without noticing (a long pause, a partition) are refused by etcd itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .store import Fence, Store, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_TTL = 3


class LeaderElector:
    def __init__(self, store: Store, identity: str, ttl: int = DEFAULT_TTL,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.store = store
        self.identity = identity
        self.ttl = ttl
        self.on_change = on_change
        self._fence: Fence | None = None
        self._since_ms = 0
        self._lease: int | None = None
        self._lease_ok = 0.0            # monotonic time of the last good refresh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> Fence | None:
        """The current proof of leadership, or None while not leading."""
        return self._fence

    @property
    def leading_since_ms(self) -> int:
        return self._since_ms if self._fence is not None else 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops campaigning; a leader steps down and frees the key at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lease, self._lease = self._lease, None
        self._set(None)
        if lease is not None:
            try:
                self.store.revoke_lease(lease)
            except StoreUnavailable:
                pass   # it lapses by itself within ttl

    # -- the campaign ------------------------------------------------------------

    def _run(self) -> None:
        # Refresh well within the TTL: a missed refresh or two must not cost
        # the leadership, a dead process must lose it within `ttl`.
        interval = self.ttl / 3
        while not self._stop.is_set():
            try:
                if self._fence is None:
                    self._campaign()
                else:
                    self._keep()
            except StoreUnavailable as e:
                log.warning("election: %s", e)
                self._step_down_if_expired()
            self._stop.wait(interval if self._fence is not None else interval / 2)

    def _campaign(self) -> None:
        if self._lease is None:
            self._lease = self.store.grant_lease(self.ttl)
            self._lease_ok = time.monotonic()
        elif self.store.refresh_lease(self._lease) <= 0:
            self._lease = None      # expired while waiting: get a fresh one next time
            return
        else:
            self._lease_ok = time.monotonic()
        created, revision, holder = self.store.create(
            self.store.keys.leader, self.identity.encode(), self._lease)
        if created:
            log.info("leader elected id=%s revision=%d", self.identity, revision)
            self._set(Fence(self.store.keys.leader, revision))

    def _keep(self) -> None:
        assert self._lease is not None
        if self.store.refresh_lease(self._lease) <= 0:
            log.warning("leadership lost: lease expired id=%s", self.identity)
            self._lease = None
            self._set(None)
            return
        self._lease_ok = time.monotonic()

    def _step_down_if_expired(self) -> None:
        # etcd unreachable: past the TTL our lease is surely gone, so stop
        # acting as leader (the fence would refuse our writes anyway).
        if self._fence is not None and time.monotonic() - self._lease_ok > self.ttl:
            log.warning("leadership lost: etcd unreachable for %ds id=%s", self.ttl,
                        self.identity)
            self._lease = None
            self._set(None)

    def _set(self, fence: Fence | None) -> None:
        was = self._fence is not None
        self._fence = fence
        if fence is not None:
            self._since_ms = int(time.time() * 1000)
        if (fence is not None) != was and self.on_change is not None:
            self.on_change(fence is not None)
