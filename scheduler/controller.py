"""The scheduler's control loop: decide on a snapshot, commit with CAS, tell the nodes.

One pass:
1. read a snapshot of the whole store (one etcd revision);
2. per workload, `reconcile.decide` says how many replicas to create and
   which to delete; new replicas are placed at once (`placement.place_batch`
   over node states built from the snapshot), Pending replicas that did not
   fit before are tried again, and those that still fit nowhere keep a reason
   that counts nodes per cause;
3. the plan is committed: every write compares the key's revision with the
   snapshot's, so a concurrent writer makes the pass start over instead of
   being overwritten;
4. each node whose desired set changed (or every node, on the periodic
   resync) is sent its whole set over gRPC.

Services are part of the same pass: workloads with ports get their virtual
IP claimed (and freed when they lose their ports or go) by the pure plan of
vips.py, committed with the rest; every node's set carries every service
with its endpoints (services.py), sent when they changed.

Configs, Secrets and named volumes (objects.py, volumes.py): a workload's
hash covers the data of the Configs and Secrets it names, so changing them
rolls it; a node's set carries the Configs and Secrets its replicas use
(Secrets opened here, in memory); a replica that mounts a named volume is
placed only on the volume's node, and the first one placed binds the volume
to its node (a record in etcd, committed with the replica).

Passes run on changes (API writes, status reports, etcd watch events) and at
least every RESYNC_SECONDS: level-triggered, so a lost event only delays.
A pass works from what changed since the last one (changes.py): the watch
cache names the changed keys, a replica index by workload and node follows
them, and only the workloads whose replicas or records changed in a way
that can alter reconcile's answer are decided again, only the nodes whose
replicas changed get their desired set rebuilt. The leader re-plans
everything on takeover, after the cache reloads, when a Config or Secret
changes, and every FULL_PASS_SECONDS as a safety net; without a cache
(tests) every pass is a full one. After a pass the next waits twice as long
as it took (at most MAX_PASS_SETTLE_SECONDS): a thousand nodes reporting at
once are folded into a few passes, and the rest of the time is left to
heartbeats and reports. Views of replicas and each node's desired set are
kept from pass to pass and made again only for records that changed.

Node lifecycle is part of the same pass (nodes.py decides): a node whose
heartbeat lease lapsed is marked NotReady; once it has been NotReady for the
grace period its replicas are removed from the store and reconcile creates
replacements on other nodes in the same pass. One that returns later is sent
a desired set without the moved replicas, so its agent stops their containers.

Only the leader runs passes (`elector`), and every write it commits carries
its fence, so a deposed leader cannot overwrite its successor's work.

The controller is the only writer of replica records. The API hands it the
other two changes to them, on any scheduler, leader or not: a node's status
report (`record_status`, merged by status.py and written in batches with
other nodes' reports by statuswriter.py) and a drain (`evict`). Those
are compare-and-swap writes without the fence: they state facts about
nodes, which stay true whoever leads.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from mctl.common import metrics, pki, rpc
from mctl.common.phases import is_terminal, reason_name
from mctl.common.tls import TLSConfig
from mctl.v1 import agent_pb2, agent_pb2_grpc, node_pb2, types_pb2

from . import imagescore, placement, reconcile, routes, services, vips, volumes
from .cache import StateCache
from .changes import FULL_PASS_SECONDS, Dirty, ReplicaIndex, WorkloadKey
from .converters import node_view, replica_view, workload_view
from .events import NORMAL, WARNING, EventRecorder, event
from .leader import LeaderElector
from .model import Phase, ReplicaView, workload_key
from .nodes import DEFAULT_NODE_GRACE_SECONDS, plan_lifecycle
from .objects import SecretReader, config_digest, node_objects, workload_hash
from .retry import retry_conflicts
from .secretbox import SecretBox, version_of
from .status import ReportMerge
from .statuswriter import StatusWriter
from .store import Conflict, NotLeader, Snapshot, Store, StoreUnavailable, Write

log = logging.getLogger(__name__)

RESYNC_SECONDS = 2.0
# The longest a change waits for the next pass because the last one was long.
MAX_PASS_SETTLE_SECONDS = 0.5
# The least wait between passes, per replica in the store: 50 ms with
# 10,000 replicas (at most 20 passes a second), 0.15 ms with 30. Measured
# at 1,000 nodes and 10,000 replicas: without it, cheap incremental passes
# ran back to back, and their snapshot copies held the cache's lock while
# status reports waited on it (deletion took 7 s instead of 5).
SETTLE_SECONDS_PER_REPLICA = 5e-6
PUSH_RESYNC_SECONDS = 30.0
# Unchanged sets re-sent per second at most: with 5,000 nodes a resync every
# 30 s would be 167 calls a second for nothing, so large clusters resync
# less often (every 100 s at 5,000 nodes); changes are sent at once anyway.
MAX_RESYNC_PUSHES_PER_SECOND = 50.0
PUSH_TIMEOUT = 5.0
# Every node's set is looked at (for the resync) at most this often; in
# between, only the nodes something happened to (see Controller.push).
PUSH_SCAN_SECONDS = 1.0
# A node is sent changed addresses of its peers at most this often.
NETWORK_PUSH_SECONDS = 1.0
# /etc/hosts lists at most this many replicas of a workload (the first by
# name): beyond that, pushing every address to every node costs more than
# it helps, and a real cluster wants a DNS server instead.
MAX_PEERS_PER_WORKLOAD = 128
# A node is sent changed services at most this often: endpoints must reach
# every node promptly (a replica that stops leaves the rotation within a
# second; the aim is 200 ms), while a thousand replicas coming up at once
# still cost each node at most ten sets a second.
SERVICE_PUSH_SECONDS = 0.1


def _digest(messages: Sequence[Message]) -> bytes:
    return hashlib.sha256(b"".join(m.SerializeToString(deterministic=True)
                                   for m in messages)).digest()


def now_ms() -> int:
    return int(time.time() * 1000)


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    """The same objects in the same order (identity: records are never mutated)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class _NodeSet:
    """What push made of one node's replicas last time, and from which records."""

    registered: int
    found: tuple[types_pb2.Replica, ...]     # held: their ids stay theirs
    replicas: list[types_pb2.Replica]        # sorted, as sent
    workloads: list[tuple[str, str]]
    configs: list[types_pb2.Config]
    opened: list[types_pb2.Secret]
    digest: bytes


