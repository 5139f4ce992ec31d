"""Container networking, the scheduler's part: a subnet per node, routes and peers.

Every node gets one subnet of the cluster CIDR (10.244.0.0/16 split into
/24s by default) for its containers. The claim lives in etcd as
`subnets/<a.b.c.d>-<len>` -> node name, created with a compare-and-swap
transaction that requires the key not to exist, so two nodes registering
at once never get the same subnet: the loser re-reads and takes the next.
A node that registers again finds its claim and keeps its subnet (and so
its containers' addresses).

The desired set the scheduler pushes to a node also carries what the node
needs to reach the others: every node's address and subnet (it routes each
subnet via that node), and the addresses of the replicas of the workloads
it runs (its containers' /etc/hosts). Both are computed here from a
snapshot, purely.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Network

from mctl.common.ipnet import parse_ipv4_network
from mctl.v1 import agent_pb2, types_pb2

from .model import TERMINAL_PHASES
from .store import Conflict, Snapshot, Store, Write

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_NODE_PREFIX = 24


class SubnetError(Exception):
    """No subnet can be given (the cluster CIDR is full, or bad settings)."""


def parse_cluster_cidr(text: str, node_prefix: int) -> IPv4Network:
    """Checks --cluster-cidr and --node-subnet-prefix together; the message names the flag."""
    try:
        net = parse_ipv4_network(text, "--cluster-cidr")
    except ValueError as e:
        raise SubnetError(str(e)) from None
    if not net.prefixlen <= node_prefix <= 30:
        raise SubnetError(f"--node-subnet-prefix {node_prefix}: must be between the cluster "
                          f"CIDR's /{net.prefixlen} and /30")
    return net


def subnets(cluster: IPv4Network, node_prefix: int) -> Iterator[IPv4Network]:
    return cluster.subnets(new_prefix=node_prefix)


def pick_subnet(cluster: IPv4Network, node_prefix: int, taken: Iterable[str]) -> str | None:
    """The first subnet of `cluster` that no node holds; None when all are taken."""
    held = set()
    for text in taken:
        try:
            held.add(ipaddress.ip_network(text))
        except ValueError:
            continue
    for candidate in subnets(cluster, node_prefix):
        if not any(candidate.overlaps(h) for h in held):
            return str(candidate)
    return None


def node_ip(address: str) -> str:
    """The IP of an agent address "host:port" ("" if it is not an IP)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


class SubnetAllocator:
    """Hands out node subnets from the cluster CIDR, claimed in etcd with compare-and-swap."""

    def __init__(self, store: Store, cluster_cidr: str = DEFAULT_CLUSTER_CIDR,
                 node_prefix: int = DEFAULT_NODE_PREFIX) -> None:
        self.store = store
        self.cluster = parse_cluster_cidr(cluster_cidr, node_prefix)
        self.node_prefix = node_prefix

    @property
    def cluster_cidr(self) -> str:
        return str(self.cluster)

    def subnet_for(self, node: str, attempts: int = 10) -> str:
        """The subnet `node` holds, claiming a free one first if it holds none.

        Raises SubnetError when the cluster CIDR is full, Conflict when the
        claim kept losing races, StoreUnavailable when etcd is away.
        """
        for _ in range(attempts):
            claims = self.store.subnet_claims()
            mine = sorted(s for s, (owner, _) in claims.items() if owner == node)
            inside = [s for s in mine if ipaddress.ip_network(s).subnet_of(self.cluster)]
            if inside:
                return inside[0]
            subnet = pick_subnet(self.cluster, self.node_prefix,
                                 [s for s in claims if s not in mine])
            if subnet is None:
                raise SubnetError(f"no free /{self.node_prefix} left in cluster CIDR "
                                  f"{self.cluster} ({len(claims)} nodes hold one)")
            # Claims outside the current cluster CIDR (it was changed) are
            # given up in the same transaction.
            writes = [Write(self.store.subnet_key(subnet), node.encode(), 0)]
            writes += [Write(self.store.subnet_key(s), None, claims[s][1]) for s in mine]
            try:
                self.store.commit(writes)
            except Conflict:
                continue
            log.info("node=%s claimed subnet=%s", node, subnet)
            return subnet
        raise Conflict(f"subnet claim for node {node} lost {attempts} races")


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
                or r.status.phase in TERMINAL_PHASES):
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
