"""Watch streams: `mctl get -w` and `mctl events -w`, fed by the scheduler's etcd watch.

A client that polls re-reads and re-sends the whole list every second; a
watch sends it once and then only what changed, as Kubernetes' watch does
(ADDED, MODIFIED, DELETED rows). Every scheduler serves watches, leading or
not: each has the watch-fed cache (cache.py), which tells the hub here when
the state moved (`changed`) and hands it each new event record (`history`).

Objects: the hub keeps, per kind, the *version* of each object's row as it
last published it: etcd's mod revision plus what the row derives from other
objects (a workload's ready counts, a node's placed replicas, a replica
whose node stopped heartbeating). On each change it asks the cache which
keys changed since its last pass (`changes_since`), updates what rows
derive by the difference those make (`Tracker`), computes the versions of
the rows they touch, builds rows only for those that moved and hands them
to the streams whose filter they match: a pass costs what changed, not the
size of the cluster. When the cache cannot tell (it reloaded, or more
changed than it keeps), the pass compares every row with a whole snapshot
instead. Bursts coalesce: one pass per wake-up, whatever the number of etcd
events behind it. The versions are the same on every scheduler, so a
client that reconnects to another one after a leader change skips what it
has already printed.

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
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import grpc

from mctl.common import names, reasons, selectors
from mctl.common.phases import is_terminal
from mctl.common.validation import references
from mctl.v1 import control_pb2, types_pb2

from . import objects, paging
from .keys import KeyCodec, Kind, ParsedKey
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
V = TypeVar("V")


class StateSource(Protocol):
    """The watch cache (cache.py): snapshots, one that has every earlier write, and
    what changed since a revision."""

    def snapshot(self, min_revision: int = 0) -> Snapshot: ...

    def latest(self) -> Snapshot: ...

    def changes_since(self, revision: int) -> tuple[Snapshot, list[ParsedKey]] | None: ...


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
    """What rows and tallies need of one replica record, read once when it changes.

    Reading protobuf fields costs: it is most of a first list's time
    (bench/watch_publish.py), and a tally takes away what the record it
    replaces counted without reading that again.
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


@dataclass(slots=True)
class _Tally:
    """What one workload's summary counts, kept as its replicas come, change and go."""

    present: int = 0
    running: int = 0        # not being deleted, and running
    # spec hash -> [replicas not being deleted, those of them ready]: the
    # workload's own hash picks "up to date" out of it, whatever it is now.
    by_hash: dict[str, list[int]] = field(default_factory=dict)


_SCOPED = {Kind.CONFIG: "config", Kind.SECRET: "secret"}


