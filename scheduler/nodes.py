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

`transition` is the decision, pure; `plan_lifecycle` applies it to a
snapshot for the controller; `NodeLeases` does the lease I/O for the node API.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field

from mctl.v1 import types_pb2

from .events import WARNING, event
from .keys import KeyCodec
from .retry import retry_conflicts
from .store import Conflict, Snapshot, Store, StoreUnavailable, Write

log = logging.getLogger(__name__)

# A node whose heartbeats stop is NotReady after this many seconds (the
# lease's TTL); agents heartbeat three times per TTL.
NODE_LEASE_TTL = 3
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


def plan_lifecycle(snap: Snapshot, now_ms: int, grace_ms: int, keys: KeyCodec) -> LifecyclePlan:
    """Marks nodes NotReady or Ready again in their records; names the lost ones."""
    plan = LifecyclePlan()
    for name, node in sorted(snap.nodes.items()):
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
    return record, was_not_ready


class NodeLeases:
    """Registration and heartbeats: node records and their heartbeat leases in etcd."""

    def __init__(self, store: Store, lease_ttl: int = NODE_LEASE_TTL) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self._leases: dict[str, int] = {}     # node -> its lease, as this process knows it
        self._lock = threading.Lock()

    def register(self, node: types_pb2.Node) -> int:
        """Stores `node` and a fresh heartbeat lease; returns how long it was NotReady (ms)."""
        lease, was_not_ready = retry_conflicts(lambda _: self._register_once(node),
                                               what=f"registration of node {node.name}")
        with self._lock:
            self._leases[node.name] = lease
        return was_not_ready

    def _register_once(self, node: types_pb2.Node) -> tuple[int, int]:
        keys = self.store.keys
        raw, rev = self.store.get(keys.node(node.name))
        stored = types_pb2.Node.FromString(raw) if raw is not None else None
        record, was_not_ready = registered_record(node, stored, int(time.time() * 1000))
        lease = self.store.grant_lease(self.lease_ttl)
        self.store.commit([
            Write(keys.node(node.name), record.SerializeToString(), rev),
            Write(keys.heartbeat(node.name), str(lease).encode(),
                  self.store.get(keys.heartbeat(node.name))[1], lease=lease),
        ])
        return lease, was_not_ready

    def heartbeat(self, node: str) -> bool:
        """Refreshes the node's lease (reviving a lapsed one); False: it must register."""
        lease = self._leases.get(node)
        if lease is None:
            # Registered through another scheduler (or before a restart):
            # the lease id is the heartbeat key's value.
            raw, _ = self.store.get(self.store.keys.heartbeat(node))
            if raw is None:
                return False
            lease = int(raw)
        if self.store.refresh_lease(lease) <= 0:
            try:
                revived = self._revive(node)
            except (StoreUnavailable, Conflict) as e:
                log.warning("node=%s lease lapsed and not renewed (%s); asking it to register",
                            node, e)
                revived = None
            if revived is None:
                with self._lock:
                    self._leases.pop(node, None)
                return False
            log.info("node=%s lease had lapsed; renewed", node)
            lease = revived
        with self._lock:
            self._leases[node] = lease
        return True

    def _revive(self, node: str) -> int | None:
        """A fresh heartbeat lease for a registered node; None if it is not registered."""
        keys = self.store.keys
        if self.store.get(keys.node(node))[0] is None:
            return None
        lease = self.store.grant_lease(self.lease_ttl)
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
