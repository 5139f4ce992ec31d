"""What moved since the controller's last pass: replica indexes and dirty sets.

A controller pass that walks every replica costs O(replicas) per status
report: with 10,000 replicas on 1,000 nodes reporting, that walk was where
the scheduler's time went. Like Kubernetes' controllers (informer events
put the changed object's owner on a work queue) and Nomad's evaluations
(one per changed job or node), a pass here works from what changed:

- `ReplicaIndex` keeps the replicas' keys by workload and by node, and
  which are unplaced, in step with the snapshots the controller reads: the
  watch cache names the keys changed since the index's revision
  (`StateCache.changes_since`), and only those are looked at.
- `Dirty` collects, from those keys, the workloads touched, the nodes
  whose desired set to rebuild, and whether unplaced replicas are worth
  another try (a node came, left or changed; a replica freed resources).
  A pass takes what it needs and puts it back if it fails, so a change is
  never dropped by a lost compare-and-swap.
- Not every touched workload is decided again. A status report mostly
  moves replicas between Pending, Starting and Running: for a workload
  that is *settled* (reconcile.settled: its replicas are all of its
  current spec and as many as it wants, or it is being deleted and all
  were asked to leave) such a move cannot change reconcile's answer, so
  it is skipped. What can (a replica new, gone, placed, asked to leave,
  ended, of another spec: its `signature` changed) marks the workload in
  `decide`; a replica removed marks it in `shrunk`.

Everything is marked dirty (a full pass, as before) when the index cannot
follow: on the first pass, when the cache reloaded or dropped changes it
could no longer keep, when a Config or Secret changed (workload hashes
cover them), on a leadership takeover, and every FULL_PASS_SECONDS as a
safety net. Incremental passes then cost O(what changed + nodes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from mctl.common.phases import is_terminal
from mctl.v1 import types_pb2

from .keys import Kind, ParsedKey
from .store import Snapshot

ReplicaKey = tuple[str, str]
WorkloadKey = tuple[str, str]

# The longest incremental passes go on without a full one. Kubernetes'
# controllers resync their informers every few minutes to tens of
# minutes; a full pass here costs ~0.1 s at 10,000 replicas, so twice a
# minute leaves a missed change (which should not happen) a short life.
FULL_PASS_SECONDS = 30.0


@dataclass
class Dirty:
    """What a pass must look at again. None for a set: everything."""

    # Workloads whose record or replicas changed in any way.
    workloads: set[WorkloadKey] | None = None
    # Of those, the ones with a change that can alter reconcile's answer
    # even when settled (a replica's signature changed), and the ones that
    # lost a replica.
    decide: set[WorkloadKey] | None = None
    shrunk: set[WorkloadKey] | None = None
    nodes: set[str] | None = None
    # Workloads whose replicas' addresses (peers) changed.
    addresses: set[WorkloadKey] | None = None
    # Services depend on which nodes heartbeat: recompute them all.
    all_services: bool = True
    # Unplaced replicas may fit now.
    retry_unplaced: bool = True
    # A node record came, went or changed (routes are made again).
    node_records: bool = True

    @classmethod
    def empty(cls) -> Dirty:
        return cls(set(), set(), set(), set(), set(), False, False, False)

    def merge(self, other: Dirty) -> None:
        """Adds `other` (what changed next, or what a pass that failed took) in."""
        self.workloads = _union(self.workloads, other.workloads)
        self.decide = _union(self.decide, other.decide)
        self.shrunk = _union(self.shrunk, other.shrunk)
        self.nodes = _union(self.nodes, other.nodes)
        self.addresses = _union(self.addresses, other.addresses)
        self.all_services |= other.all_services
        self.retry_unplaced |= other.retry_unplaced
        self.node_records |= other.node_records

    def take(self) -> Dirty:
        """Hands everything marked so far to the caller and starts empty."""
        out = Dirty(self.workloads, self.decide, self.shrunk, self.nodes, self.addresses,
                    self.all_services, self.retry_unplaced, self.node_records)
        empty = Dirty.empty()
        self.workloads, self.decide, self.shrunk = empty.workloads, empty.decide, empty.shrunk
        self.nodes, self.addresses = empty.nodes, empty.addresses
        self.all_services = self.retry_unplaced = self.node_records = False
        return out

    def add_node(self, name: str) -> None:
        if name and self.nodes is not None:
            self.nodes.add(name)


T = TypeVar("T")


def _union(a: set[T] | None, b: set[T] | None) -> set[T] | None:
    if a is None or b is None:
        return None
    return a | b


def address_of(r: types_pb2.Replica) -> str:
    """The replica's IP while its peers should reach it ("" otherwise)."""
    if not r.status.ip or r.metadata.deletion_requested or is_terminal(r.status.phase):
        return ""
    return r.status.ip


# Phases between which a replica moves without changing what reconcile
# decides for a settled workload (reconcile.settled).
_UP_PHASES = frozenset({types_pb2.REPLICA_PHASE_PENDING, types_pb2.REPLICA_PHASE_STARTING,
                        types_pb2.REPLICA_PHASE_RUNNING})