class Controller:
    def __init__(self, store: Store, seed: int | None = None,
                 elector: LeaderElector | None = None, events: EventRecorder | None = None,
                 node_grace_seconds: float = DEFAULT_NODE_GRACE_SECONDS,
                 cache: StateCache | None = None,
                 tls: TLSConfig | None = None,
                 service_cidr: str = vips.DEFAULT_SERVICE_CIDR,
                 secret_box: SecretBox | None = None) -> None:
        self.store = store
        # The image digests each node reported holding, for placement (imagescore.py).
        self.node_images = imagescore.NodeImages()
        # Opens the Secrets that nodes' sets carry (None: Secrets cannot be used).
        self.secrets = SecretReader(secret_box)
        self._secret_problems: set[str] = set()      # logged once each
        # "" turns services off: no virtual IP is claimed or kept.
        self.service_cidr = vips.parse_service_cidr(service_cidr) if service_cidr else None
        # Its own generator, so that claiming addresses leaves the placement
        # seeds of a pass as they were.
        self._vip_rng = random.Random(seed)
        self._vip_exhausted: set[tuple[str, str]] = set()   # warned about already
        self.tls = tls                   # this scheduler's credentials towards agents
        self.rng = random.Random(seed)
        self.elector = elector           # None: this process always leads (tests, one scheduler)
        self.events = events
        self.node_grace_ms = int(node_grace_seconds * 1000)
        # Recorded once the pass commits.
        self._planned_events: list[types_pb2.Event] = []
        # (namespace, name) -> (record, view): a stored replica that did not
        # change keeps its view from pass to pass.
        self._views: dict[tuple[str, str], tuple[types_pb2.Replica, ReplicaView]] = {}
        # Replicas by workload and node, in step with the last snapshot read,
        # and what changed since the last pass decided (plan) and pushed
        # (push): passes cost O(what changed), see changes.py.
        self._index = ReplicaIndex()
        self._plan_dirty = Dirty()        # everything, on the first pass
        self._push_dirty = Dirty()
        self._want_full = True
        self._last_full = 0.0
        # Workloads decided again on every pass whatever changes: their
        # Failed replicas are replaced once REPLACE_FAILED_DELAY_MS passed.
        self._recheck: set[WorkloadKey] = set()
        # Workloads whose last decision was to do nothing and that are
        # settled (reconcile.settled) -> whether they are being deleted:
        # their replicas moving between Pending, Starting and Running, or
        # (deleted ones) going away, need no decision.
        self._settled: dict[WorkloadKey, bool] = {}
        # Nodes without a heartbeat or marked NotReady, as of the last pass.
        self._unready: set[str] = set()
        # Per workload: its peers' addresses and their digest; its service.
        self._addresses: dict[WorkloadKey, list[agent_pb2.ReplicaAddress]] = {}
        self._peer_digests: dict[WorkloadKey, bytes] = {}
        self._services: dict[WorkloadKey, agent_pb2.Service] = {}
        self._services_out: tuple[list[agent_pb2.Service], bytes] | None = None
        # node -> (routes digest, its net digest) of the last pass.
        self._net: dict[str, tuple[bytes, bytes]] = {}
        # Push looks at every node at most once per PUSH_SCAN_SECONDS (the
        # resync, anything missed), and otherwise only at the nodes whose
        # replicas changed, that were held back by a throttle, or that must
        # be sent their set again (registered, a send failed), unless the
        # routes, services, peers, Configs or Secrets changed.
        self._last_scan = 0.0
        self._held: set[str] = set()
        self._forgotten: set[str] = set()
        self._last_shared: tuple[bytes, bytes] = (b"", b"")
        self._routes: tuple[list[agent_pb2.NodeRoute], bytes] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # node -> (digests of its set, of its network, of the services; when it was sent)
        self._pushed: dict[str, tuple[bytes, bytes, bytes, float]] = {}
        # node -> its set as push last made it; and the Configs and Secrets then.
        self._set_memo: dict[str, _NodeSet] = {}
        self._objects: tuple[tuple[object, ...], tuple[object, ...]] = ((), ())
        # When a push held back by a throttle is due (time.monotonic()); the
        # loop runs a pass then rather than at the next resync.
        self._push_due: float | None = None
        self._channels: dict[str, tuple[str, grpc.Channel]] = {}
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="push")
        self._unwatch: Callable[[], None] | None = None
        # Reads come from the watch-fed cache when there is one; after a lost
        # compare-and-swap the next pass waits for it to reach etcd's current
        # revision, and every read waits for the revision of our own last write.
        self.cache = cache
        self._fresh_read = False
        self._written = 0
        self._written_lock = threading.Lock()   # API threads commit too (record_status, evict)
        self._status_writer = StatusWriter(store, cache, self._commit_unfenced, self._record,
                                           lambda: self._written)

    # -- the loop ---------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unwatch is not None:
            try:
                self._unwatch()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for _, channel in self._channels.values():
            channel.close()

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self._unwatch is None and self.cache is None:
                    self._unwatch = self.store.watch(self.wake)
                self.reconcile_once()
                delay = 0.2
            except StoreUnavailable as e:
                log.warning("%s; retrying in %.1fs", e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except NotLeader as e:
                log.warning("%s", e)
                self._stop.wait(0.5)
                continue
            except Conflict as e:
                log.info("pass restarted: %s", e)
                self._fresh_read = True
                continue
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("reconcile pass failed")
            timeout = RESYNC_SECONDS
            due = self._push_due
            if due is not None:
                timeout = max(0.0, min(timeout, due - time.monotonic()))
            # With a thousand nodes reporting, a change arrives every few
            # milliseconds, and a pass still copies the snapshot (O(objects)
            # in C) and looks at what changed. Waiting twice as long as
            # the last pass took before the next one folds every change of
            # that time into one pass and leaves the GIL free two thirds of
            # the time for heartbeats, reports and the API; a small cluster's
            # passes take milliseconds, so it waits milliseconds. Passes that
            # only look at what changed can be shorter than the snapshot copy
            # that every pass makes under the cache's lock (which the watch
            # and status reports need too): a large cluster's passes are
            # spaced by at least SETTLE_SECONDS_PER_REPLICA per replica.
            ended = time.monotonic()
            settle = min(max(2 * (ended - started),
                             self._index.size * SETTLE_SECONDS_PER_REPLICA),
                         MAX_PASS_SETTLE_SECONDS)
            self._wake.wait(timeout)
            self._stop.wait(max(0.0, ended + settle - time.monotonic()))
            self._wake.clear()

    # -- one pass ---------------------------------------------------------------

    def on_leadership(self, leading: bool) -> None:
        """The elector's callback: a new leader re-plans everything and sends every
        node its set again."""
        if leading:
            self._pushed.clear()
            self._want_full = True
        self.wake()

    def reconcile_once(self) -> None:
        self._push_due = None     # push() sets it again if it holds anything back
        fence = None
        if self.elector is not None:
            fence = self.elector.fence
            if fence is None:
                return     # a follower: it serves the API, the leader decides
        started = time.monotonic()
        if started - self._last_full >= FULL_PASS_SECONDS:
            self._want_full = True     # the safety net: re-plan everything
        snap = self.read()
        dirty = self._plan_dirty.take()
        if dirty.workloads is None:
            self._last_full = started
        try:
            writes = self.plan(snap, now_ms(), dirty)
            if writes:
                revision = self.store.commit(writes, fence=fence)
                with self._written_lock:
                    self._written = max(self._written, revision)
                # Push what was just committed, not what was read before it.
                snap = self.read()
        except BaseException:
            self._plan_dirty.merge(dirty)    # decided again by the next pass
            raise
        self._record(self._planned_events)
        self._planned_events = []
        dirty = self._push_dirty.take()
        try:
            self.push(snap, dirty)
        except BaseException:
            self._push_dirty.merge(dirty)
            raise
        metrics.time_since("reconcile_pass_seconds", started)

    def _record(self, events: list[types_pb2.Event]) -> None:
        if self.events is not None:
            for e in events:
                self.events.record(e)

    def read(self) -> Snapshot:
        """A snapshot for a pass; the replica index follows it (`_follow`)."""
        if self.cache is None:
            snap = self.store.snapshot()
        elif self._fresh_read:
            # After a lost compare-and-swap: the cache once it holds every
            # write made so far (the one we lost to included), not a read of
            # the whole prefix, which costs seconds with 10,000 replicas.
            self._fresh_read = False
            snap = self.cache.latest()
        else:
            snap = self.cache.snapshot(min_revision=self._written)
        self._follow(snap)
        return snap

    def _follow(self, snap: Snapshot) -> None:
        """Brings the replica index to `snap` and marks what changed as dirty:
        from the keys the watch cache says changed, or everything when it
        cannot say (no cache, reloaded) or a full pass is wanted."""
        index = self._index
        dirty: Dirty | None = None
        if (self.cache is not None and not self._want_full and index.revision >= 0
                and snap.revision >= index.revision):
            # Keys only: the index reads the records from `snap`.
            found = self.cache.changes_since(index.revision, records=False)
            if found is not None:
                dirty = index.follow(snap, found[1])
        if dirty is None:
            self._want_full = False
            index.rebuild(snap)
            dirty = Dirty()
        self._plan_dirty.merge(dirty)
        self._push_dirty.merge(dirty)

    # -- changes the API hands over -------------------------------------------------

    def record_status(self, report: node_pb2.StatusReport) -> ReportMerge:
        """Merges a node's status report into its replicas' records and commits it."""
        if report.complete:
            self.node_images.set(report.node, report.image_digests)

        # Batched with the reports of other nodes arriving meanwhile (statuswriter.py).
        return self._status_writer.write(report)

    def evict(self, node: str) -> list[tuple[str, str]]:
        """Asks every live replica on `node` to leave (a drain); returns their keys.

        Leaving replicas are replaced elsewhere by reconcile (within the
        workload's maxSurge), like `kubectl drain` evicting pods that their
        controllers then recreate. Finished replicas hold nothing and stay.
        """
        def attempt(n: int) -> list[tuple[str, str]]:
            snap = (self.store.snapshot() if n > 0 or self.cache is None
                    else self.cache.latest())
            writes = []
            evicted = []
            for key, r in sorted(snap.replicas.items()):
                if (r.node != node or r.metadata.deletion_requested
                        or is_terminal(r.status.phase)):
                    continue
                leaving = types_pb2.Replica()
                leaving.CopyFrom(r)
                leaving.metadata.deletion_requested = True
                leaving.status.phase = types_pb2.REPLICA_PHASE_TERMINATING
                leaving.status.reason = types_pb2.REPLICA_REASON_DRAINED
                leaving.status.message = f"node {node} is being drained"
                writes.append(self._replica_write(snap, key, leaving))
                evicted.append(key)
            self._commit_unfenced(writes)
            return evicted
        evicted = retry_conflicts(attempt, what=f"drain of node {node}")
        self._record([event("Replica", ns, name, "Evicted", f"node {node} is being drained")
                      for ns, name in evicted])
        return evicted

    def _replica_write(self, snap: Snapshot, key: tuple[str, str],
                       record: types_pb2.Replica | None) -> Write:
        """A compare-and-swap write of one replica record read in `snap` (None: delete)."""
        store_key = self.store.keys.replica(*key)
        return Write(store_key, record.SerializeToString() if record is not None else None,
                     snap.mod_revisions[store_key])

    def _commit_unfenced(self, writes: list[Write]) -> None:
        if not writes:
            return
        revision = self.store.commit(writes)
        with self._written_lock:
            self._written = max(self._written, revision)
        self.wake()

    def _event(self, kind: str, ns: str, name: str, reason: str, message: str,
               type_: str = NORMAL) -> None:
        self._planned_events.append(event(kind, ns, name, reason, message, type_))

    def plan(self, snap: Snapshot, now: int, dirty: Dirty | None = None) -> list[Write]:
        """Every write one pass makes, computed from `snap` alone.

        `dirty` names the workloads that changed since the last pass, for
        which the replica index already follows `snap` (`read`); only those
        (and the ones that need a timer) are decided again. Without it,
        every workload is, on an index built from `snap`.
        """
        self._planned_events = []
        keys = self.store.keys
        index = self._index
        if dirty is None:
            index.rebuild(snap)
            dirty = Dirty()
        # A node's transition needs its record or heartbeat to change, or
        # it to be not Ready (time passes): only those are looked at.
        looked = None if dirty.nodes is None else dirty.nodes | self._unready
        if looked is None:
            self._unready = set()
        lifecycle = plan_lifecycle(snap, now, self.node_grace_ms, keys, looked)
        for name in snap.nodes if looked is None else looked:
            record = snap.nodes.get(name)
            if record is None or (name in snap.heartbeats
                                  and not record.not_ready_since_unix_ms):
                self._unready.discard(name)
            else:
                self._unready.add(name)
        writes, lost = lifecycle.writes, lifecycle.lost
        self._planned_events += lifecycle.events
        # Named volumes: records made for new names, marked lost with their
        # node; placement below binds the unbound ones (written at the end).
        volume_plan = volumes.plan_records(snap)
        for message in volume_plan.lost:
            log.warning("%s", message)
        if dirty.workloads is None or dirty.decide is None or dirty.shrunk is None:
            todo = set(snap.workloads) | set(index.by_workload)
            self._settled = {}
            self._prune_views(snap)
        else:
            todo = set(dirty.decide)
            for key in dirty.workloads - todo:
                deleting = self._settled.get(key)
                if deleting is None or (key in dirty.shrunk and (
                        not deleting or key not in index.by_workload)):
                    # Not settled; or it lost a replica it wants; or its
                    # last replica went and its record can go too.
                    todo.add(key)
            todo |= {k for k in self._recheck if k in snap.workloads}
            for gone in lost:
                todo.update(index.workload_of(key) for key in index.by_node.get(gone, ()))
            # Between full passes, views of deleted replicas go in bulk.
            self._prune_views(snap, slack=len(snap.replicas) + 1024)
        by_workload: dict[tuple[str, str], list[types_pb2.Replica]] = defaultdict(list)
        for key in (k for w in todo for k in index.by_workload.get(w, ())):
            r = snap.replicas[key]
            if r.node in lost and (r.metadata.deletion_requested or
                                   not is_terminal(r.status.phase)):
                # Its node is gone past the grace period: forget it here, and
                # reconcile below makes its replacement in this same pass.
                store_key = keys.replica(*key)
                writes.append(Write(store_key, None, snap.mod_revisions[store_key]))
                if not r.metadata.deletion_requested:
                    message = (f"node {r.node} NotReady for over "
                               f"{self.node_grace_ms / 1000:g}s; replaced on another node")
                    log.info("replica=%s/%s node=%s rescheduled: %s", *key, r.node, message)
                    self._event("Replica", key[0], key[1], "Rescheduled", message, WARNING)
                    self._event("Workload", key[0], r.workload, "Rescheduled",
                                f"replica {key[1]}: {message}", WARNING)
                continue
            by_workload[(r.metadata.namespace, r.workload)].append(r)

        changed: dict[tuple[str, str], types_pb2.Replica] = {}
        created: list[types_pb2.Replica] = []
        deleted_keys: list[tuple[str, str]] = []
        finished_workloads: list[types_pb2.Workload] = []

        # Replica names taken per namespace, made once a pass that creates.
        taken: dict[str, set[str]] = {}
        for key in sorted(todo):
            w = snap.workloads.get(key)
            replicas = by_workload.get(key, [])
            if w is None and not replicas:
                continue
            current = workload_hash(w, snap) if w is not None else ""
            view = workload_view(w, current) if w is not None else None
            replica_views = [self._view((r.metadata.namespace, r.metadata.name), r)
                             for r in replicas]
            decision = reconcile.decide(view, replica_views, now)
            if decision.noop and reconcile.settled(view, replica_views):
                self._settled[key] = view is None or view.deletion_requested
            else:
                self._settled.pop(key, None)
            if view is not None and view.replace_failed and any(
                    v.phase is Phase.FAILED and not v.deletion_requested
                    for v in replica_views):
                self._recheck.add(key)
            else:
                self._recheck.discard(key)
            if not decision.noop:
                log.info("workload=%s/%s %s", key[0], key[1], decision.reason)
                self._event("Workload", key[0], key[1], "Reconciled", decision.reason)
            by_name = {r.metadata.name: r for r in replicas}
            for name in decision.delete:
                r = by_name[name]
                if not r.node or r.node not in snap.nodes:
                    deleted_keys.append((r.metadata.namespace, name))
                else:
                    r2 = types_pb2.Replica()
                    r2.CopyFrom(r)
                    r2.metadata.deletion_requested = True
                    r2.status.phase = types_pb2.REPLICA_PHASE_TERMINATING
                    changed[(r.metadata.namespace, name)] = r2
            if decision.create and w is not None:
                if key[0] not in taken:
                    taken[key[0]] = {k[1] for k in snap.replicas if k[0] == key[0]}
                names = reconcile.new_replica_names(
                    w.metadata.name, decision.create, taken[key[0]], self.rng)
                taken[key[0]].update(names)
                template = self._new_replica(w, "", now, current)
                for name in names:
                    # A copy of one made per workload: cheaper than building
                    # each from the workload (labels, the whole spec).
                    r = types_pb2.Replica()
                    r.CopyFrom(template)
                    r.metadata.name = name
                    r.metadata.uid = uuid.uuid4().hex
                    created.append(r)
            if w is not None and w.metadata.deletion_requested and not replicas:
                finished_workloads.append(w)

        retry = dirty.workloads is None or dirty.retry_unplaced
        self._place(snap, created, changed, volume_plan.records,
                    sorted(index.unplaced) if retry else [])
        writes += volumes.record_writes(snap, volume_plan.records, keys)
        for r in created:
            ns, name = r.metadata.namespace, r.metadata.name
            writes.append(Write(keys.replica(ns, name), r.SerializeToString(), 0))
        for (ns, name), r in changed.items():
            store_key = keys.replica(ns, name)
            writes.append(Write(store_key, r.SerializeToString(), snap.mod_revisions[store_key]))
        for ns, name in deleted_keys:
            store_key = keys.replica(ns, name)
            writes.append(Write(store_key, None, snap.mod_revisions[store_key]))
        for w in finished_workloads:
            store_key = keys.workload(w.metadata.namespace, w.metadata.name)
            writes.append(Write(store_key, None, snap.mod_revisions[store_key]))
            log.info("workload=%s/%s deleted", w.metadata.namespace, w.metadata.name)
        finished = {(w.metadata.namespace, w.metadata.name) for w in finished_workloads}
        first, last = self._plan_vips(snap, finished)
        # Claims before the statuses that name them, and released only after
        # the status is cleared or the record deleted (vips.py): a pass that
        # stops half-way never shows an address that is not held.
        return first + writes + last

    def _plan_vips(self, snap: Snapshot,
                   finished: set[tuple[str, str]]) -> tuple[list[Write], list[Write]]:
        """The VIP writes of a pass: (claims and statuses, releases)."""
        cidr = self.service_cidr
        if cidr is None:
            return [], []
        keys = self.store.keys
        holders = {}
        for key, w in snap.workloads.items():
            if key in finished:
                continue        # its record goes in this pass: its claim goes too
            need = (vips.Need.KEEP if w.metadata.deletion_requested
                    else vips.Need.WANT if w.spec.ports else vips.Need.NONE)
            holders[key] = vips.Holder(need, w.status.virtual_ip)
        plan = vips.plan(cidr, holders, snap.vip_claims,
                         start=self._vip_rng.randrange(cidr.num_addresses))
        for key in plan.exhausted:
            if key not in self._vip_exhausted:
                message = f"no free virtual IP left in the service CIDR {cidr}"
                log.warning("workload=%s/%s %s", *key, message)
                self._event("Workload", *key, "NoVirtualIP", message, WARNING)
        self._vip_exhausted = set(plan.exhausted)
        first = [Write(keys.vip(ip), vips.owner_text(owner).encode(), 0)
                 for ip, owner in plan.claims.items()]
        for key, ip in plan.status.items():
            w = types_pb2.Workload()
            w.CopyFrom(snap.workloads[key])
            w.status.virtual_ip = ip
            store_key = keys.workload(*key)
            first.append(Write(store_key, w.SerializeToString(), snap.mod_revisions[store_key]))
            if ip:
                log.info("workload=%s/%s virtual_ip=%s", *key, ip)
                self._event("Workload", *key, "VirtualIP", f"virtual IP {ip}")
            else:
                log.info("workload=%s/%s virtual IP given back", *key)
        last = [Write(keys.vip(ip), None, snap.mod_revisions[keys.vip(ip)])
                for ip in plan.releases]
        for ip in plan.releases:
            log.info("virtual_ip=%s released (was %s's)", ip, snap.vip_claims.get(ip, "?"))
        return first, last

    def _new_replica(self, w: types_pb2.Workload, name: str, now: int,
                     current: str) -> types_pb2.Replica:
        r = types_pb2.Replica(workload=w.metadata.name, spec_hash=current)
        r.metadata.name = name
        r.metadata.namespace = w.metadata.namespace
        r.metadata.labels.update(w.metadata.labels)
        r.metadata.uid = uuid.uuid4().hex
        r.metadata.created_unix_ms = now
        r.spec.CopyFrom(w.spec)
        r.status.phase = types_pb2.REPLICA_PHASE_PENDING
        return r

    def _view(self, key: tuple[str, str], r: types_pb2.Replica) -> ReplicaView:
        """The replica's view, made again only when its record changed."""
        # The record itself is the version: records are replaced, never
        # mutated, and the entry holds it, so its identity stays its own.
        hit = self._views.get(key)
        if hit is None or hit[0] is not r:
            hit = (r, replica_view(r))
            self._views[key] = hit
        return hit[1]

    def _prune_views(self, snap: Snapshot, slack: int = 0) -> None:
        """Forgets the views of replicas that are gone, once more than `slack` are."""
        if len(self._views) > len(snap.replicas) + slack:
            self._views = {k: v for k, v in self._views.items() if k in snap.replicas}

    def _place(self, snap: Snapshot, created: list[types_pb2.Replica],
               changed: dict[tuple[str, str], types_pb2.Replica],
               records: dict[tuple[str, str], types_pb2.VolumeRecord],
               unplaced: list[tuple[str, str]]) -> None:
        """Binds new and the `unplaced` replicas to nodes; records why the rest wait.

        `unplaced` are the stored replicas without a node, tried again when
        something changed that could make them fit (changes.py). `records`
        (the named volumes, as this pass will write them) gets the node of
        each volume that its first replica binds.
        """
        pending = [r for r in created]
        pending += [snap.replicas[key] for key in unplaced if key not in changed]
        if not pending:
            return
        self.node_images.retain(snap.nodes)
        nodes = [node_view(n, n.name in snap.heartbeats, self.node_images.get(n.name))
                 for n in snap.nodes.values()]
        states = placement.build_node_states(
            nodes, [self._view(key, r) for key, r in snap.replicas.items()])
        requests = []
        pinned: dict[str, tuple[str, str, bool]] = {}    # replica -> (volume, node, lost)
        # Replicas of one workload with one spec hash have one spec, so one
        # request: made once, not once per replica (10,000 new replicas
        # of 10 workloads make 10), and the planner's per-request views are
        # found by identity.
        made: dict[tuple[str, str, str],
                   tuple[placement.PlacementRequest, tuple[str, str, bool] | None]] = {}
        for r in pending:
            ns, rname = r.metadata.namespace, r.metadata.name
            spec_key = (ns, r.workload, r.spec_hash)
            found = made.get(spec_key) if r.spec_hash else None
            if found is None:
                v = replica_view(r)
                used = volumes.used_by(r)
                volume_node = volume = ""
                pin = None
                for name in used:
                    record = records.get((v.namespace, name))
                    if record is not None and record.node:
                        volume, volume_node = name, record.node
                        pin = (name, record.node, record.lost)
                        break
                found = (placement.PlacementRequest(
                    workload_key=workload_key(v.namespace, v.workload), request=v.request,
                    node_selector=dict(r.spec.node_selector), host_ports=v.host_ports,
                    spread=r.spec.spread, volumes=tuple(f"{v.namespace}/{n}" for n in used),
                    volume_node=volume_node, volume=volume,
                    image_digest=imagescore.digest_of(r.spec.image, r.spec.image_digest)), pin)
                made[spec_key] = found
            if found[1] is not None:
                pinned[f"{ns}/{rname}"] = found[1]
            requests.append((f"{ns}/{rname}", found[0]))
        new_ids = {id(r) for r in created}   # identity, not a by-value proto compare
        seed = self.rng.randrange(1 << 30)
        volume_nodes = {f"{ns}/{name}": record.node
                        for (ns, name), record in records.items() if record.node}
        bound_before = set(volume_nodes)
        started = time.monotonic()
        results = placement.place_batch(requests, list(states.values()), seed, volume_nodes)
        metrics.time_since("placement_seconds", started)
        for volume_id, node_name in volume_nodes.items():
            if volume_id in bound_before:
                continue
            ns, _, name = volume_id.partition("/")
            # A copy: the snapshot's records are shared and never mutated.
            record = types_pb2.VolumeRecord()
            if (ns, name) in records:
                record.CopyFrom(records[(ns, name)])
            record.metadata.namespace, record.metadata.name = ns, name
            record.node = node_name
            records[(ns, name)] = record
            log.info("volume=%s/%s bound to node=%s", ns, name, node_name)
            self._event("Volume", ns, name, "Bound", f"kept on node {node_name}")
        placed: dict[tuple[str, str], list[str]] = defaultdict(list)   # workload -> nodes
        counts = {"placed": 0, "unschedulable": 0}
        for r in pending:
            key = (r.metadata.namespace, r.metadata.name)
            result = results[f"{key[0]}/{key[1]}"]
            is_new = id(r) in new_ids
            target = r
            if not is_new:
                target = types_pb2.Replica()
                target.CopyFrom(r)
            if result.node is not None:
                target.node = result.node
                target.status.reason = types_pb2.REPLICA_REASON_UNSPECIFIED
                target.status.message = ""
                # One line per workload below; this one for debugging (10,000
                # placements at INFO cost a pass a fifth of a second).
                log.debug("replica=%s/%s placed node=%s", key[0], key[1], result.node)
                placed[(key[0], r.workload)].append(result.node)
                counts["placed"] += 1
                self._event("Replica", key[0], key[1], "Scheduled",
                            f"placed on node {result.node}")
            else:
                message = placement.unschedulable_message(result.rejections, len(nodes))
                pin = pinned.get(f"{key[0]}/{key[1]}")
                if pin is not None:
                    message = placement.volume_message(pin[0], pin[1], result.rejections,
                                                       pin[2])
                counts["unschedulable"] += 1
                if target.status.message == message and not is_new:
                    continue
                target.status.reason = types_pb2.REPLICA_REASON_UNSCHEDULABLE
                target.status.message = message
                log.info("replica=%s/%s unschedulable: %s", key[0], key[1], message)
                self._event("Replica", key[0], key[1],
                            reason_name(types_pb2.REPLICA_REASON_UNSCHEDULABLE), message, WARNING)
            if not is_new:
                changed[key] = target
        for outcome, n in counts.items():
            if n:
                metrics.inc("placements_total", n, result=outcome)
        for (ns, workload), where in sorted(placed.items()):
            nodes_used = sorted(set(where))
            log.info("workload=%s/%s %d replicas placed on %d nodes: %s%s", ns, workload,
                     len(where), len(nodes_used), ",".join(nodes_used[:5]),
                     ",..." if len(nodes_used) > 5 else "")

    # -- telling the nodes ---------------------------------------------------------

    def forget_pushed(self, node: str) -> None:
        """The node (re)registered: the next pass sends its set.

        Its record's new registration number (in the set's digest) makes
        the set differ from whatever it was sent before, so it is sent once
        the watch brings the record; dropping what was pushed here as well
        would send it twice when the pass saw the record first.
        """
        self._forgotten.add(node)
        self.wake()

    def desired_sets(self, snap: Snapshot) -> dict[str, list[types_pb2.Replica]]:
        sets: dict[str, list[types_pb2.Replica]] = {name: [] for name in snap.nodes}
        views = self._views
        for key, r in snap.replicas.items():
            # The pass's view of an unchanged record has the two fields as
            # plain attributes, cheaper than the protobuf's.
            hit = views.get(key)
            if hit is not None and hit[0] is r:
                node, leaving = hit[1].node, hit[1].deletion_requested
            else:
                node, leaving = r.node, r.metadata.deletion_requested
            if not leaving and node in sets:
                sets[node].append(r)
        return sets

    def push(self, snap: Snapshot, dirty: Dirty | None = None) -> None:
        """Sends each Ready node its desired set when it changed (or on the resync).

        A change to the node's replicas is sent at once. A change only in
        the network around it (routes, the addresses of its workloads'
        replicas) is sent at most once per NETWORK_PUSH_SECONDS per node: a
        workload of a thousand replicas coming up changes its addresses a
        thousand times, and every node that runs one of them would
        otherwise be sent the whole list each time. A change in the
        services (every node's, services.py) is sent at most once per
        SERVICE_PUSH_SECONDS. A held-back change is sent by a pass run when
        its throttle ends (`_push_due`).

        `dirty` (changes.py) names the nodes whose replicas changed and the
        workloads whose addresses or service may have: only those sets,
        peer lists and services are made again, so a pass costs O(nodes +
        what changed), not O(nodes x replicas). Without it, all are, on an
        index built from `snap`.
        """
        now = time.monotonic()
        index = self._index
        if dirty is None:
            index.rebuild(snap)
            dirty = Dirty()
        # What nodes need to reach each other's containers (routes.py):
        # made again when a node record changed.
        if dirty.node_records or self._routes is None:
            made = routes.node_routes(snap)
            self._routes = (made, _digest(made))
        node_routes, routes_digest = self._routes
        changed_peers = self._update_peers(snap, dirty)
        # The same for every node: made and digested once per pass. Without
        # a service CIDR there are none (addresses left from before are not
        # held, so not balanced).
        cluster_services, services_digest = self._update_services(snap, dirty)
        due: float | None = None
        resync = max(PUSH_RESYNC_SECONDS, len(snap.nodes) / MAX_RESYNC_PUSHES_PER_SECOND)
        # Records are never mutated, only replaced: a node whose replica
        # records, registration, Configs and Secrets are the very objects
        # of the last pass has the same set, and its digest is reused
        # instead of re-made (sorting, hashing, a Config lookup per replica).
        objects = (tuple(snap.configs.values()), tuple(snap.secrets.values()))
        scan = (dirty.nodes is None or changed_peers is None or bool(changed_peers)
                or (routes_digest, services_digest) != self._last_shared
                or now - self._last_scan >= PUSH_SCAN_SECONDS)
        if not (_same(objects[0], self._objects[0]) and _same(objects[1], self._objects[1])):
            self._set_memo.clear()
            scan = True
        self._objects = objects
        self._last_shared = (routes_digest, services_digest)
        forgotten, self._forgotten = self._forgotten, set()
        if scan:
            self._last_scan = now
            names: Iterable[str] = snap.nodes
        else:
            assert dirty.nodes is not None
            names = sorted((dirty.nodes | self._held | forgotten) & snap.nodes.keys())
        self._held = set()
        if len(self._set_memo) > len(snap.nodes):
            self._set_memo = {k: v for k, v in self._set_memo.items() if k in snap.nodes}
        if len(self._net) > len(snap.nodes):
            self._net = {k: v for k, v in self._net.items() if k in snap.nodes}
        for node_name in names:
            node = snap.nodes[node_name]
            if node_name not in snap.heartbeats:
                continue
            # The node's registration is in the digest: a node that
            # registered again (through any scheduler) gets its set again,
            # once, and not when its record changes otherwise (NotReady and
            # back, cordoned). Records stored before there was a
            # registration number use their revision.
            registered = node.registration or snap.mod_revisions.get(
                self.store.keys.node(node_name), 0)
            memo = self._set_memo.get(node_name)
            found: Sequence[types_pb2.Replica] = ()
            if memo is not None and memo.registered == registered and (
                    dirty.nodes is not None and node_name not in dirty.nodes):
                found = memo.found      # none of its replicas changed
            else:
                found = self._node_replicas(snap, node_name)
            if memo is not None and memo.registered == registered and _same(memo.found, found):
                replicas, workloads = memo.replicas, memo.workloads
                configs, opened, set_digest = memo.configs, memo.opened, memo.digest
            else:
                replicas = sorted(found, key=lambda r: (r.metadata.namespace, r.metadata.name))
                workloads = sorted({(r.metadata.namespace, r.workload) for r in replicas})
                configs, opened, problems = node_objects(snap, replicas, self.secrets)
                for problem in set(problems) - self._secret_problems:
                    log.error("node=%s %s", node_name, problem)
                self._secret_problems |= set(problems)
                set_digest = hashlib.sha256(f"{registered};".encode() + b"".join(
                    f"{r.metadata.namespace}/{r.metadata.name}/{r.metadata.uid}/{r.spec_hash};"
                    .encode() for r in replicas) + b"".join(
                    config_digest(c) for c in configs) + b"".join(
                    version_of(snap.secrets.get((x.metadata.namespace, x.metadata.name), b""))
                    for x in opened)).digest()
                self._set_memo[node_name] = _NodeSet(registered, tuple(found), replicas,
                                                     workloads, configs, opened, set_digest)
            net = self._net.get(node_name)
            if (net is not None and net[0] == routes_digest and memo is not None
                    and memo.workloads is workloads and changed_peers is not None
                    and not changed_peers.intersection(workloads)):
                net_digest = net[1]
            else:
                net_digest = hashlib.sha256(routes_digest + b"".join(
                    self._peer_digests.get(key, b"") for key in workloads)).digest()
                self._net[node_name] = (routes_digest, net_digest)
            last = self._pushed.get(node_name)
            if last is not None:
                same_set, same_net = last[0] == set_digest, last[1] == net_digest
                same_services = last[2] == services_digest
                age = now - last[3]
                if same_set and same_net and same_services and age < resync:
                    continue
                # Sent now when its replicas changed or the resync is due.
                # When only the services or the network around it changed
                # and it was told very recently, it is sent when the
                # throttle ends, by a pass run then (`_push_due`); services
                # have the shorter throttle, and a network change rides along.
                wait = 0.0
                if same_set and not same_services:
                    wait = SERVICE_PUSH_SECONDS
                elif same_set and not same_net:
                    wait = NETWORK_PUSH_SECONDS
                if age < wait:
                    due = min(due, last[3] + wait) if due is not None else last[3] + wait
                    self._held.add(node_name)
                    continue
            self._pushed[node_name] = (set_digest, net_digest, services_digest, now)
            desired = agent_pb2.DesiredSet(node=node_name, revision=snap.revision,
                                           replicas=replicas, nodes=node_routes,
                                           peers=routes.peers_of(self._addresses, replicas),
                                           services=cluster_services,
                                           configs=configs, secrets=opened)
            self._pool.submit(self._send, node, desired)
        self._push_due = due
        self.secrets.forget_others(snap.secrets)

    def _node_replicas(self, snap: Snapshot, node: str) -> list[types_pb2.Replica]:
        """The replicas bound to `node` that are not asked to leave (its set)."""
        out = []
        for key in self._index.by_node.get(node, ()):
            r = snap.replicas[key]
            if not self._view(key, r).deletion_requested:
                out.append(r)
        return out

    def _update_peers(self, snap: Snapshot, dirty: Dirty) -> set[WorkloadKey] | None:
        """Makes again the peer lists of the workloads whose addresses changed;
        returns those (None: all were)."""
        index = self._index
        todo: Iterable[WorkloadKey]
        if dirty.addresses is None:
            self._addresses, self._peer_digests = {}, {}
            todo = list(index.by_workload)
        else:
            todo = dirty.addresses
        for key in todo:
            # The first MAX_PEERS_PER_WORKLOAD by name, as routes.py lists them.
            found: list[agent_pb2.ReplicaAddress] = []
            for rkey in sorted(k for k in index.by_workload.get(key, ()) if index.addressed(k)):
                if len(found) >= MAX_PEERS_PER_WORKLOAD:
                    break
                found.append(agent_pb2.ReplicaAddress(
                    namespace=key[0], workload=key[1], name=rkey[1], ip=index.addressed(rkey)))
            if found:
                self._addresses[key] = found
                self._peer_digests[key] = _digest(found)
            else:
                self._addresses.pop(key, None)
                self._peer_digests.pop(key, None)
        return None if dirty.addresses is None else dirty.addresses

    def _update_services(self, snap: Snapshot, dirty: Dirty
                         ) -> tuple[list[agent_pb2.Service], bytes]:
        """Every service of the cluster (services.py) and their digest, made
        again for the workloads that changed, or all when the Ready nodes did."""
        todo: Iterable[WorkloadKey] = ()
        if self.service_cidr is None or dirty.workloads is None or dirty.all_services:
            # Made again from nothing (none without a service CIDR).
            self._services, self._services_out = {}, None
            if self.service_cidr is not None:
                todo = snap.workloads
        else:
            todo = dirty.workloads
        changed = self._services_out is None
        for key in todo:
            w = snap.workloads.get(key)
            service = None
            if w is not None and w.spec.ports:
                service = services.service_of(
                    w, [snap.replicas[k] for k in self._index.by_workload.get(key, ())],
                    snap.heartbeats)
            old = self._services.get(key)
            if service is None:
                self._services.pop(key, None)
            else:
                self._services[key] = service
            changed |= old != service
        if changed or self._services_out is None:
            found = [self._services[key] for key in sorted(self._services)]
            self._services_out = (found, _digest(found))
        return self._services_out

    def _stub(self, node: types_pb2.Node) -> agent_pb2_grpc.AgentStub:
        cached = self._channels.get(node.name)
        if cached is None or cached[0] != node.address:
            if cached is not None:
                cached[1].close()
            cached = (node.address, self.dial(node))
            self._channels[node.name] = cached
        return agent_pb2_grpc.AgentStub(cached[1])

    def dial(self, node: types_pb2.Node) -> grpc.Channel:
        """A new channel to `node`'s agent, which must prove it is that node."""
        return rpc.make_channel(node.address, self.tls, pki.node_server_name(node.name))

    def _send(self, node: types_pb2.Node, desired: agent_pb2.DesiredSet) -> None:
        try:
            self._stub(node).SetDesired(desired, timeout=PUSH_TIMEOUT)
            log.debug("node=%s desired set sent: %d replicas at revision %d", node.name,
                      len(desired.replicas), desired.revision)
        except grpc.RpcError as e:
            log.warning("node=%s cannot receive its desired set: %s", node.name,
                        e.details() if isinstance(e, grpc.Call) else e)
            # Forget what was pushed, so the next pass sends it again.
            self._pushed.pop(node.name, None)
            self._forgotten.add(node.name)
