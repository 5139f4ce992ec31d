"""Conversions from the stored protobuf objects to the decision logic's views.

The placement and reconcile modules never see protobuf: they work on small
immutable dataclasses (model.py), which keeps them pure, fast and easy to test.
"""

from __future__ import annotations

from mctl.v1 import types_pb2

from .model import NodeView, Phase, ReplicaView, Resources, WorkloadView

# types.proto's ReplicaPhase -> the model's Phase, by name; unset is Pending,
# as the CLI shows it. A phase from a newer peer that this version does not
# know counts as Pending too: not running, holding its node.
_PHASES = {number: Phase[name.removeprefix("REPLICA_PHASE_")]
           for name, number in types_pb2.ReplicaPhase.items()
           if number != types_pb2.REPLICA_PHASE_UNSPECIFIED}


def phase(p: int) -> Phase:
    return _PHASES.get(p, Phase.PENDING)


def resources(r: types_pb2.Resources) -> Resources:
    return Resources(r.cpu_millis, r.memory_bytes, r.pids)


def host_ports(spec: types_pb2.WorkloadSpec) -> tuple[tuple[str, int], ...]:
    return tuple((p.protocol or "TCP", p.host_port) for p in spec.ports if p.host_port)


def workload_view(w: types_pb2.Workload, spec_hash: str) -> WorkloadView:
    spec = w.spec
    return WorkloadView(
        namespace=w.metadata.namespace,
        name=w.metadata.name,
        spec_hash=spec_hash,
        replicas=spec.replicas,
        request=resources(spec.resources),
        node_selector=dict(spec.node_selector),
        host_ports=host_ports(spec),
        spread=spec.spread,
        max_unavailable=spec.update.max_unavailable,
        max_surge=spec.update.max_surge,
        deletion_requested=w.metadata.deletion_requested,
        replace_failed=spec.replace_failed,
    )


def replica_view(r: types_pb2.Replica) -> ReplicaView:
    return ReplicaView(
        namespace=r.metadata.namespace,
        name=r.metadata.name,
        workload=r.workload,
        spec_hash=r.spec_hash,
        node=r.node,
        phase=phase(r.status.phase),
        created_ms=r.metadata.created_unix_ms,
        deletion_requested=r.metadata.deletion_requested,
        request=resources(r.spec.resources),
        host_ports=host_ports(r.spec),
        finished_ms=r.status.finished_unix_ms,
    )


def node_view(n: types_pb2.Node, ready: bool, images: frozenset[str] = frozenset()) -> NodeView:
    return NodeView(name=n.name, capacity=resources(n.capacity), labels=dict(n.labels),
                    ready=ready, cordoned=n.cordoned, images=images)
