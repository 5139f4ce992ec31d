"""Watch streams: `mctl get -w` and `mctl events -w`, fed by the scheduler's etcd watch.

A client that polls re-reads and re-sends the whole list every second; a
watch sends it once and then only what changed, as Kubernetes' watch does
(ADDED, MODIFIED, DELETED rows). Every scheduler serves watches, leading or
not: each has the watch-fed cache (cache.py), which tells the hub here when
the state moved (`changed`) and hands it each new event record (`history`).

Objects: the hub keeps, per kind, the *version* of each object's row as it
last published it: etcd's mod revision plus what the row derives from other
objects (a workload's ready counts, a node's placed replicas, a replica
whose node stopped heartbeating). On each change it takes one snapshot,
compares versions, builds rows only for what differs and hands them to the
streams whose filter they match. Bursts coalesce: one pass per wake-up,
whatever the number of etcd events behind it. The versions are the same on
every scheduler, so a client that reconnects to another one after a leader
change skips what it has already printed.

Events: history is not in the cache. A stream is registered first, then
the stored events are read from etcd and sent; live ones that were also
read are dropped by their identity (a digest of the stored bytes, the same
on every scheduler).

Bounds: at most `max_streams` following streams per scheduler (each holds
one of the server's RPC threads), and at most `queue_limit` messages waiting
per stream. A client that reads slower than changes come is cut off with
RESOURCE_EXHAUSTED and the WatchFellBehind reason rather than growing the
scheduler's memory; the CLI then watches again and resumes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc

from mctl.common import names, reasons, selectors
from mctl.common.phases import is_terminal
from mctl.v1 import control_pb2, types_pb2

from . import objects, paging
from .keys import KeyCodec
from .store import Snapshot, StoreUnavailable
from .usage import UsageCache

log = logging.getLogger(__name__)

# Following streams per scheduler: each holds one RPC thread of the 32 the
# server has (main.py), and lists, applies and relays need the rest.
MAX_STREAMS = 12
# Messages waiting for one client; past this it is cut off (it can resume).
QUEUE_LIMIT = 1000
# Stored events a stream starts with at most: the newest (kubectl's list is
# as long as the store; a big cluster's whole hour would be a flood).
MAX_STORED_SENT = 5000
# How long a stream waits for news before checking its client is still there.
IDLE_CHECK_SECONDS = 5.0

KINDS = ("workloads", "replicas", "nodes")
EVENT_KINDS = ("Workload", "Replica", "Node")

ADDED = control_pb2.WATCH_CHANGE_TYPE_ADDED
MODIFIED = control_pb2.WATCH_CHANGE_TYPE_MODIFIED
DELETED = control_pb2.WATCH_CHANGE_TYPE_DELETED

Key = tuple[str, str]          # (namespace, name); nodes: ("", name)
T = TypeVar("T")


class StateSource(Protocol):
    """The watch cache (cache.py): snapshots, and one that has every earlier write."""

    def snapshot(self, min_revision: int = 0) -> Snapshot: ...

    def latest(self) -> Snapshot: ...


class EventSource(Protocol):
    def get_prefix(self, prefix: str) -> list[bytes]: ...


class TooManyStreams(Exception):
    pass


def event_id(stored: bytes) -> str:
    """An event's identity: its stored bytes are the same wherever they are read."""
    return hashlib.blake2b(stored, digest_size=12).hexdigest()


# -- what a row shows -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Replica:
    """What rows need of one replica record: read once per version of the record.

    Reading protobuf fields costs: 20,000 replicas read on every publish
    were most of its time (bench/watch_publish.py).
    """

    workload: str
    node: str
    active: bool            # not in a terminal phase: holds its node's resources
    running: bool
    ready: bool
    deleting: bool
    spec_hash: str
    cpu_millis: int
    memory_bytes: int
    pids: int


def _read(r: types_pb2.Replica) -> _Replica:
    res = r.spec.resources
    return _Replica(r.workload, r.node, not is_terminal(r.status.phase),
                    r.status.phase == types_pb2.REPLICA_PHASE_RUNNING, r.status.ready,
                    r.metadata.deletion_requested, r.spec_hash, res.cpu_millis,
                    res.memory_bytes, res.pids)