Signature = tuple[str, str, str, bool, int]


def signature(r: types_pb2.Replica) -> Signature:
    """What reconcile reads of a settled workload's replica: a change here
    (or the replica new or gone) means deciding again."""
    phase = r.status.phase
    return (r.workload, r.node, r.spec_hash, r.metadata.deletion_requested,
            -1 if phase in _UP_PHASES else phase)


@dataclass
class ReplicaIndex:
    """Replica keys by workload and by node, as of `revision` (-1: not built)."""

    revision: int = -1
    by_workload: dict[WorkloadKey, set[ReplicaKey]] = field(default_factory=dict)
    by_node: dict[str, set[ReplicaKey]] = field(default_factory=dict)
    # Not bound to a node and not asked to leave: what placement retries.
    unplaced: set[ReplicaKey] = field(default_factory=set)
    _where: dict[ReplicaKey, tuple[WorkloadKey, str, Signature]] = field(default_factory=dict)
    # The replicas that have an address for their peers (address_of).
    _addressed: dict[ReplicaKey, str] = field(default_factory=dict)

    def rebuild(self, snap: Snapshot) -> None:
        self.by_workload, self.by_node, self.unplaced, self._where = {}, {}, set(), {}
        self._addressed = {}
        for key, r in snap.replicas.items():
            self._add(key, r)
        self.revision = snap.revision

    def _add(self, key: ReplicaKey, r: types_pb2.Replica) -> tuple[WorkloadKey, str, Signature]:
        workload = (key[0], r.workload)
        where = (workload, r.node, signature(r))
        self._where[key] = where
        self.by_workload.setdefault(workload, set()).add(key)
        self.by_node.setdefault(r.node, set()).add(key)
        if not r.node and not r.metadata.deletion_requested:
            self.unplaced.add(key)
        address = address_of(r)
        if address:
            self._addressed[key] = address
        return where

    def _remove(self, key: ReplicaKey) -> tuple[WorkloadKey, str, Signature] | None:
        where = self._where.pop(key, None)
        if where is None:
            return None
        workload, node, _ = where
        _discard(self.by_workload, workload, key)
        _discard(self.by_node, node, key)
        self.unplaced.discard(key)
        return where

    @property
    def size(self) -> int:
        """The replicas indexed."""
        return len(self._where)

    def addressed(self, key: ReplicaKey) -> str:
        return self._addressed.get(key, "")

    def follow(self, snap: Snapshot, changed: Iterable[ParsedKey]) -> Dirty | None:
        """Takes in the keys changed up to `snap`; returns what they touch, or None
        when only a full pass will do (the caller rebuilds)."""
        dirty = Dirty.empty()
        touched, decide, shrunk, addresses = (dirty.workloads, dirty.decide, dirty.shrunk,
                                              dirty.addresses)
        assert (touched is not None and decide is not None and shrunk is not None
                and addresses is not None)
        for parsed in changed:
            kind = parsed.kind
            if kind is Kind.REPLICA:
                key = (parsed.namespace, parsed.name)
                address = self._addressed.pop(key, "")
                old = self._remove(key)
                r = snap.replicas.get(key)
                new = self._add(key, r) if r is not None else None
                for where in (old, new):
                    if where is not None:
                        touched.add(where[0])
                        dirty.add_node(where[1])
                if old is not None and new is None:
                    shrunk.add(old[0])
                elif old is None and new is not None:
                    decide.add(new[0])
                elif old is not None and new is not None and old[2] != new[2]:
                    decide.update((old[0], new[0]))
                if address != self._addressed.get(key, ""):
                    addresses.update(where[0] for where in (old, new) if where is not None)
                if (r is None or r.metadata.deletion_requested
                        or is_terminal(r.status.phase)):
                    # It gave back (or is about to give back) what it held.
                    dirty.retry_unplaced = True
            elif kind is Kind.WORKLOAD:
                touched.add((parsed.namespace, parsed.name))
                decide.add((parsed.namespace, parsed.name))
            elif kind in (Kind.NODE, Kind.HEARTBEAT):
                dirty.retry_unplaced = True
                dirty.add_node(parsed.name)
                if kind is Kind.HEARTBEAT:
                    dirty.all_services = True      # endpoints on it are (not) ready
                    continue
                dirty.node_records = True
                if parsed.name not in snap.nodes:
                    # Replicas bound to a node that is gone are deleted, not
                    # asked to leave: their workloads decide again.
                    for key in self.by_node.get(parsed.name, ()):
                        touched.add(self._where[key][0])
                        decide.add(self._where[key][0])
            elif kind in (Kind.CONFIG, Kind.SECRET):
                return None     # workload hashes cover them
            elif kind is Kind.VOLUME:
                dirty.retry_unplaced = True   # a volume's node pins its replicas
        self.revision = snap.revision
        return dirty

    def workload_of(self, key: ReplicaKey) -> WorkloadKey:
        return self._where[key][0]


K = TypeVar("K")


def _discard(index: dict[K, set[ReplicaKey]], at: K, key: ReplicaKey) -> None:
    keys = index.get(at)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[at]