class Tracker:
    """What rows are built from, kept current change by change; each row's version.

    It holds the records of workloads, replicas, nodes, heartbeats, Configs
    and Secrets (references to the cache's: they are never mutated), and
    what rows derive from other objects, updated by the difference each
    change makes: a workload's tally of its replicas, a node's placed sums,
    which replicas each node holds (a heartbeat that stops or resumes
    changes their rows) and which workloads use each Config and Secret
    (their hash covers its data). So a change costs what it touches, not
    the size of the cluster.
    """

    def __init__(self, keys: KeyCodec) -> None:
        self.keys = keys
        self.snap = Snapshot()
        self._info: dict[Key, _Replica] = {}
        self._on_node: dict[str, set[Key]] = {}
        self.placed: dict[str, list[int]] = {}    # node -> replicas, cpu, memory, pids placed
        self._tallies: dict[Key, _Tally] = {}     # (namespace, workload) -> its replicas' tally
        self._hashes: dict[Key, str] = {}
        self._uses: dict[Key, list[tuple[str, str, str]]] = {}
        self._users: dict[tuple[str, str, str], set[Key]] = {}

    def load(self, snap: Snapshot) -> dict[str, set[Key]]:
        """Takes in a whole snapshot (a tracker that holds nothing yet); every row's key.

        The same as `apply` with every key of `snap` (the tests hold them to
        that), without its bookkeeping of what each change touches.
        """
        own, keys, mods = self.snap, self.keys, snap.mod_revisions
        own.heartbeats.update(snap.heartbeats)
        own.configs.update(snap.configs)
        own.secrets.update(snap.secrets)
        for name, node in snap.nodes.items():
            own.nodes[name] = node
            own.mod_revisions[keys.node(name)] = mods.get(keys.node(name), 0)
        for item, w in snap.workloads.items():
            self._workload(item, w, mods.get(keys.workload(*item), 0))
        for item, r in snap.replicas.items():
            key = keys.replica(*item)
            self._replica(item, key, r, mods.get(key, 0), None)
        for item, w in own.workloads.items():
            self._hashes[item] = objects.workload_hash(w, own)
        return {"workloads": set(own.workloads), "replicas": set(own.replicas),
                "nodes": {("", name) for name in own.nodes}}

    def apply(self, src: Snapshot, changed: Iterable[ParsedKey]) -> dict[str, set[Key]]:
        """Takes in the `changed` keys as `src` has them (absent: deleted).

        Returns, per kind, the rows that may differ now.
        """
        touched: dict[str, set[Key]] = {k: set() for k in KINDS}
        stale: set[Key] = set()           # workloads whose hash is computed again
        mods, own, keys = src.mod_revisions, self.snap, self.keys
        for p in changed:
            item = (p.namespace, p.name)
            if p.kind is Kind.REPLICA:
                key = keys.replica(*item)
                self._replica(item, key, src.replicas.get(item), mods.get(key, 0), touched)
            elif p.kind is Kind.WORKLOAD:
                self._workload(item, src.workloads.get(item), mods.get(keys.workload(*item), 0))
                stale.add(item)
                touched["workloads"].add(item)
            elif p.kind is Kind.NODE:
                key = keys.node(p.name)
                if p.name in src.nodes:
                    own.nodes[p.name], own.mod_revisions[key] = src.nodes[p.name], mods[key]
                else:
                    own.nodes.pop(p.name, None)
                    own.mod_revisions.pop(key, None)
                touched["nodes"].add(("", p.name))
            elif p.kind is Kind.HEARTBEAT:
                if p.name in src.heartbeats:
                    own.heartbeats.add(p.name)
                else:
                    own.heartbeats.discard(p.name)
                # The node's row, and its replicas' (lost, or found again).
                touched["nodes"].add(("", p.name))
                touched["replicas"].update(self._on_node.get(p.name, ()))
            elif p.kind in _SCOPED:
                if p.kind is Kind.CONFIG:
                    _take(own.configs, src.configs, item)
                else:
                    _take(own.secrets, src.secrets, item)
                stale.update(self._users.get((_SCOPED[p.kind], *item), ()))
        for item in stale:
            w = own.workloads.get(item)
            if w is not None:
                self._hashes[item] = objects.workload_hash(w, own)
                touched["workloads"].add(item)
        return touched

    def _workload(self, item: Key, w: types_pb2.Workload | None, rev: int) -> None:
        own = self.snap
        for use in self._uses.pop(item, ()):
            users = self._users[use]
            users.discard(item)
            if not users:
                del self._users[use]
        if w is None:
            own.workloads.pop(item, None)
            own.mod_revisions.pop(self.keys.workload(*item), None)
            self._hashes.pop(item, None)
            return
        own.workloads[item] = w
        own.mod_revisions[self.keys.workload(*item)] = rev
        configs, secrets, _ = references(w.spec, pull_secret=False)
        uses = ([("config", item[0], n) for n in configs]
                + [("secret", item[0], n) for n in secrets])
        if uses:
            self._uses[item] = uses
            for use in uses:
                self._users.setdefault(use, set()).add(item)

    def _replica(self, item: Key, key: str, r: types_pb2.Replica | None, rev: int,
                 touched: dict[str, set[Key]] | None) -> None:
        old = self._info.pop(item, None)
        if old is not None:
            self._count(item, old, -1, touched)
        if r is None:
            self.snap.replicas.pop(item, None)
            self.snap.mod_revisions.pop(key, None)
        else:
            info = _read(r)
            self._info[item] = info
            self.snap.replicas[item] = r
            self.snap.mod_revisions[key] = rev
            self._count(item, info, 1, touched)
        if touched is not None:
            touched["replicas"].add(item)

    def _count(self, item: Key, info: _Replica, sign: int,
               touched: dict[str, set[Key]] | None) -> None:
        """Adds (sign 1) or takes away (-1) what one replica counts for its node and workload;
        notes in `touched` the rows that may change with it."""
        if info.node:
            bound = self._on_node.setdefault(info.node, set())
            if sign > 0:
                bound.add(item)
            else:
                bound.discard(item)
                if not bound:
                    del self._on_node[info.node]
            if info.active:
                p = self.placed.setdefault(info.node, [0, 0, 0, 0])
                p[0] += sign
                p[1] += sign * info.cpu_millis
                p[2] += sign * info.memory_bytes
                p[3] += sign * info.pids
                if not p[0]:
                    del self.placed[info.node]
            if touched is not None:
                touched["nodes"].add(("", info.node))
        owner = (item[0], info.workload)
        t = self._tallies.setdefault(owner, _Tally())
        t.present += sign
        if not info.deleting:
            t.running += sign * info.running
            h = t.by_hash.setdefault(info.spec_hash, [0, 0])
            h[0] += sign
            h[1] += sign * info.ready
            if not h[0]:
                del t.by_hash[info.spec_hash]
        if not t.present:
            del self._tallies[owner]
        if touched is not None:
            touched["workloads"].add(owner)

    # -- what rows show, and their versions ---------------------------------------

    def summary(self, item: Key) -> tuple[int, int, int, int, int]:
        """As ListWorkloads' WorkloadSummary: desired, running, up to date, present,
        up to date and ready."""
        t = self._tallies.get(item) or _Tally()
        current = t.by_hash.get(self._hashes.get(item, ""), [0, 0])
        return (self.snap.workloads[item].spec.replicas, t.running, current[0], t.present,
                current[1])

    def version(self, kind: str, item: Key) -> str | None:
        """The version of an object's row (it changes whenever the row may); None: no row."""
        own, keys = self.snap, self.keys
        if kind == "replicas":
            info = self._info.get(item)
            if info is None:
                return None
            rev = own.mod_revisions.get(keys.replica(*item), 0)
            lost = info.node and info.active and info.node not in own.heartbeats
            return f"{rev}-lost" if lost else str(rev)
        if kind == "workloads":
            if item not in own.workloads:
                return None
            return (f"{own.mod_revisions.get(keys.workload(*item), 0)}-"
                    + "-".join(map(str, self.summary(item))))
        name = item[1]
        if name not in own.nodes:
            return None
        p = self.placed.get(name, [0, 0, 0, 0])
        return (f"{own.mod_revisions.get(keys.node(name), 0)}-{int(name in own.heartbeats)}"
                f"-{p[0]}-{p[1]}-{p[2]}-{p[3]}")


