"""A node's life as the scheduler sees it: registered, Ready, NotReady, lost, back.

    register ──> Ready ──(heartbeat lease lapses)──> NotReady ──(grace passes)──> lost
                   ^                                    │                          │
                   └──────(heartbeats resume)───────────┘                          │
                   └──────(registers again: its moved replicas are not in its set)─┘

- Registering stores the node record and a heartbeat key bound to a fresh
  etcd lease of `lease_ttl` seconds; the agent refreshes the lease three
  times per TTL, so one or two lost heartbeats change nothing.
- A node is Ready while its heartbeat key exists (readiness is never
  stored). When the lease lapses, etcd deletes the key and the controller
  marks the node NotReady, storing since when, so that a new leader keeps
  counting from the same moment.
- A node NotReady for the grace period is lost: the controller removes its
  replicas and reconcile places replacements elsewhere in the same pass. A
  node back within the grace period keeps its replicas untouched (a
  network blip restarts nothing).
- Revival: a lease that lapsed while the agent is fine (a slow scheduler, a
  blip) is replaced by a new one on the next heartbeat, without a whole
  re-registration, which would cost an overloaded scheduler more and make
  the next lapse likelier.

- A heartbeat costs O(1) and waits for nothing: while the watch cache
  shows the node's heartbeat key (its lease is alive), the refresh is
  queued on the one keep-alive stream and the answer is read later; only
  a node whose lease is unknown here, or that etcd said had expired, takes
  the slow path (a refresh waited for, a revival), and at most
  MAX_SLOW_HEARTBEATS of those at once. A heartbeat then costs the API a
  dict lookup and a queue put, never a worker thread held on an etcd round
  trip; what is left is gRPC's own cost per call.
- Heartbeats stay within MAX_HEARTBEATS_PER_SECOND whatever the cluster's
  size: the lease TTL is `--node-lease-ttl` (3 s) up to 300 nodes and grows
  with the node count beyond (Nomad's scheme); a node's lease is re-let
  with the new TTL once the target differs by half, and every heartbeat
  answer tells the node its interval (a third of its lease's TTL).

`transition` is the decision, pure; `plan_lifecycle` applies it to a
snapshot for the controller; `NodeLeases` does the lease I/O for the node API.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mctl.v1 import types_pb2

from .events import WARNING, event
from .keys import KeyCodec
from .retry import retry_conflicts
from .store import Conflict, Snapshot, Store, StoreUnavailable, Write

log = logging.getLogger(__name__)

# A node whose heartbeats stop is NotReady after this many seconds (the
# lease's TTL; longer in large clusters, see MAX_HEARTBEATS_PER_SECOND);
# agents heartbeat three times per TTL.
NODE_LEASE_TTL = 3
# Heartbeats per second the scheduler takes at most, whatever the cluster's
# size: beyond NODE_LEASE_TTL * this / 3 nodes (300 with the defaults)
# leases get longer and nodes heartbeat less often, as Nomad's servers
# stretch heartbeat TTLs to stay within max_heartbeats_per_second (50 by
# default there). Kubernetes instead renews every node lease every 10 s of
# 40 s, whatever the size. A heartbeat is one unary gRPC call and one etcd
# keep-alive, ~0.5-1 ms of the scheduler's CPU on this machine's loaded
# cores, most of it in gRPC's own machinery: 300 a second keep that under a
# third of a core. A node that stops is NotReady after its lease: 3 s up to
# 300 nodes, 10 s at 1,000, 50 s at 5,000.
MAX_HEARTBEATS_PER_SECOND = 300
# The most `--max-heartbeats-per-second` may say: one scheduler process
# serves a few thousand gRPC calls a second at best, so a budget beyond
# this would only let leases stay short while heartbeats time out.
MAX_HEARTBEATS_PER_SECOND_LIMIT = 10_000
# Heartbeats that need etcd round trips (a lapsed lease revived, a lease
# re-let for the cluster's size) served at once; others are told to come
# back (NodesBusy), so they cannot take every API thread.
MAX_SLOW_HEARTBEATS = 4
# How long a node may be NotReady before its replicas are placed elsewhere.
DEFAULT_NODE_GRACE_SECONDS = 10.0


class Transition(enum.Enum):
    STAYS = "stays"              # Ready and heartbeating, or NotReady within the grace
    NOT_READY = "not-ready"      # its lease just lapsed: store since when
    READY_AGAIN = "ready-again"  # heartbeats resumed: forget the NotReady time
    LOST = "lost"                # NotReady for the grace period: its replicas move


def transition(heartbeating: bool, not_ready_since_ms: int, now_ms: int,
               grace_ms: int) -> Transition:
    """What happens to a node, from its heartbeat key, its stored NotReady time and now."""
    if heartbeating:
        return Transition.READY_AGAIN if not_ready_since_ms else Transition.STAYS
    if not not_ready_since_ms:
        return Transition.NOT_READY
    if now_ms - not_ready_since_ms >= grace_ms:
        return Transition.LOST
    return Transition.STAYS


@dataclass
class LifecyclePlan:
    """What one controller pass does about nodes: node record writes, lost nodes, events."""

    writes: list[Write] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    events: list[types_pb2.Event] = field(default_factory=list)


def plan_lifecycle(snap: Snapshot, now_ms: int, grace_ms: int, keys: KeyCodec,
                   names: Iterable[str] | None = None) -> LifecyclePlan:
    """Marks nodes NotReady or Ready again in their records; names the lost ones.

    `names`: only these nodes (the controller's incremental passes give the
    ones whose records or heartbeats changed and those not Ready, the only
    ones a transition can happen to); None: all.
    """
    plan = LifecyclePlan()
    for name in sorted(snap.nodes if names is None else names):
        node = snap.nodes.get(name)
        if node is None:
            continue
        step = transition(name in snap.heartbeats, node.not_ready_since_unix_ms, now_ms,
                          grace_ms)
        if step is Transition.LOST:
            plan.lost.add(name)
        if step not in (Transition.NOT_READY, Transition.READY_AGAIN):
            continue
        updated = types_pb2.Node()
        updated.CopyFrom(node)
        updated.not_ready_since_unix_ms = now_ms if step is Transition.NOT_READY else 0
        key = keys.node(name)
        plan.writes.append(Write(key, updated.SerializeToString(), snap.mod_revisions[key]))
        if step is Transition.READY_AGAIN:
            log.info("node=%s Ready again", name)
            plan.events.append(event("Node", "", name, "NodeReady", "heartbeats resumed"))
        else:
            log.warning("node=%s NotReady: heartbeat lease lapsed", name)
            plan.events.append(event(
                "Node", "", name, "NodeNotReady",
                f"heartbeat lease lapsed; replicas move after {grace_ms / 1000:g}s", WARNING))
    return plan


def registered_record(incoming: types_pb2.Node, stored: types_pb2.Node | None,
                      now_ms: int) -> tuple[types_pb2.Node, int]:
    """The record to store for a (re-)registering node, and how long it was NotReady (ms)."""
    record = types_pb2.Node()
    record.CopyFrom(incoming)
    was_not_ready = 0
    if stored is not None:
        record.cordoned = stored.cordoned   # an operator's cordon survives re-registration
        record.registered_unix_ms = stored.registered_unix_ms
        if stored.not_ready_since_unix_ms:
            was_not_ready = now_ms - stored.not_ready_since_unix_ms
    else:
        record.registered_unix_ms = now_ms
    record.ready = False   # readiness is the heartbeat key, never stored
    record.not_ready_since_unix_ms = 0
    # Tells this registration from the last one, whichever scheduler took
    # it: the leader sends the node its set once per registration.
    record.registration = random.getrandbits(63) | 1
    return record, was_not_ready


class NodesBusy(Exception):
    """Too many heartbeats need etcd round trips at once; the node tries again."""


class NodeLeases:
    """Registration and heartbeats: node records and their heartbeat leases in etcd."""

    def __init__(self, store: Store, lease_ttl: int = NODE_LEASE_TTL,
                 live: Callable[[str], bool] | None = None,
                 count: Callable[[], int] | None = None,
                 max_heartbeats_per_second: int = MAX_HEARTBEATS_PER_SECOND) -> None:
        """`live(node)`: whether the node's heartbeat key exists now (the watch
        cache's view); without it every heartbeat waits for etcd's answer.
        `count()`: the registered nodes (default: those registered here)."""
        self.store = store
        self.lease_ttl = lease_ttl
        self.live = live
        self.count = count
        self.max_heartbeats_per_second = max_heartbeats_per_second
        # node -> (its lease, the lease's TTL), as this process knows them.
        self._leases: dict[str, tuple[int, int]] = {}
        # Leases etcd said had expired: their node's next heartbeat revives.
        self._expired: set[int] = set()
        # Lease -> when its unanswered refresh was queued (time.monotonic()):
        # one refresh per lease on the way, so a stalled stream cannot pile
        # up more than one request per node.
        self._sent: dict[int, float] = {}
        self._lock = threading.Lock()
        self._slow = threading.BoundedSemaphore(MAX_SLOW_HEARTBEATS)

    def ttl_target(self) -> int:
        """The lease TTL for this cluster's size: `lease_ttl`, or longer when that
        many nodes heartbeating three times per TTL would exceed the budget."""
        nodes = self.count() if self.count is not None else len(self._leases)
        return max(self.lease_ttl, -(-3 * nodes // self.max_heartbeats_per_second))

    def interval_ms(self, node: str) -> int:
        """How often the node must heartbeat: three times per TTL of its lease."""
        held = self._leases.get(node)
        return (held[1] if held is not None else self.lease_ttl) * 1000 // 3

    def register(self, node: types_pb2.Node) -> int:
        """Stores `node` and a fresh heartbeat lease; returns how long it was NotReady (ms)."""
        ttl = self.ttl_target()
        lease, was_not_ready = retry_conflicts(lambda _: self._register_once(node, ttl),
                                               what=f"registration of node {node.name}")
        with self._lock:
            old = self._leases.get(node.name)
            if old is not None:
                self._expired.discard(old[0])
            self._leases[node.name] = (lease, ttl)
        return was_not_ready

    def _register_once(self, node: types_pb2.Node, ttl: int) -> tuple[int, int]:
        keys = self.store.keys
        raw, rev = self.store.get(keys.node(node.name))
        stored = types_pb2.Node.FromString(raw) if raw is not None else None
        record, was_not_ready = registered_record(node, stored, int(time.time() * 1000))
        lease = self.store.grant_lease(ttl)
        self.store.commit([
            Write(keys.node(node.name), record.SerializeToString(), rev),
            Write(keys.heartbeat(node.name), str(lease).encode(),
                  self.store.get(keys.heartbeat(node.name))[1], lease=lease),
        ])
        return lease, was_not_ready

    def heartbeat(self, node: str) -> bool:
        """Refreshes the node's lease (reviving a lapsed one); False: it must register.

        Raises NodesBusy when it would need etcd and MAX_SLOW_HEARTBEATS
        others already wait on it.
        """
        held = self._leases.get(node)
        if (held is not None and self.live is not None and held[0] not in self._expired
                and self.live(node)):
            lease, ttl = held
            target = self.ttl_target()
            if 2 * ttl > target and 2 * target > ttl:
                self._refresh_nowait(lease, ttl)
                return True
            # The cluster grew (or shrank) by half since this lease was
            # granted: a lease of the TTL for its size, then the interval.
            # Without a free slot this heartbeat refreshes the old lease; a
            # later one changes it.
            try:
                return self._slowly(lambda: self._relet(node, held, target))
            except NodesBusy:
                self._refresh_nowait(lease, ttl)
                return True
        return self._slowly(lambda: self._heartbeat_waiting(
            node, held[0] if held is not None else None))

    def _slowly(self, fn: Callable[[], bool]) -> bool:
        if not self._slow.acquire(blocking=False):
            raise NodesBusy(f"{MAX_SLOW_HEARTBEATS} heartbeats wait on the cluster store")
        try:
            return fn()
        finally:
            self._slow.release()

    def _refresh_nowait(self, lease: int, ttl: int) -> None:
        now = time.monotonic()
        with self._lock:
            sent = self._sent.get(lease)
            # One on the way covers this heartbeat too, unless it has been
            # on the way for a heartbeat interval: then it is taken as lost.
            if sent is not None and now - sent < ttl / 3:
                return
            self._sent[lease] = now
        try:
            self.store.refresh_lease_nowait(lease, lambda ttl: self._answered(lease, ttl))
        except StoreUnavailable as e:
            with self._lock:
                self._sent.pop(lease, None)
            log.warning("lease %d not refreshed: %s", lease, e)

    def _answered(self, lease: int, ttl: int) -> None:
        """etcd's answer to a queued refresh (on the keep-alive reader thread)."""
        with self._lock:
            self._sent.pop(lease, None)
            if ttl == 0:
                self._expired.add(lease)

    def _relet(self, node: str, held: tuple[int, int], ttl: int) -> bool:
        try:
            lease = self._revive(node, ttl)
        except (StoreUnavailable, Conflict) as e:
            log.warning("node=%s lease not changed to %ds (%s); keeping the old one",
                        node, ttl, e)
            self._refresh_nowait(*held)
            return True
        if lease is None:
            with self._lock:
                self._leases.pop(node, None)
            return False
        log.info("node=%s lease TTL %ds -> %ds for %d nodes", node, held[1], ttl,
                 self.count() if self.count is not None else len(self._leases))
        with self._lock:
            self._leases[node] = (lease, ttl)
        return True

    def _heartbeat_waiting(self, node: str, lease: int | None) -> bool:
        """The slow path: refresh and wait for etcd; revive or forget a lapsed lease."""
        if lease is None:
            # Registered through another scheduler (or before a restart):
            # the lease id is the heartbeat key's value.
            raw, _ = self.store.get(self.store.keys.heartbeat(node))
            if raw is None:
                return False
            lease = int(raw)
        ttl = self.store.refresh_lease(lease)      # etcd answers with the lease's whole TTL
        if ttl <= 0:
            ttl = self.ttl_target()
            try:
                revived = self._revive(node, ttl)
            except (StoreUnavailable, Conflict) as e:
                log.warning("node=%s lease lapsed and not renewed (%s); asking it to register",
                            node, e)
                revived = None
            with self._lock:
                self._expired.discard(lease)
            if revived is None:
                with self._lock:
                    self._leases.pop(node, None)
                return False
            log.info("node=%s lease had lapsed; renewed", node)
            lease = revived
        with self._lock:
            self._expired.discard(lease)
            self._leases[node] = (lease, ttl)
        return True

    def _revive(self, node: str, ttl: int) -> int | None:
        """A fresh heartbeat lease for a registered node; None if it is not registered."""
        keys = self.store.keys
        if self.store.get(keys.node(node))[0] is None:
            return None
        lease = self.store.grant_lease(ttl)
        key = keys.heartbeat(node)
        self.store.commit([Write(key, str(lease).encode(), self.store.get(key)[1], lease=lease)])
        return lease


class NodeNotFound(Exception):
    pass


def set_cordoned(store: Store, name: str, cordoned: bool) -> bool:
    """Cordons or uncordons a node (compare-and-swap, retried); False: it already was."""
    def attempt(_: int) -> bool:
        key = store.keys.node(name)
        raw, rev = store.get(key)
        if raw is None:
            raise NodeNotFound(f"node {name} not found")
        node = types_pb2.Node.FromString(raw)
        if node.cordoned == cordoned:
            return False
        node.cordoned = cordoned
        store.commit([Write(key, node.SerializeToString(), rev)])
        return True
    return retry_conflicts(attempt, what=f"cordon of node {name}")