@dataclass
class View:
    """One snapshot as rows: each object's row version, and what rows derive from others."""

    snap: Snapshot
    versions: dict[str, dict[Key, str]]
    # As ListWorkloads' WorkloadSummary: desired, running, up to date,
    # present, up to date and ready.
    summaries: dict[Key, tuple[int, int, int, int, int]]
    placed: dict[str, list[int]]       # node -> replicas, cpu, memory, pids placed there


class Versions:
    """Computes views, remembering what each record said at its mod revision."""

    def __init__(self, keys: KeyCodec) -> None:
        self.keys = keys
        self._replicas: dict[Key, tuple[int, _Replica]] = {}
        # workload -> (its mod revision, the Configs' and Secrets' state, its hash)
        self._hashes: dict[Key, tuple[int, tuple[int, int], str]] = {}

    def view(self, snap: Snapshot) -> View:
        """The row versions of `snap`: a version changes whenever its row may."""
        keys, mods, heartbeats = self.keys, snap.mod_revisions, snap.heartbeats
        replicas: dict[Key, str] = {}
        by_workload: dict[Key, list[_Replica]] = {}
        placed: dict[str, list[int]] = {}
        seen: dict[Key, tuple[int, _Replica]] = {}
        for key, r in snap.replicas.items():
            rev = mods.get(keys.replica(*key), 0)
            cached = self._replicas.get(key)
            info = cached[1] if cached is not None and cached[0] == rev else _read(r)
            seen[key] = (rev, info)
            lost = info.node and info.active and info.node not in heartbeats
            replicas[key] = f"{rev}-lost" if lost else str(rev)
            by_workload.setdefault((key[0], info.workload), []).append(info)
            if info.node and info.active:
                p = placed.setdefault(info.node, [0, 0, 0, 0])
                p[0] += 1
                p[1] += info.cpu_millis
                p[2] += info.memory_bytes
                p[3] += info.pids
        self._replicas = seen       # deleted replicas forgotten
        # A workload's hash covers the Configs and Secrets it names: any change
        # to them (a newer revision, or one fewer) makes it computed again.
        refs = (len(snap.configs) + len(snap.secrets),
                max([mods.get(keys.config(*k), 0) for k in snap.configs]
                    + [mods.get(keys.secret(*k), 0) for k in snap.secrets], default=0))
        workloads: dict[Key, str] = {}
        summaries: dict[Key, tuple[int, int, int, int, int]] = {}
        hashes: dict[Key, tuple[int, tuple[int, int], str]] = {}
        for key, w in snap.workloads.items():
            rev = mods.get(keys.workload(*key), 0)
            known = self._hashes.get(key)
            if known is None or known[:2] != (rev, refs):
                known = (rev, refs, objects.workload_hash(w, snap))
            hashes[key] = known
            mine = by_workload.get(key, [])
            live = [i for i in mine if not i.deleting]
            s = (w.spec.replicas, sum(i.running for i in live),
                 sum(i.spec_hash == known[2] for i in live), len(mine),
                 sum(i.spec_hash == known[2] and i.ready for i in live))
            summaries[key] = s
            workloads[key] = f"{rev}-" + "-".join(map(str, s))
        self._hashes = hashes
        nodes: dict[Key, str] = {}
        for name in snap.nodes:
            p = placed.get(name, [0, 0, 0, 0])
            nodes[("", name)] = (f"{mods.get(keys.node(name), 0)}-{int(name in heartbeats)}"
                                 f"-{p[0]}-{p[1]}-{p[2]}-{p[3]}")
        return View(snap, {"workloads": workloads, "replicas": replicas, "nodes": nodes},
                    summaries, placed)


def _node_lost(r: types_pb2.Replica, snap: Snapshot) -> bool:
    return bool(r.node) and r.node not in snap.heartbeats and not is_terminal(r.status.phase)


