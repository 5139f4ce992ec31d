"""The scheduler's network decisions: subnet picking, routes and peers from a snapshot."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mctl.scheduler import routes, subnets
from mctl.scheduler.store import Snapshot
from mctl.v1 import types_pb2

CLUSTER = IPv4Network("10.244.0.0/16")


def test_pick_first_free():
    assert subnets.pick_subnet(CLUSTER, 24, []) == "10.244.0.0/24"
    assert subnets.pick_subnet(CLUSTER, 24, ["10.244.0.0/24", "10.244.2.0/24"]) == \
        "10.244.1.0/24"
    # An odd-sized claim (another prefix length) blocks what it overlaps.
    assert subnets.pick_subnet(CLUSTER, 24, ["10.244.0.0/23"]) == "10.244.2.0/24"
    assert subnets.pick_subnet(IPv4Network("10.0.0.0/24"), 25,
                               ["10.0.0.0/25", "10.0.0.128/25"]) is None


@given(st.sets(st.integers(0, 15)))
def test_picked_subnet_overlaps_no_claim(taken_idx):
    cluster = IPv4Network("10.1.0.0/20")
    all_subnets = list(cluster.subnets(new_prefix=24))
    taken = [str(all_subnets[i]) for i in taken_idx]
    got = subnets.pick_subnet(cluster, 24, taken)
    if len(taken) == 16:
        assert got is None
    else:
        assert got not in taken and IPv4Network(got).subnet_of(cluster)


@pytest.mark.parametrize(("cidr", "prefix", "words"), [
    ("10.0.0.0/33", 24, "--cluster-cidr"),
    ("fd00::/48", 64, "only IPv4"),
    ("10.0.0.1/16", 24, "host bits"),
    ("10.0.0.0/16", 8, "--node-subnet-prefix 8"),
    ("10.0.0.0/16", 31, "--node-subnet-prefix 31"),
])
def test_bad_flags(cidr, prefix, words):
    with pytest.raises(subnets.SubnetError, match=words):
        subnets.parse_cluster_cidr(cidr, prefix)


@pytest.mark.parametrize(("address", "ip"), [
    ("172.30.0.2:7071", "172.30.0.2"), ("[fd00::2]:7071", "fd00::2"), ("node1:7071", ""),
])
def test_node_ip(address, ip):
    assert routes.node_ip(address) == ip


def replica(name: str, workload: str, ip: str,
            phase: types_pb2.ReplicaPhase = types_pb2.REPLICA_PHASE_RUNNING,
            deleting: bool = False, namespace: str = "default") -> types_pb2.Replica:
    r = types_pb2.Replica(workload=workload)
    r.metadata.name = name
    r.metadata.namespace = namespace
    r.metadata.deletion_requested = deleting
    r.status.ip = ip
    r.status.phase = phase
    return r


def test_routes_list_nodes_with_subnet_and_ip():
    snap = Snapshot()
    snap.nodes = {
        "a": types_pb2.Node(name="a", address="172.30.0.2:7071", pod_subnet="10.244.0.0/24"),
        "b": types_pb2.Node(name="b", address="172.30.0.3:7071"),           # no subnet yet
        "c": types_pb2.Node(name="c", address="host:7071", pod_subnet="10.244.2.0/24"),
    }
    found = routes.node_routes(snap)
    assert [(r.name, r.address, r.pod_subnet) for r in found] == [
        ("a", "172.30.0.2", "10.244.0.0/24")]


def test_peers_are_the_live_addressed_replicas_of_the_nodes_workloads():
    snap = Snapshot()
    items = [replica("web-a", "web", "10.244.0.2"), replica("web-b", "web", "10.244.1.2"),
             replica("web-c", "web", ""),                             # no address yet
             replica("web-d", "web", "10.244.1.3", deleting=True),
             replica("web-e", "web", "10.244.1.4", phase=types_pb2.REPLICA_PHASE_FAILED),
             replica("db-a", "db", "10.244.1.5"),
             replica("web-z", "web", "10.244.2.9", namespace="other")]
    snap.replicas = {(r.metadata.namespace, r.metadata.name): r for r in items}
    index = routes.addresses_by_workload(snap)
    peers = routes.peers_of(index, [items[0]])
    assert [(p.name, p.ip) for p in peers] == [("web-a", "10.244.0.2"), ("web-b", "10.244.1.2")]
    assert routes.peers_of(index, []) == []
    assert [p.name for p in routes.peers_of(index, [items[0], items[5]])] == [
        "db-a", "web-a", "web-b"]
