"""Services as the nodes see them: each workload's virtual IP, ports and endpoints.

Every node balances every virtual IP (a container on any node may call any
service), so the desired set the controller pushes to each node carries the
whole list, computed here from a snapshot, purely:

- a workload is a service when it has ports, holds a virtual IP (vips.py)
  and is not being deleted: a deleted workload leaves every node's table
  and DNS at the next push, before its replicas are even gone;
- its ports are `spec.ports` by (containerPort, protocol), each once (a port
  published on two host ports is one service port), named by the first
  entry that names it;
- its endpoints follow common/endpoints.py (Running, with an address, not
  leaving; ready by its readiness check), and a replica whose node stopped
  heartbeating is kept (its name still resolves) but not ready: what its
  node last said may no longer be true, and traffic to it would likely be
  lost.

Bounded: at most MAX_ENDPOINTS_PER_SERVICE endpoints per service, ready
ones first, then by name. The bound is the default --max-replicas, so a
default workload never loses an endpoint to it; it keeps one service's
share of every desired set (and one nftables map) near 50 KB even when
--max-replicas is raised. The whole list is bounded by the cluster's
replicas (--max-cluster-replicas, 10,000 by default). Serialized, an
endpoint is its name, address and flag (~40 bytes), a service ~50 bytes
more: 1,000 services of 3 replicas make ~170 KB in every node's set, and
~0.5 MB at the 10,000-replica cap (gRPC's limit here is 64 MiB). The list is
made and digested once per pass, O(workloads + replicas), and sent to a
node only when it changed (controller.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from mctl.common.endpoints import is_endpoint, is_ready
from mctl.v1 import agent_pb2, types_pb2

from .store import Snapshot

MAX_ENDPOINTS_PER_SERVICE = 1000


def service_ports(spec: types_pb2.WorkloadSpec) -> list[agent_pb2.ServicePort]:
    """The ports a service answers on, once each, in the order they are declared."""
    out: dict[tuple[int, str], agent_pb2.ServicePort] = {}
    for p in spec.ports:
        key = (p.container_port, p.protocol or "TCP")
        found = out.get(key)
        if found is None:
            out[key] = agent_pb2.ServicePort(name=p.name, port=key[0], protocol=key[1])
        elif not found.name and p.name:
            found.name = p.name
    return list(out.values())


def service_of(w: types_pb2.Workload, replicas: Iterable[types_pb2.Replica],
               live_nodes: set[str] | frozenset[str] | None = None,
               limit: int = MAX_ENDPOINTS_PER_SERVICE) -> agent_pb2.Service | None:
    """The service of workload `w` with `replicas` (its own); None if it is none.

    `live_nodes`: the nodes heartbeating (None: all); an endpoint elsewhere
    is not ready.
    """
    if not w.spec.ports or not w.status.virtual_ip or w.metadata.deletion_requested:
        return None
    found = []
    for r in replicas:
        if not is_endpoint(r):
            continue
        ready = is_ready(r) and (live_nodes is None or r.node in live_nodes)
        found.append((not ready, r.metadata.name, r.status.ip))
    kept = sorted(found)[:limit] if limit else sorted(found)
    endpoints = [agent_pb2.Endpoint(replica=name, ip=ip, ready=not unready)
                 for unready, name, ip in sorted(kept, key=lambda e: e[1])]
    return agent_pb2.Service(namespace=w.metadata.namespace, workload=w.metadata.name,
                             virtual_ip=w.status.virtual_ip, ports=service_ports(w.spec),
                             endpoints=endpoints)


def services(snap: Snapshot, limit: int = MAX_ENDPOINTS_PER_SERVICE) -> list[agent_pb2.Service]:
    """Every service of the cluster, by namespace and name."""
    by_workload: dict[tuple[str, str], list[types_pb2.Replica]] = {}
    for r in snap.replicas.values():
        by_workload.setdefault((r.metadata.namespace, r.workload), []).append(r)
    out = []
    for key in sorted(snap.workloads):
        service = service_of(snap.workloads[key], by_workload.get(key, ()),
                             snap.heartbeats, limit)
        if service is not None:
            out.append(service)
    return out