def row(v: View, kind: str, key: Key, usage: UsageCache | None) -> control_pb2.WatchChange:
    """The change message of one object as it is in the view (its type left to the caller)."""
    snap = v.snap
    out = control_pb2.WatchChange(version=v.versions[kind][key])
    if kind == "replicas":
        r = snap.replicas[key]
        out.replica.CopyFrom(r)
        if _node_lost(r, snap):
            # As ListReplicas says it: what the node last said may be stale.
            out.replica.status.reason = types_pb2.REPLICA_REASON_NODE_NOT_READY
            out.replica.status.message = (f"node {r.node} is not heartbeating;"
                                          " last known state shown")
        if usage is not None and (u := usage.replica(key)) is not None:
            out.usage.CopyFrom(u)
    elif kind == "workloads":
        out.workload.CopyFrom(snap.workloads[key])
        desired, running, up_to_date, present, ready = v.summaries[key]
        out.summary.CopyFrom(control_pb2.WorkloadSummary(
            desired=desired, running=running, up_to_date=up_to_date, present=present,
            up_to_date_ready=ready))
    else:
        name = key[1]
        out.node.CopyFrom(snap.nodes[name])
        out.node.ready = name in snap.heartbeats
        count, cpu, memory, pids = v.placed.get(name, [0, 0, 0, 0])
        out.replicas = count
        out.allocated.CopyFrom(types_pb2.Resources(cpu_millis=cpu, memory_bytes=memory,
                                                   pids=pids))
        if usage is not None and (u := usage.node(name)) is not None:
            out.usage.CopyFrom(u)
    return out


Rows = dict[Key, tuple[str, control_pb2.WatchChange]]   # key -> (version, its row)


def diff(old: Rows, new: dict[Key, str], build: Callable[[Key], control_pb2.WatchChange]
         ) -> tuple[Rows, list[tuple[Key, control_pb2.WatchChange]]]:
    """The rows after `new`, and the changes from `old` to them in key order."""
    rows: dict[Key, tuple[str, control_pb2.WatchChange]] = {}
    changes: list[tuple[Key, control_pb2.WatchChange]] = []
    for key, version in new.items():
        was = old.get(key)
        if was is not None and was[0] == version:
            rows[key] = was
            continue
        change = build(key)
        change.type = ADDED if was is None else MODIFIED
        rows[key] = (version, change)
        changes.append((key, change))
    for key in old.keys() - new.keys():
        gone = control_pb2.WatchChange()
        gone.CopyFrom(old[key][1])
        gone.type = DELETED
        changes.append((key, gone))
    changes.sort(key=lambda c: c[0])
    return rows, changes


def batches(items: Iterable[T], size_of: Callable[[T], int]) -> Iterator[list[T]]:
    """`items` in lists of at most paging's page size and bytes: each fits a message."""
    batch: list[T] = []
    used = 0
    for item in items:
        size = size_of(item)
        if batch and (len(batch) == paging.MAX_PAGE_ITEMS
                      or used + size > paging.MAX_PAGE_BYTES):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += size
    if batch:
        yield batch


# -- one client's stream ------------------------------------------------------------


@dataclass
class Filter:
    kind: str          # a KINDS entry, or an EVENT_KINDS one ("" = any) for events
    namespace: str     # "" = every namespace
    name: str          # "" = every object
    selector: selectors.Selector = selectors.EVERYTHING

    def object_matches(self, key: Key) -> bool:
        """By key alone: the labels are the selector's (`Selection`)."""
        return ((not self.namespace or self.kind == "nodes" or key[0] == self.namespace)
                and (not self.name or key[1] == self.name))

    def event_matches(self, e: types_pb2.Event) -> bool:
        """Cluster-scoped objects' events (nodes: no namespace) are in every namespace's view."""
        return ((not self.kind or e.kind == self.kind)
                and (not self.namespace or not e.namespace or e.namespace == self.namespace)
                and (not self.name or e.name == self.name))