def _take(mine: dict[Key, V], theirs: dict[Key, V], item: Key) -> None:
    if item in theirs:
        mine[item] = theirs[item]
    else:
        mine.pop(item, None)


def _node_lost(r: types_pb2.Replica, snap: Snapshot) -> bool:
    return bool(r.node) and r.node not in snap.heartbeats and not is_terminal(r.status.phase)


def row(t: Tracker, kind: str, key: Key, version: str,
        usage: UsageCache | None) -> control_pb2.WatchChange:
    """The change message of one object as the tracker has it (its type left to the caller)."""
    snap = t.snap
    out = control_pb2.WatchChange(version=version)
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
        desired, running, up_to_date, present, ready = t.summary(key)
        out.summary.CopyFrom(control_pb2.WorkloadSummary(
            desired=desired, running=running, up_to_date=up_to_date, present=present,
            up_to_date_ready=ready))
    else:
        name = key[1]
        out.node.CopyFrom(snap.nodes[name])
        out.node.ready = name in snap.heartbeats
        count, cpu, memory, pids = t.placed.get(name, [0, 0, 0, 0])
        out.replicas = count
        out.allocated.CopyFrom(types_pb2.Resources(cpu_millis=cpu, memory_bytes=memory,
                                                   pids=pids))
        if usage is not None and (u := usage.node(name)) is not None:
            out.usage.CopyFrom(u)
    return out


