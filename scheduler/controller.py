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

Passes run on changes (API writes, status reports, etcd watch events) and at
least every RESYNC_SECONDS: level-triggered, so a lost event only delays.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from concurrent import futures

import grpc

from mctl.common import rpc
from mctl.common.spec import spec_hash
from mctl.v1 import agent_pb2, agent_pb2_grpc, types_pb2

from . import placement, reconcile
from .model import workload_key
from .store import Conflict, Snapshot, Store, StoreUnavailable, Write
from .views import node_view, replica_view, workload_view

log = logging.getLogger(__name__)

RESYNC_SECONDS = 2.0
PUSH_RESYNC_SECONDS = 10.0
PUSH_TIMEOUT = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Controller:
    def __init__(self, store: Store, seed: int | None = None) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pushed: dict[str, tuple[str, float]] = {}   # node -> (set digest, when)
        self._channels: dict[str, tuple[str, grpc.Channel]] = {}
        self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="push")
        self._unwatch = None

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
            try:
                if self._unwatch is None:
                    self._unwatch = self.store.watch(self.wake)
                self.reconcile_once()
                delay = 0.2
            except StoreUnavailable as e:
                log.warning("%s; retrying in %.1fs", e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Conflict as e:
                log.info("pass restarted: %s", e)
                continue
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("reconcile pass failed")
            self._wake.wait(RESYNC_SECONDS)
            self._wake.clear()

    # -- one pass ---------------------------------------------------------------

    def reconcile_once(self) -> None:
        snap = self.store.snapshot()
        writes = self.plan(snap, now_ms())
        if writes:
            self.store.commit(writes)
            # Push what was just committed, not what was read before it.
            snap = self.store.snapshot()
        self.push(snap)

    def plan(self, snap: Snapshot, now: int) -> list[Write]:
        """Every write one pass makes, computed from `snap` alone."""
        by_workload: dict[tuple[str, str], list[types_pb2.Replica]] = defaultdict(list)
        for r in snap.replicas.values():
            by_workload[(r.metadata.namespace, r.workload)].append(r)

        changed: dict[tuple[str, str], types_pb2.Replica] = {}
        created: list[types_pb2.Replica] = []
        deleted_keys: list[tuple[str, str]] = []
        finished_workloads: list[types_pb2.Workload] = []

        for key in sorted(set(snap.workloads) | set(by_workload)):
            w = snap.workloads.get(key)
            replicas = by_workload.get(key, [])
            view = workload_view(w, spec_hash(w.spec)) if w is not None else None
            decision = reconcile.decide(view, [replica_view(r) for r in replicas], now)
            if not decision.noop:
                log.info("workload=%s/%s %s", key[0], key[1], decision.reason)
            by_name = {r.metadata.name: r for r in replicas}
            for name in decision.delete:
                r = by_name[name]
                if not r.node or r.node not in snap.nodes:
                    deleted_keys.append((r.metadata.namespace, name))
                else:
                    r2 = types_pb2.Replica()
                    r2.CopyFrom(r)
                    r2.metadata.deletion_requested = True
                    r2.status.phase = "Terminating"
                    changed[(r.metadata.namespace, name)] = r2
            if decision.create and w is not None:
                names = reconcile.new_replica_names(
                    w.metadata.name, decision.create,
                    {k[1] for k in snap.replicas if k[0] == key[0]}, self.rng)
                for name in names:
                    created.append(self._new_replica(w, name, now))
            if w is not None and w.metadata.deletion_requested and not replicas:
                finished_workloads.append(w)

        self._place(snap, created, changed)
        writes = []
        for r in created:
            ns, name = r.metadata.namespace, r.metadata.name
            writes.append(Write(self.store.replica_key(ns, name), r.SerializeToString(), 0))
        for (ns, name), r in changed.items():
            key = self.store.replica_key(ns, name)
            writes.append(Write(key, r.SerializeToString(), snap.mod_revisions[key]))
        for ns, name in deleted_keys:
            key = self.store.replica_key(ns, name)
            writes.append(Write(key, None, snap.mod_revisions[key]))
        for w in finished_workloads:
            key = self.store.workload_key(w.metadata.namespace, w.metadata.name)
            writes.append(Write(key, None, snap.mod_revisions[key]))
            log.info("workload=%s/%s deleted", w.metadata.namespace, w.metadata.name)
        return writes

    def _new_replica(self, w: types_pb2.Workload, name: str, now: int) -> types_pb2.Replica:
        r = types_pb2.Replica(workload=w.metadata.name, spec_hash=spec_hash(w.spec))
        r.metadata.name = name
        r.metadata.namespace = w.metadata.namespace
        r.metadata.labels.update(w.metadata.labels)
        r.metadata.uid = uuid.uuid4().hex
        r.metadata.created_unix_ms = now
        r.spec.CopyFrom(w.spec)
        r.status.phase = "Pending"
        return r

    def _place(self, snap: Snapshot, created: list[types_pb2.Replica],
               changed: dict[tuple[str, str], types_pb2.Replica]) -> None:
        """Binds new and still-unplaced replicas to nodes; records why the rest wait."""
        nodes = [node_view(n, n.name in snap.heartbeats) for n in snap.nodes.values()]
        states = placement.build_node_states(
            nodes, (replica_view(r) for r in snap.replicas.values()))
        pending = [r for r in created]
        for key, r in sorted(snap.replicas.items()):
            if not r.node and not r.metadata.deletion_requested and key not in changed:
                pending.append(r)
        if not pending:
            return
        requests = []
        for r in pending:
            v = replica_view(r)
            requests.append((f"{v.namespace}/{v.name}", placement.PlacementRequest(
                workload_key=workload_key(v.namespace, v.workload), request=v.request,
                node_selector=dict(r.spec.node_selector), host_ports=v.host_ports,
                spread=r.spec.spread)))
        new_ids = {id(r) for r in created}   # identity, not a by-value proto compare
        seed = self.rng.randrange(1 << 30)
        results = placement.place_batch(requests, list(states.values()), seed)
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
                target.status.reason = ""
                target.status.message = ""
                log.info("replica=%s/%s placed node=%s", key[0], key[1], result.node)
            else:
                message = placement.unschedulable_message(result.rejections, len(nodes))
                if target.status.message == message and not is_new:
                    continue
                target.status.reason = "Unschedulable"
                target.status.message = message
                log.info("replica=%s/%s unschedulable: %s", key[0], key[1], message)
            if not is_new:
                changed[key] = target

    # -- telling the nodes ---------------------------------------------------------

    def forget_pushed(self, node: str) -> None:
        """The node (re)registered: whatever it was sent before, send its set again."""
        self._pushed.pop(node, None)
        self.wake()

    def desired_sets(self, snap: Snapshot) -> dict[str, list[types_pb2.Replica]]:
        sets: dict[str, list[types_pb2.Replica]] = {name: [] for name in snap.nodes}
        for r in snap.replicas.values():
            if r.node in sets and not r.metadata.deletion_requested:
                sets[r.node].append(r)
        return sets

    def push(self, snap: Snapshot) -> None:
        now = time.monotonic()
        for node_name, replicas in self.desired_sets(snap).items():
            node = snap.nodes[node_name]
            if node_name not in snap.heartbeats:
                continue
            replicas.sort(key=lambda r: (r.metadata.namespace, r.metadata.name))
            digest = hashlib.sha256(b"".join(
                f"{r.metadata.namespace}/{r.metadata.name}/{r.metadata.uid}/{r.spec_hash};"
                .encode() for r in replicas)).hexdigest()
            last = self._pushed.get(node_name)
            if last is not None and last[0] == digest and now - last[1] < PUSH_RESYNC_SECONDS:
                continue
            self._pushed[node_name] = (digest, now)
            desired = agent_pb2.DesiredSet(node=node_name, revision=snap.revision,
                                           replicas=replicas)
            self._pool.submit(self._send, node, desired)

    def _stub(self, node: types_pb2.Node) -> agent_pb2_grpc.AgentStub:
        cached = self._channels.get(node.name)
        if cached is None or cached[0] != node.address:
            if cached is not None:
                cached[1].close()
            cached = (node.address, rpc.make_channel(node.address))
            self._channels[node.name] = cached
        return agent_pb2_grpc.AgentStub(cached[1])

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