def labels_of(change: control_pb2.WatchChange) -> Mapping[str, str]:
    if change.HasField("workload"):
        return change.workload.metadata.labels
    if change.HasField("replica"):
        return change.replica.metadata.labels
    return change.node.labels


class Selection:
    """Which objects one stream with a label selector has been sent, to send the rest right.

    An object whose labels stop matching leaves the client's view: it is
    sent as DELETED; one that starts to match enters it: ADDED (as
    Kubernetes' filtered watches do). The set is one key per object shown.
    """

    def __init__(self, selector: selectors.Selector) -> None:
        self.selector = selector
        self.shown: set[Key] = set()

    def admit(self, key: Key, change: control_pb2.WatchChange) -> control_pb2.WatchChange | None:
        """The change as this stream must see it, or None for none."""
        was = key in self.shown
        if change.type == DELETED:
            self.shown.discard(key)
            return change if was else None
        if self.selector.matches(labels_of(change)):
            self.shown.add(key)
            want = MODIFIED if was else ADDED
            return change if change.type == want else _as(change, want)
        if not was:
            return None
        self.shown.discard(key)
        return _as(change, DELETED)


class Stream(Generic[T]):
    """A bounded queue of what one client has not been sent yet."""

    def __init__(self, filter_: Filter, limit: int) -> None:
        self.filter = filter_
        self.limit = limit
        self.fell_behind = False
        self.closed = False
        self.admitted = False       # holds one of the hub's stream slots
        self.selection = Selection(filter_.selector) if filter_.selector else None
        self._items: deque[T] = deque()
        self._cond = threading.Condition()

    def offer(self, item: T) -> None:
        with self._cond:
            if self.closed or self.fell_behind:
                return
            if len(self._items) >= self.limit:
                # Nothing more is kept for it: the client resumes by watching again.
                self.fell_behind = True
                self._items.clear()
            else:
                self._items.append(item)
            self._cond.notify()

    def take(self, timeout: float) -> list[T]:
        """What is waiting (at once if anything is), or [] after `timeout`, a cut-off or close."""
        with self._cond:
            if not self._items and not self.closed and not self.fell_behind:
                self._cond.wait(timeout)
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._items.clear()
            self._cond.notify()


# -- the hub ----------------------------------------------------------------------------


