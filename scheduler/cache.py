"""The cluster state in memory, kept current by one etcd watch.

Reading the whole prefix on every controller pass and every node report
costs a range read and a protobuf parse per object: with thousands of
replicas and hundreds of nodes reporting, that is where a scheduler's time
would go. Like Kubernetes' informers, the cache reads everything once, then
applies the watch's events in order, and hands out snapshots (shallow copies
of its maps, at one revision) for the price of copying dicts.

Freshness: a snapshot may lag etcd by the time an event takes to arrive.
Writers that must see their own writes wait for the revision their
transaction produced (`snapshot(min_revision=...)`). Readers that must see
every write made before they asked, by any scheduler (the API's lists and
lookups), wait for etcd's current revision: `latest()`, one small read
instead of the whole prefix, as Kubernetes' consistent reads from its watch
cache do. Every write is still a compare-and-swap on the mod revisions the
snapshot carries, so a stale read can only make a write fail, never
overwrite newer data. If the watch breaks (etcd restarted, history
compacted), the cache reloads from scratch.

Changes since a revision: the cache keeps the keys of its last
JOURNAL_LIMIT changes, so a follower of the state (the watch streams,
watchstream.py) can ask what moved since it last looked and pay for that
alone instead of comparing every object (`changes_since`). One that falls
further behind, or asks across a reload, is told to read everything again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from .keys import Kind, ParsedKey
from .store import Snapshot, Store, StoreUnavailable

log = logging.getLogger(__name__)

# How long a reader waits for the watch to deliver a revision it needs
# before reading etcd directly.
CATCH_UP_SECONDS = 2.0
# Changed keys remembered for `changes_since` (about 370 bytes each: 3.7 MB).
JOURNAL_LIMIT = 10_000

_COPIED = {Kind.WORKLOAD: "workloads", Kind.REPLICA: "replicas", Kind.CONFIG: "configs",
           Kind.SECRET: "secrets", Kind.VOLUME: "volumes"}


class StateCache:
    def __init__(self, store: Store, on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_change = on_change
        # Told each event (history) the watch brings, as stored bytes: the web
        # view keeps the recent ones (web/feed.py) without reading etcd.
        self.on_history: Callable[[bytes], None] | None = None
        self._lock = threading.Condition()
        self._snap: Snapshot | None = None      # None: not loaded, or the watch broke
        self._cancel: Callable[[], None] | None = None
        self._by_node: dict[str, set[tuple[str, str]]] = {}   # node -> its replicas' keys
        # (mod revision, key, parsed) of the latest changes, oldest first; complete
        # for every revision after _journal_floor.
        self._journal: deque[tuple[int, str, ParsedKey]] = deque()
        self._journal_floor = 0

    @property
    def revision(self) -> int:
        with self._lock:
            return self._snap.revision if self._snap is not None else 0

    def snapshot(self, min_revision: int = 0) -> Snapshot:
        """The state at one revision >= `min_revision`; loads or reloads as needed."""
        with self._lock:
            self._wait_for(min_revision)
            assert self._snap is not None
            return self._snap.copy()

    def _wait_for(self, min_revision: int) -> None:
        """Loads if needed and waits (lock held) until the cache reaches `min_revision`."""
        if self._snap is None:
            self._load()
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while self._snap is not None and self._snap.revision < min_revision:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("watch behind (at %d, need %d); reloading",
                            self._snap.revision, min_revision)
                self._reset()
                break
            self._lock.wait(left)
        if self._snap is None:
            self._load()

    def latest(self) -> Snapshot:
        """A snapshot that holds every write committed before this call, by anyone."""
        return self.snapshot(min_revision=self.store.revision())

    def has_heartbeat(self, node: str) -> bool:
        """Whether the node's heartbeat key exists (its lease is alive), as last seen.

        Called on every heartbeat, so it takes no lock: a set lookup is atomic
        under the GIL, and an answer one watch event old is what any reader
        of the cache gets anyway.
        """
        snap = self._snap
        return snap is not None and node in snap.heartbeats

    def node_count(self) -> int:
        """Registered nodes, as last seen (no lock, as has_heartbeat)."""
        snap = self._snap
        return len(snap.nodes) if snap is not None else 0

    def nodes_snapshot(self, nodes: Iterable[str], min_revision: int = 0) -> Snapshot:
        """Only the replicas bound to `nodes`, at one revision >= `min_revision`:
        what a batch of status reports needs, for O(their replicas), not O(all)."""
        with self._lock:
            self._wait_for(min_revision)
            assert self._snap is not None
            s = self._snap
            out = Snapshot(revision=s.revision)
            for node in nodes:
                for key in self._by_node.get(node, ()):
                    out.replicas[key] = s.replicas[key]
                    rkey = self.store.keys.replica(*key)
                    out.mod_revisions[rkey] = s.mod_revisions[rkey]
            return out

    def node_snapshot(self, node: str) -> Snapshot:
        """Only the replicas bound to `node` (what a node's status report needs)."""
        with self._lock:
            if self._snap is None:
                self._load()
            assert self._snap is not None
            s = self._snap
            out = Snapshot(revision=s.revision)
            for key in self._by_node.get(node, ()):
                out.replicas[key] = s.replicas[key]
                rkey = self.store.keys.replica(*key)
                out.mod_revisions[rkey] = s.mod_revisions[rkey]
            return out

    def changes_since(self, revision: int,
                      records: bool = True) -> tuple[Snapshot, list[ParsedKey]] | None:
        """What changed after `revision`: the changed keys, and a snapshot holding the
        current records of those still there (at the cache's revision; left empty with
        records=False, for a caller that reads them elsewhere); None when the cache
        cannot tell (not loaded, reloaded since, or more changes than it keeps)."""
        with self._lock:
            s = self._snap
            if s is None or revision < self._journal_floor:
                return None
            out = Snapshot(revision=s.revision)
            changed: dict[str, ParsedKey] = {}
            for rev, key, parsed in reversed(self._journal):
                if rev <= revision:
                    break
                changed.setdefault(key, parsed)
            if records:
                for key, parsed in changed.items():
                    _copy(s, out, key, parsed)
            return out, list(changed.values())

    def close(self) -> None:
        with self._lock:
            self._reset()

    # -- loading and following ----------------------------------------------------

    def _load(self) -> None:
        """Reads everything, then watches from the next revision (lock held)."""
        snap = self.store.snapshot()
        try:
            self._cancel = self.store.watch_events(self._on_watch, snap.revision + 1)
        except StoreUnavailable:
            raise
        self._snap = snap
        self._journal.clear()
        self._journal_floor = snap.revision
        self._by_node = {}
        for key, r in snap.replicas.items():
            self._by_node.setdefault(r.node, set()).add(key)
        log.info("state cache loaded at revision %d: %d workloads, %d replicas, %d nodes",
                 snap.revision, len(snap.workloads), len(snap.replicas), len(snap.nodes))

    def _reset(self) -> None:
        cancel, self._cancel = self._cancel, None
        self._snap = None
        if cancel is not None:
            try:
                cancel()
            except Exception:  # noqa: BLE001 - the watch may already be gone
                pass

    def _on_watch(self, response: object) -> None:
        if isinstance(response, Exception):
            log.warning("state watch broke (%s); the next read reloads", response)
            with self._lock:
                self._reset()
                self._lock.notify_all()
            if self.on_change is not None:
                self.on_change()
            return
        changed = False
        history: list[bytes] = []
        with self._lock:
            snap = self._snap
            if snap is None:
                return
            for event in response.events:    # type: ignore[attr-defined]
                key = event.key.decode()
                parsed = self.store.keys.parse(key)
                if parsed is not None and parsed.kind is Kind.EVENT:
                    # History, not state: only on_history hears of it.
                    if type(event).__name__ != "DeleteEvent":
                        history.append(event.value)
                    continue
                if parsed is None:
                    continue
                changed = True
                self._apply(snap, key, parsed, event)
            revision = max([response.header.revision,  # type: ignore[attr-defined]
                            *(e.mod_revision for e in response.events)])  # type: ignore
            snap.revision = max(snap.revision, revision)
            self._lock.notify_all()
        if history and self.on_history is not None:
            for value in history:
                self.on_history(value)
        if changed and self.on_change is not None:
            self.on_change()

    def _apply(self, snap: Snapshot, key: str, parsed: ParsedKey, event: object) -> None:
        deleted = type(event).__name__ == "DeleteEvent"
        replica = (parsed.namespace, parsed.name)
        if len(self._journal) >= JOURNAL_LIMIT:
            self._journal_floor = self._journal.popleft()[0]
        self._journal.append((int(event.mod_revision), key, parsed))  # type: ignore[attr-defined]
        if parsed.kind is Kind.REPLICA:
            old = snap.replicas.get(replica)
            if old is not None:
                self._by_node.get(old.node, set()).discard(replica)
        if deleted:
            snap.mod_revisions.pop(key, None)
            snap.remove(parsed)
            return
        snap.mod_revisions[key] = int(event.mod_revision)   # type: ignore[attr-defined]
        snap.put(parsed, event.value)                      # type: ignore[attr-defined]
        if parsed.kind is Kind.REPLICA:
            self._by_node.setdefault(snap.replicas[replica].node, set()).add(replica)


def _copy(src: Snapshot, dst: Snapshot, key: str, parsed: ParsedKey) -> None:
    """Copies one key's record (if `src` has it) and mod revision from `src` to `dst`."""
    if key in src.mod_revisions:
        dst.mod_revisions[key] = src.mod_revisions[key]
    kind, item = parsed.kind, (parsed.namespace, parsed.name)
    if kind in _COPIED:
        found = getattr(src, _COPIED[kind]).get(item)
        if found is not None:
            getattr(dst, _COPIED[kind])[item] = found
    elif kind is Kind.NODE:
        if parsed.name in src.nodes:
            dst.nodes[parsed.name] = src.nodes[parsed.name]
    elif kind is Kind.HEARTBEAT:
        if parsed.name in src.heartbeats:
            dst.heartbeats.add(parsed.name)
    elif kind is Kind.VIP:
        if parsed.name in src.vip_claims:
            dst.vip_claims[parsed.name] = src.vip_claims[parsed.name]
    elif kind is Kind.LEADER:
        dst.leader = src.leader
