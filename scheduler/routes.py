"""What a node is told about the network around it: routes to other nodes, peers.

The desired set the scheduler pushes to a node also carries what the node
needs to reach the others: every node's address and subnet (it routes each
subnet via that node, subnets.py hands the subnets out), and the addresses
of the replicas of the workloads it runs (its containers' /etc/hosts). Both
are computed here from a snapshot, purely.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mctl.common.phases import is_terminal
from mctl.v1 import agent_pb2, types_pb2

from .store import Snapshot


def node_ip(address: str) -> str:
    """The IP of an agent address "host:port" ("" if it is not an IP)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


def node_routes(snap: Snapshot) -> list[agent_pb2.NodeRoute]:
    """Every node with a subnet and an IP address, for the routes between nodes."""
    out = []
    for name in sorted(snap.nodes):
        n = snap.nodes[name]
        ip = node_ip(n.address)
        if n.pod_subnet and ip:
            out.append(agent_pb2.NodeRoute(name=name, address=ip, pod_subnet=n.pod_subnet))
    return out


def addresses_by_workload(snap: Snapshot, limit: int = 0,
                          ) -> dict[tuple[str, str], list[agent_pb2.ReplicaAddress]]:
    """(namespace, workload) -> the addresses of its live replicas that have one.

    With `limit`, at most that many per workload (the first by name).
    """
    out: dict[tuple[str, str], list[agent_pb2.ReplicaAddress]] = {}
    for key in sorted(snap.replicas):
        r = snap.replicas[key]
        if (not r.status.ip or r.metadata.deletion_requested
                or is_terminal(r.status.phase)):
            continue
        found = out.setdefault((r.metadata.namespace, r.workload), [])
        if limit and len(found) >= limit:
            continue
        found.append(agent_pb2.ReplicaAddress(
            namespace=r.metadata.namespace, workload=r.workload, name=r.metadata.name,
            ip=r.status.ip))
    return out


def peers_of(by_workload: dict[tuple[str, str], list[agent_pb2.ReplicaAddress]],
             replicas: Iterable[types_pb2.Replica]) -> list[agent_pb2.ReplicaAddress]:
    """The addresses a node running `replicas` needs: all replicas of those workloads."""
    out = []
    for key in sorted({(r.metadata.namespace, r.workload) for r in replicas}):
        out += by_workload.get(key, [])
    return out