class WatchHub:
    def __init__(self, state: StateSource, keys: KeyCodec, usage: UsageCache | None = None,
                 events: EventSource | None = None, max_streams: int = MAX_STREAMS,
                 queue_limit: int = QUEUE_LIMIT) -> None:
        self.state = state
        self.keys = keys
        self.usage = usage
        self.events = events
        self.max_streams = max_streams
        self.queue_limit = queue_limit
        self._lock = threading.Lock()
        self._object_streams: set[Stream[control_pb2.WatchObjectsResponse]] = set()
        self._event_streams: set[Stream[tuple[str, types_pb2.Event]]] = set()
        # kind -> key -> (version, the row as last published); None while nobody watches.
        self._rows: dict[str, Rows] | None = None
        self._versions = Versions(keys)
        self._revision = 0
        self._dirty = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._admitted = 0          # following streams, counted from their admission

    @property
    def streams(self) -> int:
        with self._lock:
            return self._admitted

    # -- fed by the cache ------------------------------------------------------------

    def changed(self) -> None:
        """The state moved (the cache's on_change): publish on the hub's thread."""
        if self._rows is not None:
            self._dirty.set()

    def history(self, stored: bytes) -> None:
        """An event record the watch brought (the cache's on_history)."""
        with self._lock:
            streams = list(self._event_streams)
        if not streams:
            return
        try:
            e = types_pb2.Event.FromString(stored)
        except ValueError:
            return
        ident = event_id(stored)
        for s in streams:
            if s.filter.event_matches(e):
                s.offer((ident, e))

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            objects_ = list(self._object_streams)
            events = list(self._event_streams)
        for o in objects_:
            o.close()
        for e in events:
            e.close()
        self._dirty.set()

    # -- objects ----------------------------------------------------------------

    def watch_objects(self, request: control_pb2.WatchObjectsRequest,
                      context: grpc.ServicerContext) -> Iterator[control_pb2.WatchObjectsResponse]:
        if request.kind not in KINDS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"kind: want one of {', '.join(KINDS)}, not {names.quote(request.kind)}")
        _check_names(context, request.namespace, request.name)
        try:
            selector = selectors.parse(request.label_selector)
        except selectors.SelectorError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"label_selector: {e}")
        stream: Stream[control_pb2.WatchObjectsResponse] = Stream(
            Filter(request.kind, request.namespace, request.name, selector), self.queue_limit)
        self._admit(context, stream)
        context.add_callback(stream.close)
        try:
            snap = self._read(context, self.state.latest)
            with self._lock:
                self._publish(snap)
                assert self._rows is not None
                current = [(key, change) for key, (_, change)
                           in sorted(self._rows[request.kind].items())
                           if stream.filter.object_matches(key)]
                initial = _for_stream(stream, [(k, _as(c, ADDED)) for k, c in current])
                self._object_streams.add(stream)
            self._start()
            for batch in batches(initial, lambda c: c.ByteSize()):
                yield control_pb2.WatchObjectsResponse(changes=batch)
            yield control_pb2.WatchObjectsResponse(synced=True)
            yield from self._follow(stream, context, lambda items: items)
        finally:
            self._leave(stream, self._object_streams)

    def _publish(self, snap: Snapshot) -> None:
        """Sends each stream the rows that changed since the last publish (lock held)."""
        if self._rows is not None and snap.revision < self._revision:
            return     # an older snapshot than what was sent: never go back
        v = self._versions.view(snap)
        rows = self._rows or {k: {} for k in KINDS}
        fresh = self._rows is None
        out: dict[str, list[tuple[Key, control_pb2.WatchChange]]] = {}
        for kind in KINDS:
            rows[kind], out[kind] = diff(
                rows[kind], v.versions[kind],
                lambda key, kind=kind: row(v, kind, key, self.usage))  # type: ignore[misc]
        self._rows, self._revision = rows, snap.revision
        if fresh:
            return
        for s in self._object_streams:
            mine = _for_stream(s, [(key, c) for key, c in out[s.filter.kind]
                                   if s.filter.object_matches(key)])
            for batch in batches(mine, lambda c: c.ByteSize()):
                s.offer(control_pb2.WatchObjectsResponse(changes=batch))

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name="watch-hub", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            with self._lock:
                if self._stopped:
                    return
                if not self._object_streams:
                    # Nobody watches: keep nothing.
                    self._rows, self._versions = None, Versions(self.keys)
                    continue
            try:
                snap = self.state.snapshot()
                with self._lock:
                    if self._object_streams:
                        self._publish(snap)
            except StoreUnavailable as e:
                log.warning("watch streams wait for the store: %s", e)
                self._dirty.set()
                time.sleep(1.0)
            except Exception:  # noqa: BLE001 - the hub's thread must outlive one bad pass
                log.exception("watch streams: a publish failed; the next change retries")
                time.sleep(1.0)

    # -- events -------------------------------------------------------------------

    def watch_events(self, request: control_pb2.WatchEventsRequest,
                     context: grpc.ServicerContext) -> Iterator[control_pb2.WatchEventsResponse]:
        if request.kind and request.kind not in EVENT_KINDS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"kind: want one of {', '.join(EVENT_KINDS)} or none,"
                          f" not {names.quote(request.kind)}")
        _check_names(context, request.namespace, request.name)
        source = self.events
        if source is None:
            yield control_pb2.WatchEventsResponse(synced=True)
            return
        stream: Stream[tuple[str, types_pb2.Event]] = Stream(
            Filter(request.kind, request.namespace, request.name), self.queue_limit)
        if request.follow:
            # Before the stored ones are read: an event written meanwhile is
            # both read and queued, and sent once.
            self._admit(context, stream)
            context.add_callback(stream.close)
            with self._lock:
                self._event_streams.add(stream)
        try:
            # Narrowed to one object's events only when its key is known whole
            # (nodes have no namespace: their events are stored without one).
            namespace = "" if request.kind == "Node" else request.namespace
            whole = request.name and (namespace or request.kind == "Node")
            prefix = self.keys.events_prefix(request.kind, namespace,
                                             request.name if whole else "")
            stored = self._read(context, lambda: source.get_prefix(prefix))
            found: list[tuple[str, types_pb2.Event]] = []
            for raw in stored:
                try:
                    e = types_pb2.Event.FromString(raw)
                except ValueError:
                    continue
                if stream.filter.event_matches(e):
                    found.append((event_id(raw), e))
            found.sort(key=lambda item: item[1].unix_ms)
            found = found[-MAX_STORED_SENT:]
            for batch in batches(found, lambda item: item[1].ByteSize() + 32):
                yield _events_message(batch)
            yield control_pb2.WatchEventsResponse(synced=True)
            if not request.follow:
                return
            sent = {ident for ident, _ in found}

            def fresh(items: list[tuple[str, types_pb2.Event]]
                      ) -> list[control_pb2.WatchEventsResponse]:
                new = [(i, e) for i, e in items if i not in sent]
                sent.difference_update(i for i, _ in items)   # each overlap shows once
                return [_events_message(b) for b in batches(new, lambda x: x[1].ByteSize() + 32)]
            yield from self._follow(stream, context, fresh)
        finally:
            self._leave(stream, self._event_streams)

    # -- shared ------------------------------------------------------------------

    def _admit(self, context: grpc.ServicerContext, stream: Stream[T]) -> None:
        """Takes a stream slot for `stream`, or aborts the call when none is free."""
        with self._lock:
            if self._stopped:
                context.abort(grpc.StatusCode.UNAVAILABLE, "this scheduler is stopping")
            if self._admitted >= self.max_streams:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"this scheduler serves {self.max_streams} watch streams already;"
                              " try again later or list without -w")
            self._admitted += 1
            stream.admitted = True

    def _leave(self, stream: Stream[T], streams: set[Stream[T]]) -> None:
        stream.close()
        with self._lock:
            streams.discard(stream)
            if stream.admitted:
                stream.admitted = False
                self._admitted -= 1

    def _follow(self, stream: Stream[T], context: grpc.ServicerContext,
                convert: Callable[[list[T]], list[T2]]) -> Iterator[T2]:
        while not stream.closed and context.is_active():
            items = stream.take(IDLE_CHECK_SECONDS)
            if stream.fell_behind:
                reasons.attach(context, reasons.WATCH_FELL_BEHIND)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"this client read slower than the changes came: more than"
                              f" {self.queue_limit} waited; watch again to resume")
            if items:
                yield from convert(items)

    @staticmethod
    def _read(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StoreUnavailable as e:
            reasons.attach(context, reasons.STORE_UNAVAILABLE)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the cluster store is unavailable: {e}")


T2 = TypeVar("T2")


def _as(change: control_pb2.WatchChange,
        type_: control_pb2.WatchChangeType) -> control_pb2.WatchChange:
    out = control_pb2.WatchChange()
    out.CopyFrom(change)
    out.type = type_
    return out


def _for_stream(stream: Stream[control_pb2.WatchObjectsResponse],
                changes: list[tuple[Key, control_pb2.WatchChange]]
                ) -> list[control_pb2.WatchChange]:
    """The changes as `stream` sees them: through its label selection, if it has one."""
    if stream.selection is None:
        return [c for _, c in changes]
    selection = stream.selection
    return [seen for key, c in changes if (seen := selection.admit(key, c)) is not None]


def _events_message(items: list[tuple[str, types_pb2.Event]]) -> control_pb2.WatchEventsResponse:
    return control_pb2.WatchEventsResponse(ids=[i for i, _ in items], items=[e for _, e in items])


def _check_names(context: grpc.ServicerContext, namespace: str, name: str) -> None:
    for what, value in (("namespace", namespace), ("name", name)):
        if value and (problem := names.validate_dns_label(value)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {problem}")