Rows = dict[Key, tuple[str, control_pb2.WatchChange]]   # key -> (version, its row)


def update(rows: Rows, touched: Iterable[Key], version: Callable[[Key], str | None],
           build: Callable[[Key, str], control_pb2.WatchChange]
           ) -> list[tuple[Key, control_pb2.WatchChange]]:
    """Brings the `touched` keys' rows to their versions; the changes, in key order."""
    changes: list[tuple[Key, control_pb2.WatchChange]] = []
    for key in touched:
        now = version(key)
        was = rows.get(key)
        if now is None:
            if was is not None:
                del rows[key]
                changes.append((key, _as(was[1], DELETED)))
            continue
        if was is not None and was[0] == now:
            continue
        change = build(key, now)
        change.type = ADDED if was is None else MODIFIED
        rows[key] = (now, change)
        changes.append((key, change))
    changes.sort(key=lambda c: c[0])
    return changes


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
        self._tracker = Tracker(keys)
        self._revision = 0          # the cache's, as the rows last followed it
        # A pass that failed halfway leaves the tracker unsure: compare everything next.
        self._unsure = False
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
                # Caught up with every write made before the call (read your
                # writes); other streams hear of what that sends them.
                if not self._follow_changes():
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

    def publish(self) -> None:
        """One pass: the rows brought up to the cache's state, changes sent to each stream.

        By the changes the cache kept since the last pass when it can tell
        them, else (the first pass after a reload, or after more changes than
        it keeps) by comparing every row with a whole snapshot.
        """
        with self._lock:
            if self._stopped or not self._object_streams:
                return
            if self._follow_changes():
                return
        snap = self.state.snapshot()
        with self._lock:
            if self._object_streams:
                self._publish(snap)

    def _follow_changes(self) -> bool:
        """Brings rows up to date by the cache's changes since the last pass (lock held);
        False when the cache cannot tell them."""
        if self._rows is None or self._unsure:
            return False
        found = self.state.changes_since(self._revision)
        if found is None:
            return False
        delta, changed = found
        self._unsure = True
        touched = self._tracker.apply(delta, changed)
        self._revision = max(self._revision, delta.revision)
        self._send(touched)
        self._unsure = False
        return True

    def _publish(self, snap: Snapshot) -> None:
        """Compares every row with `snap` and sends what differs (lock held)."""
        if self._rows is not None and snap.revision < self._revision and not self._unsure:
            return     # an older snapshot than what was sent: never go back
        tracker = Tracker(self.keys)
        self._unsure = True
        touched = tracker.load(snap)
        fresh = self._rows is None
        rows = self._rows or {k: {} for k in KINDS}
        for kind in KINDS:
            touched[kind].update(rows[kind])          # and what is gone
        self._tracker, self._rows, self._revision = tracker, rows, snap.revision
        self._send(touched, to_streams=not fresh)
        self._unsure = False

    def _send(self, touched: dict[str, set[Key]], to_streams: bool = True) -> None:
        """Rebuilds the touched rows whose version moved; each stream gets its changes."""
        assert self._rows is not None
        t = self._tracker
        out: dict[str, list[tuple[Key, control_pb2.WatchChange]]] = {}
        for kind in KINDS:
            out[kind] = update(
                self._rows[kind], touched[kind],
                lambda key, kind=kind: t.version(kind, key),  # type: ignore[misc]
                lambda key, version, kind=kind: row(t, kind, key, version,  # type: ignore[misc]
                                                    self.usage))
        if not to_streams:
            return
        for s in self._object_streams:
            changes = out[s.filter.kind]
            if not changes:
                continue
            mine = _for_stream(s, [(key, c) for key, c in changes
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
                    self._rows, self._tracker, self._unsure = None, Tracker(self.keys), False
                    continue
            try:
                self.publish()
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
