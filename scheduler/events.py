"""Events: what happened to workloads, replicas and nodes, for `mctl describe`.

Events are history, not state: they live under `events/` in etcd, outside
the snapshots the controller decides on, and are written off the hot path
by one background thread in batches. Two bounds keep them small, as
Kubernetes does with its one-hour event TTL:

- every event is bound to a lease of about an hour, so etcd forgets it;
- each object keeps at most MAX_PER_OBJECT events: once this process has
  written more than that for one object, the oldest are deleted.

Losing an event (queue full, etcd down) never holds up scheduling; it is
logged and dropped.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import queue
import threading
import time

from mctl.v1 import types_pb2

from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)

MAX_PER_OBJECT = 20
EVENT_TTL_SECONDS = 3600
# A lease is shared by the events written within this long of its grant.
LEASE_ROTATE_SECONDS = 600
QUEUE_LIMIT = 10_000

NORMAL = "Normal"
WARNING = "Warning"


def event(kind: str, namespace: str, name: str, reason: str, message: str,
          type_: str = NORMAL) -> types_pb2.Event:
    """An event about one object; the recorder stamps its time and source."""
    return types_pb2.Event(kind=kind, namespace=namespace, name=name, type=type_,
                           reason=reason, message=message)


class EventRecorder:
    def __init__(self, store: Store, source: str) -> None:
        self.store = store
        self.source = source
        self._queue: queue.Queue[types_pb2.Event | None] = queue.Queue(QUEUE_LIMIT)
        self._counts: dict[str, int] = {}      # object prefix -> events written by us
        self._lease: tuple[int, float] | None = None
        self._seq = itertools.count()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def record(self, e: types_pb2.Event) -> None:
        """Queues `e` for writing; it is stamped now and as ours unless it says otherwise."""
        stamped = types_pb2.Event()
        stamped.CopyFrom(e)
        if not stamped.unix_ms:
            stamped.unix_ms = int(time.time() * 1000)
        if not stamped.source:
            stamped.source = self.source
        try:
            self._queue.put_nowait(stamped)
        except queue.Full:
            self._dropped += 1      # said once per batch by the writer, not per event

    def close(self, timeout: float = 2.0) -> None:
        """Writes what is queued (within `timeout`), then stops."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout=timeout)

    def list(self, kind: str, namespace: str, name: str) -> builtins.list[types_pb2.Event]:
        """Events of one object (or of a whole kind when name is ""), oldest first."""
        raw = self.store.get_prefix(self.store.keys.events_prefix(kind, namespace, name))
        events = [types_pb2.Event.FromString(v) for v in raw]
        events.sort(key=lambda e: e.unix_ms)
        return events

    # -- the writer --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 500:
                try:
                    e = self._queue.get_nowait()
                except queue.Empty:
                    break
                if e is None:
                    self._write(batch)
                    return
                batch.append(e)
            self._write(batch)

    def _write(self, batch: builtins.list[types_pb2.Event]) -> None:
        dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("%d events dropped: more than %d waiting to be written", dropped,
                        QUEUE_LIMIT)
        items = []
        touched = set()
        for e in batch:
            prefix = self.store.keys.events_prefix(e.kind, e.namespace, e.name)
            items.append((f"{prefix}{e.unix_ms:013d}-{next(self._seq):06d}",
                          e.SerializeToString()))
            self._counts[prefix] = self._counts.get(prefix, 0) + 1
            touched.add(prefix)
        try:
            self.store.put_many(items, lease=self._current_lease())
            for prefix in touched:
                if self._counts[prefix] > MAX_PER_OBJECT:
                    self._trim(prefix)
        except StoreUnavailable as e:
            log.warning("%d events dropped: %s", len(batch), e)
        if len(self._counts) > 4 * QUEUE_LIMIT:
            self._counts.clear()   # bounded memory; trimming resumes from the next writes

    def _trim(self, prefix: str) -> None:
        keys = self.store.keys_with_prefix(prefix)   # key order = time order
        if len(keys) > MAX_PER_OBJECT:
            self.store.delete_keys(keys[:len(keys) - MAX_PER_OBJECT])
        self._counts[prefix] = min(len(keys), MAX_PER_OBJECT)

    def _current_lease(self) -> int:
        now = time.monotonic()
        if self._lease is None or now - self._lease[1] > LEASE_ROTATE_SECONDS:
            self._lease = (self.store.grant_lease(EVENT_TTL_SECONDS), now)
        return self._lease[0]
