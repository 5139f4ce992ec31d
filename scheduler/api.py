"""The scheduler's gRPC services: the control plane (for the CLI) and the node API.

Both are thin: they validate, read or write the store with compare-and-swap,
and wake the controller. The latest usage samples from agents are kept here
in memory (never in etcd: they change every few seconds and are worthless
after a restart).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import grpc

from mctl.common import names, rpc
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
from .model import TERMINAL_PHASES
from .store import Conflict, Store, StoreUnavailable, Write

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 2_000
# A node whose heartbeats stop is NotReady after this many seconds.
NODE_LEASE_TTL = 10


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

    def Logs(self, request: control_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[control_pb2.LogChunk]:
        ns = request.namespace or "default"
        try:
            raw, _ = self.store.get(self.store.replica_key(ns, request.replica))
            replica = types_pb2.Replica.FromString(raw) if raw is not None else None
            node = None
            if replica is not None and replica.node:
                raw_node, _ = self.store.get(self.store.node_key(replica.node))
                node = types_pb2.Node.FromString(raw_node) if raw_node else None
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        if replica is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"replica {request.replica} not found in namespace {ns}")
        if node is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"replica {request.replica} is not placed on a node yet")
        channel = rpc.make_channel(node.address)
        try:
            stream = agent_pb2_grpc.AgentStub(channel).Logs(request, timeout=None)
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
    def __init__(self, store: Store, controller: Controller, usage: UsageCache) -> None:
        self.store = store
        self.controller = controller
        self.usage = usage
        self._leases: dict[str, int] = {}
        self._lock = threading.Lock()

    def Register(self, request: node_pb2.RegisterRequest,
                 context: grpc.ServicerContext) -> node_pb2.RegisterResponse:
        node = request.node
        problem = names.validate_dns_label(node.name)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node name: {problem}")
        try:
            key = self.store.node_key(node.name)
            raw, _ = self.store.get(key)
            stored = types_pb2.Node()
            stored.CopyFrom(node)
            if raw is not None:
                old = types_pb2.Node.FromString(raw)
                stored.cordoned = old.cordoned   # an operator's cordon survives re-registration
                stored.registered_unix_ms = old.registered_unix_ms
            else:
                stored.registered_unix_ms = int(time.time() * 1000)
            stored.ready = False   # readiness is the heartbeat key, never stored
            self.store.put(key, stored.SerializeToString())
            lease = self.store.grant_lease(NODE_LEASE_TTL)
            self.store.put(self.store.heartbeat_key(node.name), str(lease).encode(), lease=lease)
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        with self._lock:
            self._leases[node.name] = lease
        log.info("node=%s registered address=%s cpu_millis=%d memory_bytes=%d", node.name,
                 node.address, node.capacity.cpu_millis, node.capacity.memory_bytes)
        self.controller.forget_pushed(node.name)
        return node_pb2.RegisterResponse(heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)

    def Heartbeat(self, request: node_pb2.HeartbeatRequest,
                  context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        self.usage.set_node(request.node, request.usage)
        lease = self._leases.get(request.node)
        if lease is None:
            return node_pb2.HeartbeatResponse(reregister=True)
        try:
            ttl = self.store.refresh_lease(lease)
        except StoreUnavailable as e:
            _abort_unavailable(context, e)
        if ttl <= 0:
            log.warning("node=%s lease had expired; asking it to register again", request.node)
            with self._lock:
                self._leases.pop(request.node, None)
            return node_pb2.HeartbeatResponse(reregister=True)
        return node_pb2.HeartbeatResponse()

    def ReportStatus(self, request: node_pb2.StatusReport,
                     context: grpc.ServicerContext) -> node_pb2.StatusAck:
        for _ in range(5):
            try:
                self._apply_report(request)
                return node_pb2.StatusAck()
            except Conflict:
                continue
            except StoreUnavailable as e:
                _abort_unavailable(context, e)
        context.abort(grpc.StatusCode.ABORTED, "status kept conflicting; report again")
        raise AssertionError("unreachable")

    def _apply_report(self, report: node_pb2.StatusReport) -> None:
        snap = self.store.snapshot()
        reported = {(r.namespace, r.name): r for r in report.replicas}
        writes = []
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
        if writes:
            self.store.commit(writes)
            self.controller.wake()
