"""An in-memory stand-in for scheduler/store.py's Store, with etcd's semantics.

What the services and the controller rely on is kept: one global revision
that every transaction bumps, a mod revision per key, compare-and-swap
writes (all or nothing, 0 = "must not exist"), the leader's fence, leases
that take their keys with them when they lapse, and a watch that delivers
each transaction's events in order (optionally held back, to test readers
that must wait for the cache). What it leaves out is the network.

Tests steer it through `before_commit` (runs before each transaction, e.g.
to slip in a concurrent writer), `unavailable` (every call fails as when
etcd is away) and `expire_lease`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mctl.scheduler.keys import KeyCodec
from mctl.scheduler.store import (
    MAX_TXN_OPS,
    Conflict,
    Fence,
    NotLeader,
    Snapshot,
    StoreUnavailable,
    Write,
)


@dataclass
class _Value:
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int | None


# The shapes of pyetcd's watch responses that cache.py reads.
@dataclass
class PutEvent:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass
class DeleteEvent:
    key: bytes
    mod_revision: int
    value: bytes = b""


@dataclass
class _Header:
    revision: int


@dataclass
class WatchResponse:
    header: _Header
    events: list[PutEvent | DeleteEvent] = field(default_factory=list)


class FakeStore:
    def __init__(self, prefix: str = "/t/") -> None:
        self.keys = KeyCodec(prefix)
        self.prefix = self.keys.prefix
        self.data: dict[str, _Value] = {}
        self.rev = 1
        self.commits = 0                 # transactions that succeeded
        self.unavailable = False
        self.before_commit: list[Callable[[], None]] = []
        self.hold_watch = False          # True: watch events wait for release_watch()
        self._held: list[WatchResponse] = []
        self._watchers: list[Callable[[object], None]] = []
        self._leases: dict[int, int] = {}   # lease id -> ttl; absent = lapsed
        self.refreshes_sent = 0           # refresh_lease_nowait calls
        self.hold_refreshes = False       # True: queued refreshes are never answered
        self._next_lease = 1000
        self._lock = threading.RLock()

    # -- failure injection -------------------------------------------------------

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("etcd unreachable: fake store is down")

    def expire_lease(self, lease: int) -> None:
        """As if the lease's TTL had passed: its keys are deleted."""
        with self._lock:
            self._leases.pop(lease, None)
            gone = [k for k, v in self.data.items() if v.lease == lease]
            if gone:
                self._apply([Write(k, None, self.data[k].mod_revision) for k in gone], None)

    def release_watch(self) -> None:
        held, self._held = self._held, []
        for response in held:
            for watcher in list(self._watchers):
                watcher(response)

    # -- reads ---------------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes | None, int]:
        self._check()
        with self._lock:
            v = self.data.get(key)
            return (v.value, v.mod_revision) if v is not None else (None, 0)

    def snapshot(self) -> Snapshot:
        self._check()
        with self._lock:
            snap = Snapshot(revision=self.rev)
            for key, v in sorted(self.data.items()):
                parsed = self.keys.parse(key)
                if parsed is None or key.startswith(self.keys.events_prefix()):
                    continue
                snap.mod_revisions[key] = v.mod_revision
                snap.put(parsed, v.value)
            return snap

    def revision(self) -> int:
        self._check()
        return self.rev

    def get_prefix_meta(self, prefix: str) -> list[tuple[str, bytes, int]]:
        self._check()
        with self._lock:
            return [(key, v.value, v.mod_revision) for key, v in sorted(self.data.items())
                    if key.startswith(prefix)]

    def get_prefix(self, prefix: str) -> list[bytes]:
        return [value for _, value, _ in self.get_prefix_meta(prefix)]

    def subnet_claims(self) -> dict[str, tuple[str, int]]:
        self._check()
        with self._lock:
            out = {}
            for key, v in self.data.items():
                parsed = self.keys.parse(key)
                if key.startswith(self.keys.subnets_prefix) and parsed is not None:
                    out[parsed.name] = (v.value.decode(), v.mod_revision)
            return out

    # -- writes --------------------------------------------------------------------

    def commit(self, writes: Iterable[Write], fence: Fence | None = None) -> int:
        self._check()
        batch = list(writes)
        revision = 0
        for i in range(0, len(batch), MAX_TXN_OPS):
            for hook in list(self.before_commit):
                hook()
            revision = self._apply(batch[i:i + MAX_TXN_OPS], fence)
        return revision

    def _apply(self, batch: list[Write], fence: Fence | None) -> int:
        with self._lock:
            if fence is not None:
                held = self.data.get(fence.key)
                if held is None or held.create_revision != fence.revision:
                    raise NotLeader(f"leadership (revision {fence.revision}) lost")
            for w in batch:
                current = self.data.get(w.key)
                if (current.mod_revision if current is not None else 0) != w.expect:
                    raise Conflict(f"{len(batch)} writes lost to a concurrent change "
                                   f"(first key {batch[0].key})")
                if w.lease is not None and w.lease not in self._leases:
                    raise StoreUnavailable(f"etcd error: lease {w.lease} not found")
            self.rev += 1
            self.commits += 1
            response = WatchResponse(_Header(self.rev))
            for w in batch:
                if w.value is None:
                    if w.key in self.data:
                        del self.data[w.key]
                        response.events.append(DeleteEvent(w.key.encode(), self.rev))
                    continue
                old = self.data.get(w.key)
                self.data[w.key] = _Value(w.value, self.rev,
                                          old.create_revision if old else self.rev, w.lease)
                response.events.append(PutEvent(w.key.encode(), w.value, self.rev))
            if self.hold_watch:
                self._held.append(response)
                return self.rev
        for watcher in list(self._watchers):
            watcher(response)
        return response.header.revision

    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        with self._lock:
            current = self.data.get(key)
            self._apply([Write(key, value, current.mod_revision if current else 0, lease)],
                        None)

    # -- leases and watches ------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        self._check()
        with self._lock:
            self._next_lease += 1
            self._leases[self._next_lease] = ttl
            return self._next_lease

    def refresh_lease(self, lease: int) -> int:
        self._check()
        return self._leases.get(lease, 0)

    def refresh_lease_nowait(self, lease: int, on_answer: Callable[[int], None]) -> None:
        """As etcd's keep-alive stream, with the answer at once (see hold_refreshes)."""
        self._check()
        self.refreshes_sent += 1
        if self.hold_refreshes:
            return
        on_answer(self._leases.get(lease, 0))

    def watch_events(self, callback: Callable[[object], None],
                     start_revision: int) -> Callable[[], None]:
        self._check()
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)
