"""Node subnets: each node's share of the cluster CIDR, claimed in etcd.

Every node gets one subnet of the cluster CIDR (10.244.0.0/16 split into
/24s by default) for its containers. The claim lives in etcd as
`subnets/<a.b.c.d>-<len>` -> node name, created with a compare-and-swap
transaction that requires the key not to exist, so two nodes registering
at once never get the same subnet: the loser re-reads and takes the next.
A node that registers again finds its claim and keeps its subnet (and so
its containers' addresses).

What nodes are told about each other's subnets is routes.py.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Network

from mctl.common.ipnet import parse_ipv4_network

from .retry import retry_conflicts
from .store import Store, Write

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

        Raises SubnetError when the cluster CIDR is full, Conflict
        (TooManyConflicts) when the claim kept losing races,
        StoreUnavailable when etcd is away.
        """
        return retry_conflicts(lambda _: self._claim(node), attempts,
                               what=f"subnet claim for node {node}")

    def _claim(self, node: str) -> str:
        claims = self.store.subnet_claims()
        mine = sorted(s for s, (owner, _) in claims.items() if owner == node)
        inside = [s for s in mine if _inside(s, self.cluster)]
        if inside:
            return inside[0]
        subnet = pick_subnet(self.cluster, self.node_prefix,
                             [s for s in claims if s not in mine])
        if subnet is None:
            raise SubnetError(f"no free /{self.node_prefix} left in cluster CIDR "
                              f"{self.cluster} ({len(claims)} nodes hold one)")
        # Claims outside the current cluster CIDR (it was changed) are
        # given up in the same transaction.
        writes = [Write(self.store.keys.subnet(subnet), node.encode(), 0)]
        writes += [Write(self.store.keys.subnet(s), None, claims[s][1]) for s in mine]
        self.store.commit(writes)
        log.info("node=%s claimed subnet=%s", node, subnet)
        return subnet


def _inside(subnet: str, cluster: IPv4Network) -> bool:
    net = ipaddress.ip_network(subnet)
    return isinstance(net, IPv4Network) and net.subnet_of(cluster)
