"""The scheduler's gRPC services: the control plane (for the CLI) and the node API.

Both are thin: they validate, read or write the store with compare-and-swap,
and wake the controller. The latest usage samples from agents are kept here
in memory (never in etcd: they change every few seconds and are worthless
after a restart).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc

from mctl.common import execstream, names
from mctl.common.spec import spec_hash
from mctl.v1 import (
    agent_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    types_pb2,
)

from .controller import Controller
from .events import NORMAL, WARNING
from .model import TERMINAL_PHASES
from .network import SubnetAllocator, SubnetError
from .store import Conflict, Store, StoreUnavailable, Write

log = logging.getLogger(__name__)

# A node whose heartbeats stop is NotReady after this many seconds (the
# lease's TTL); agents heartbeat three times per TTL, so one lost
# heartbeat, or two, changes nothing.
NODE_LEASE_TTL = 3


def _abort_unavailable(context: grpc.ServicerContext, e: Exception) -> None:
    context.abort(grpc.StatusCode.UNAVAILABLE, f"the cluster store is unavailable: {e}")


class ControlPlane(control_pb2_grpc.ControlPlaneServicer):
    def __init__(self, store: Store, controller: Controller, usage: UsageCache) -> None:
        self.store = store
        self.controller = controller
        self.usage = usage

    def Apply(self, request: control_pb2.ApplyRequest,
              context: grpc.ServicerContext) -> control_pb2.ApplyResponse:
        for w in request.workloads:
            for value, what in ((w.metadata.name, "metadata.name"),
                                (w.metadata.namespace, "metadata.namespace")):
                problem = names.validate_dns_label(value)
                if problem:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {problem}")
        for _ in range(5):
            try:
                return self._apply_once(request)
            except Conflict:
                continue
            except StoreUnavailable as e:
                _abort_unavailable(context, e)
        context.abort(grpc.StatusCode.ABORTED, "too many concurrent changes; try again")
        raise AssertionError("unreachable")

    def _apply_once(self, request: control_pb2.ApplyRequest) -> control_pb2.ApplyResponse:
        writes = []
        response = control_pb2.ApplyResponse()
        now = int(time.time() * 1000)
        for w in request.workloads:
            ns, name = w.metadata.namespace, w.metadata.name
            key = self.store.workload_key(ns, name)
            raw, rev = self.store.get(key)
            new = types_pb2.Workload()
            new.CopyFrom(w)
            action = "created"
            if raw is not None:
                old = types_pb2.Workload.FromString(raw)
                if not old.metadata.deletion_requested:
                    if (old.spec == w.spec and
                            dict(old.metadata.labels) == dict(w.metadata.labels)):
                        response.results.add(namespace=ns, name=name, action="unchanged")
                        continue
                    new.metadata.uid = old.metadata.uid
                    new.metadata.created_unix_ms = old.metadata.created_unix_ms
                    new.metadata.generation = old.metadata.generation + 1
                    action = "configured"
            if action == "created":
                new.metadata.uid = uuid.uuid4().hex
                new.metadata.created_unix_ms = now
                new.metadata.generation = 1
            new.metadata.deletion_requested = False
            writes.append(Write(key, new.SerializeToString(), rev))
            response.results.add(namespace=ns, name=name, action=action)
        if len(writes) > 100:
            raise StoreUnavailable("too many workloads in one apply (at most 100)")
        if writes:
            self.store.commit(writes)
            self.controller.wake()
        for r in response.results:
            log.info("workload=%s/%s %s", r.namespace, r.name, r.action)
        return response

    def Delete(self, request: control_pb2.DeleteRequest,
               context: grpc.ServicerContext) -> control_pb2.DeleteResponse:
        response = control_pb2.DeleteResponse()
        try:
            writes = []
            for ref in request.workloads:
                key = self.store.workload_key(ref.namespace or "default", ref.name)
                raw, rev = self.store.get(key)
                response.results.add(namespace=ref.namespace, name=ref.name,
                                     found=raw is not None)
                if raw is None:
                    continue
                w = types_pb2.Workload.FromString(raw)
                if w.metadata.deletion_requested:
                    continue
                w.metadata.deletion_requested = True
                writes.append(Write(key, w.SerializeToString(), rev))
            self.store.commit(writes)
        except Conflict:
            context.abort(grpc.StatusCode.ABORTED, "workload changed meanwhile; try again")
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        self.controller.wake()
        return response

    def _snapshot(self, context: grpc.ServicerContext):  # noqa: ANN202 - Snapshot
        try:
            return self.store.snapshot()
        except StoreUnavailable as e:
            _abort_unavailable(context, e)

    def ListWorkloads(self, request: control_pb2.ListRequest,
                      context: grpc.ServicerContext) -> control_pb2.WorkloadList:
        snap = self._snapshot(context)
        out = control_pb2.WorkloadList()
        for key in sorted(snap.workloads):
            w = snap.workloads[key]
            if not _matches(request, w.metadata.namespace, w.metadata.name):
                continue
            mine = [r for r in snap.replicas.values()
                    if r.metadata.namespace == key[0] and r.workload == key[1]
                    and not r.metadata.deletion_requested]
            current = spec_hash(w.spec)
            out.items.append(w)
            out.summaries.add(
                desired=w.spec.replicas,
                running=sum(r.status.phase == "Running" for r in mine),
                up_to_date=sum(r.spec_hash == current for r in mine))
        return out

    def ListReplicas(self, request: control_pb2.ListRequest,
                     context: grpc.ServicerContext) -> control_pb2.ReplicaList:
        snap = self._snapshot(context)
        out = control_pb2.ReplicaList()
        for key in sorted(snap.replicas):
            r = snap.replicas[key]
            if not _matches(request, r.metadata.namespace, r.metadata.name):
                continue
            if request.workload and r.workload != request.workload:
                continue
            if r.node and r.node not in snap.heartbeats and r.status.phase not in TERMINAL_PHASES:
                # What the node last said may no longer be true: say so, as
                # Kubernetes' NodeLost does, without writing it anywhere.
                r = _copy(r)
                r.status.reason = "NodeNotReady"
                r.status.message = f"node {r.node} is not heartbeating; last known state shown"
            out.items.append(r)
            out.usage.append(self.usage.replica(key) or types_pb2.Usage())
        return out

    def ListNodes(self, request: control_pb2.ListRequest,
                  context: grpc.ServicerContext) -> control_pb2.NodeList:
        snap = self._snapshot(context)
        out = control_pb2.NodeList()
        for name in sorted(snap.nodes):
            if request.name and name != request.name:
                continue
            node = types_pb2.Node()
            node.CopyFrom(snap.nodes[name])
            node.ready = name in snap.heartbeats
            alloc = types_pb2.Resources()
            count = 0
            for r in snap.replicas.values():
                if r.node == name and r.status.phase not in TERMINAL_PHASES:
                    alloc.cpu_millis += r.spec.resources.cpu_millis
                    alloc.memory_bytes += r.spec.resources.memory_bytes
                    alloc.pids += r.spec.resources.pids
                    count += 1
            out.items.append(node)
            out.allocated.append(alloc)
            out.usage.append(self.usage.node(name) or types_pb2.Usage())
            out.replicas.append(count)
        return out

    # -- nodes -------------------------------------------------------------------

    def Cordon(self, request: control_pb2.CordonRequest,
               context: grpc.ServicerContext) -> control_pb2.CordonResponse:
        changed = self._with_retries(context, lambda: self._cordon(request.node, request.cordoned))
        if changed:
            verb = "Cordoned" if request.cordoned else "Uncordoned"
            log.info("node=%s %s", request.node, verb.lower())
            self._event("Node", "", request.node, verb,
                        "no new replicas here" if request.cordoned else "schedulable again")
            self.controller.wake()
        return control_pb2.CordonResponse(changed=changed)

    def _cordon(self, name: str, cordoned: bool) -> bool:
        key = self.store.node_key(name)
        raw, rev = self.store.get(key)
        if raw is None:
            raise _NotFound(f"node {name} not found")
        node = types_pb2.Node.FromString(raw)
        if node.cordoned == cordoned:
            return False
        node.cordoned = cordoned
        self.store.commit([Write(key, node.SerializeToString(), rev)])
        return True

    def Drain(self, request: control_pb2.DrainRequest,
              context: grpc.ServicerContext) -> control_pb2.DrainResponse:
        """Cordons the node, then asks each of its replicas to leave.

        Leaving replicas are replaced elsewhere by reconcile (within the
        workload's maxSurge), like `kubectl drain` evicting pods that their
        controllers then recreate. Finished replicas hold nothing and stay.
        """
        self._with_retries(context, lambda: self._cordon(request.node, True))
        evicted = self._with_retries(context, lambda: self._evict(request.node))
        log.info("node=%s drained: %d replicas asked to leave", request.node, len(evicted))
        self._event("Node", "", request.node, "Drained",
                    f"cordoned; {len(evicted)} replicas asked to move")
        for ns, name in evicted:
            self._event("Replica", ns, name, "Evicted", f"node {request.node} is being drained")
        self.controller.wake()
        return control_pb2.DrainResponse(
            evicted=[control_pb2.ObjectRef(namespace=ns, name=n) for ns, n in evicted])

    def _evict(self, node: str) -> list[tuple[str, str]]:
        snap = self.store.snapshot()
        writes = []
        evicted = []
        for key, r in sorted(snap.replicas.items()):
            if (r.node != node or r.metadata.deletion_requested
                    or r.status.phase in TERMINAL_PHASES):
                continue
            r2 = _copy(r)
            r2.metadata.deletion_requested = True
            r2.status.phase = "Terminating"
            r2.status.reason = "Drained"
            r2.status.message = f"node {node} is being drained"
            store_key = self.store.replica_key(*key)
            writes.append(Write(store_key, r2.SerializeToString(), snap.mod_revisions[store_key]))
            evicted.append(key)
        self.store.commit(writes)
        return evicted

    def _with_retries(self, context: grpc.ServicerContext, fn):  # noqa: ANN001, ANN202
        for _ in range(5):
            try:
                return fn()
            except _NotFound as e:
                context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            except Conflict:
                continue
            except StoreUnavailable as e:
                _abort_unavailable(context, e)
        context.abort(grpc.StatusCode.ABORTED, "too many concurrent changes; try again")

    # -- history and the cluster ----------------------------------------------------

    def ListEvents(self, request: control_pb2.EventsRequest,
                   context: grpc.ServicerContext) -> control_pb2.EventList:
        if self.controller.events is None:
            return control_pb2.EventList()
        try:
            items = self.controller.events.list(request.kind, request.namespace, request.name)
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        return control_pb2.EventList(items=items)

    def ClusterInfo(self, request: control_pb2.ClusterInfoRequest,
                    context: grpc.ServicerContext) -> control_pb2.ClusterInfoResponse:
        try:
            raw, _ = self.store.get(self.store.leader_key)
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        elector = self.controller.elector
        me = elector.identity if elector is not None else ""
        leading = elector is not None and elector.fence is not None
        return control_pb2.ClusterInfoResponse(
            leader=raw.decode(errors="replace") if raw else "", served_by=me,
            leader_since_unix_ms=elector.leading_since_ms if leading else 0)

    def _event(self, kind: str, ns: str, name: str, reason: str, message: str,
               type_: str = NORMAL) -> None:
        if self.controller.events is not None:
            self.controller.events.record(kind, ns, name, reason, message, type_)

    def Logs(self, request: control_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[control_pb2.LogChunk]:
        node = self._node_of(request.namespace or "default", request.replica, context)
        yield from self._relay(node, context, lambda stub: stub.Logs(request, timeout=None))

    def Exec(self, request_iterator: Iterator[control_pb2.ExecInput],
             context: grpc.ServicerContext) -> Iterator[control_pb2.ExecOutput]:
        first = execstream.take_start(request_iterator)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, execstream.BAD_START)
        start = first.start
        node = self._node_of(start.namespace or "default", start.replica, context)
        log.info("replica=%s/%s node=%s exec %s", start.namespace or "default", start.replica,
                 node.name, " ".join(start.command)[:200])
        inputs = itertools.chain([first], request_iterator)
        yield from self._relay(node, context, lambda stub: stub.Exec(inputs, timeout=None))

    def _node_of(self, ns: str, replica_name: str,
                 context: grpc.ServicerContext) -> types_pb2.Node:
        """The node a replica is placed on, or the RPC aborts saying why not."""
        try:
            raw, _ = self.store.get(self.store.replica_key(ns, replica_name))
            replica = types_pb2.Replica.FromString(raw) if raw is not None else None
            node = None
            if replica is not None and replica.node:
                raw_node, _ = self.store.get(self.store.node_key(replica.node))
                node = types_pb2.Node.FromString(raw_node) if raw_node else None
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        if replica is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"replica {replica_name} not found in namespace {ns}")
        if node is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"replica {replica_name} is not placed on a node yet")
        return node

    def _relay(self, node: types_pb2.Node, context: grpc.ServicerContext,
               call: Callable[[agent_pb2_grpc.AgentStub], Iterator[object]]) -> Iterator[object]:
        """Streams an agent call's responses back to our caller; their hang-up ends it."""
        channel = self.controller.dial(node)
        try:
            stream = call(agent_pb2_grpc.AgentStub(channel))
            context.add_callback(stream.cancel)
            yield from stream
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.CANCELLED:
                return
            code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNAVAILABLE
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            context.abort(code, f"node {node.name}: {details}")
        finally:
            channel.close()


def _matches(request: control_pb2.ListRequest, namespace: str, name: str) -> bool:
    if request.namespace and namespace != request.namespace:
        return False
    return not request.name or name == request.name


class _NotFound(Exception):
    pass


def _copy(r: types_pb2.Replica) -> types_pb2.Replica:
    out = types_pb2.Replica()
    out.CopyFrom(r)
    return out


class UsageCache:
    """The latest usage sample per replica and per node, in memory only."""

    def __init__(self) -> None:
        self._replicas: dict[tuple[str, str], types_pb2.Usage] = {}
        self._nodes: dict[str, types_pb2.Usage] = {}

    def replica(self, key: tuple[str, str]) -> types_pb2.Usage | None:
        return self._replicas.get(key)

    def node(self, name: str) -> types_pb2.Usage | None:
        return self._nodes.get(name)

    def set_node(self, name: str, usage: types_pb2.Usage) -> None:
        self._nodes[name] = usage

    def set_replica(self, key: tuple[str, str], usage: types_pb2.Usage) -> None:
        self._replicas[key] = usage

    def forget_replica(self, key: tuple[str, str]) -> None:
        self._replicas.pop(key, None)


class NodeService(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, store: Store, controller: Controller, usage: UsageCache,
                 subnets: SubnetAllocator | None = None,
                 lease_ttl: int = NODE_LEASE_TTL) -> None:
        self.lease_ttl = lease_ttl
        self.store = store
        self.controller = controller
        self.usage = usage
        self.subnets = subnets
        self._leases: dict[str, int] = {}
        self._lock = threading.Lock()

    def Register(self, request: node_pb2.RegisterRequest,
                 context: grpc.ServicerContext) -> node_pb2.RegisterResponse:
        node = request.node
        problem = names.validate_dns_label(node.name)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node name: {problem}")
        # The node's subnet is the scheduler's to give, never the agent's to say.
        node.pod_subnet = self._subnet_for(node.name, context)
        try:
            for _ in range(5):
                try:
                    lease, was_not_ready = self._register_once(node)
                    break
                except Conflict:
                    continue
            else:
                context.abort(grpc.StatusCode.ABORTED, "node record kept changing; retry")
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        with self._lock:
            self._leases[node.name] = lease
        log.info("node=%s registered address=%s cpu_millis=%d memory_bytes=%d", node.name,
                 node.address, node.capacity.cpu_millis, node.capacity.memory_bytes)
        message = f"agent at {node.address}"
        if was_not_ready:
            message += f", back after {was_not_ready / 1000:.1f}s NotReady"
        self._event("Node", "", node.name, "Registered", message)
        self.controller.forget_pushed(node.name)
        return node_pb2.RegisterResponse(
            heartbeat_interval_ms=self.lease_ttl * 1000 // 3, pod_subnet=node.pod_subnet,
            cluster_cidr=self.subnets.cluster_cidr if self.subnets is not None else "")

    def _subnet_for(self, node: str, context: grpc.ServicerContext) -> str:
        if self.subnets is None:
            return ""
        try:
            return self.subnets.subnet_for(node)
        except SubnetError as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except Conflict as e:
            context.abort(grpc.StatusCode.ABORTED, f"{e}; retry")
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        raise AssertionError("unreachable")

    def _register_once(self, node: types_pb2.Node) -> tuple[int, int]:
        """Stores the node and a fresh heartbeat lease; returns (lease, ms it was NotReady)."""
        key = self.store.node_key(node.name)
        raw, rev = self.store.get(key)
        stored = types_pb2.Node()
        stored.CopyFrom(node)
        was_not_ready = 0
        now = int(time.time() * 1000)
        if raw is not None:
            old = types_pb2.Node.FromString(raw)
            stored.cordoned = old.cordoned   # an operator's cordon survives re-registration
            stored.registered_unix_ms = old.registered_unix_ms
            if old.not_ready_since_unix_ms:
                was_not_ready = now - old.not_ready_since_unix_ms
        else:
            stored.registered_unix_ms = now
        stored.ready = False   # readiness is the heartbeat key, never stored
        stored.not_ready_since_unix_ms = 0
        lease = self.store.grant_lease(self.lease_ttl)
        self.store.commit([
            Write(key, stored.SerializeToString(), rev),
            Write(self.store.heartbeat_key(node.name), str(lease).encode(),
                  self.store.get(self.store.heartbeat_key(node.name))[1], lease=lease),
        ])
        return lease, was_not_ready

    def Heartbeat(self, request: node_pb2.HeartbeatRequest,
                  context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        self.usage.set_node(request.node, request.usage)
        try:
            lease = self._leases.get(request.node)
            if lease is None:
                # Registered through another scheduler (or before a restart):
                # the lease id is the heartbeat key's value.
                raw, _ = self.store.get(self.store.heartbeat_key(request.node))
                if raw is None:
                    return node_pb2.HeartbeatResponse(reregister=True)
                lease = int(raw)
            ttl = self.store.refresh_lease(lease)
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        if ttl <= 0:
            # The lease lapsed (a slow scheduler, a network blip) but the
            # agent is fine: give it a new one here rather than a whole
            # re-registration, which would cost the overloaded scheduler
            # more and make the next lapse likelier.
            try:
                lease = self._revive(request.node)
            except (StoreUnavailable, Conflict) as e:
                log.warning("node=%s lease lapsed and not renewed (%s); asking it to register",
                            request.node, e)
                lease = None
            if lease is None:
                with self._lock:
                    self._leases.pop(request.node, None)
                return node_pb2.HeartbeatResponse(reregister=True)
            log.info("node=%s lease had lapsed; renewed", request.node)
        with self._lock:
            self._leases[request.node] = lease
        return node_pb2.HeartbeatResponse()

    def _revive(self, node: str) -> int | None:
        """A fresh heartbeat lease for a registered node; None if it is not registered."""
        if self.store.get(self.store.node_key(node))[0] is None:
            return None
        lease = self.store.grant_lease(self.lease_ttl)
        key = self.store.heartbeat_key(node)
        self.store.commit([Write(key, str(lease).encode(), self.store.get(key)[1], lease=lease)])
        return lease

    def _event(self, kind: str, ns: str, name: str, reason: str, message: str,
               type_: str = NORMAL) -> None:
        if self.controller.events is not None:
            self.controller.events.record(kind, ns, name, reason, message, type_)

    def ReportStatus(self, request: node_pb2.StatusReport,
                     context: grpc.ServicerContext) -> node_pb2.StatusAck:
        for attempt in range(5):
            try:
                self._apply_report(request, fresh=attempt > 0)
                return node_pb2.StatusAck()
            except Conflict:
                continue
            except StoreUnavailable as e:
                _abort_unavailable(context, e)
        context.abort(grpc.StatusCode.ABORTED, "status kept conflicting; report again")
        raise AssertionError("unreachable")

    def _apply_report(self, report: node_pb2.StatusReport, fresh: bool = False) -> None:
        # The cache first (cheap); after a lost compare-and-swap, etcd itself.
        cache = self.controller.cache
        snap = (self.store.snapshot() if fresh or cache is None
                else cache.node_snapshot(report.node))
        reported = {(r.namespace, r.name): r for r in report.replicas}
        writes = []
        events: list[tuple[tuple[str, str], str, str, str]] = []
        for key, r in snap.replicas.items():
            if r.node != report.node:
                continue
            store_key = self.store.replica_key(*key)
            rep = reported.get(key)
            if rep is None or rep.uid != r.metadata.uid:
                # The node does not run it (any more). A replica on its way
                # out is now gone for good.
                if report.complete and r.metadata.deletion_requested:
                    writes.append(Write(store_key, None, snap.mod_revisions[store_key]))
                    self.usage.forget_replica(key)
                    log.info("replica=%s/%s removed from node=%s", *key, report.node)
                    events.append((key, "Removed", f"container removed from node {report.node}",
                                   NORMAL))
                continue
            if rep.HasField("usage"):
                self.usage.set_replica(key, rep.usage)
            status = types_pb2.ReplicaStatus()
            status.CopyFrom(rep.status)
            if r.metadata.deletion_requested:
                status.phase = "Terminating"
            if status != r.status:
                updated = types_pb2.Replica()
                updated.CopyFrom(r)
                updated.status.CopyFrom(status)
                writes.append(Write(store_key, updated.SerializeToString(),
                                    snap.mod_revisions[store_key]))
                if status.phase != r.status.phase:
                    log.info("replica=%s/%s node=%s phase %s -> %s %s", *key, report.node,
                             r.status.phase, status.phase, status.reason)
                events += _status_events(key, report.node, r.status, status)
        if writes:
            self.store.commit(writes)
            self.controller.wake()
        for key, reason, message, type_ in events:
            self._event("Replica", key[0], key[1], reason, message, type_)


def _status_events(key: tuple[str, str], node: str, old: types_pb2.ReplicaStatus,
                   new: types_pb2.ReplicaStatus) -> list[tuple[tuple[str, str], str, str, str]]:
    """The events a status change on a node is worth: starts, restarts, ends."""
    events = []
    detail = f" ({new.reason}: {new.message})" if new.message else (
        f" ({new.reason})" if new.reason else "")
    if new.restarts > old.restarts:
        why = f" (last exit: {new.last_exit})" if new.last_exit else detail
        events.append((key, "Restarted",
                       f"container restarted on node {node}, restart {new.restarts}{why}",
                       WARNING))
    if new.phase != old.phase:
        if new.phase == "Running":
            events.append((key, "Started", f"container running on node {node}", NORMAL))
        elif new.phase == "Succeeded":
            events.append((key, "Completed", f"container exited 0 on node {node}", NORMAL))
        elif new.phase == "Failed":
            events.append((key, new.reason or "Failed",
                           f"container failed on node {node}, exit code {new.exit_code}"
                           f"{detail}", WARNING))
        elif new.reason == "CrashLoopBackOff":
            events.append((key, "BackOff", f"back-off restarting on node {node}{detail}",
                           WARNING))
    return events
