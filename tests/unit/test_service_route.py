"""The service CIDR's way to a node: the registration reply, and what the agent will route.

The kernel side (the route made, repaired, removed) is in
tests/kernel/test_network_kernel.py; here the scheduler telling the
node its --service-cidr, and check_service_cidr refusing a CIDR whose route
would take over traffic that is not the VIPs'.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network

import pytest
from fake_store import FakeStore

from mctl.agent.network import MCTL_RTPROT, NetworkError, check_service_cidr
from mctl.common.rtnetlink import RTPROT_STATIC, Route
from mctl.scheduler.api import NodeService
from mctl.scheduler.nodes import NodeLeases
from mctl.scheduler.usage import UsageCache
from mctl.v1 import node_pb2, types_pb2

CLUSTER = IPv4Network("10.244.0.0/16")
RTPROT_KERNEL = 2


def route(dst: str, protocol: int = RTPROT_KERNEL) -> Route:
    net = IPv4Network(dst)
    return Route(socket.AF_INET, str(net.network_address) if net.prefixlen else "",
                 net.prefixlen, "", 3, 254, protocol, 253, 1)


class Replicas:
    def forget_pushed(self, node: str) -> None:
        pass


class Context:
    def abort(self, code, details):
        raise AssertionError(f"{code}: {details}")


@pytest.mark.parametrize("cidr", ["10.96.0.0/16", ""])
def test_registration_tells_the_node_the_service_cidr(cidr):
    nodes = NodeService(NodeLeases(FakeStore()), Replicas(), UsageCache(),  # type: ignore[arg-type]
                        service_cidr=cidr)
    reply = nodes.Register(node_pb2.RegisterRequest(node=types_pb2.Node(
        name="n1", address="127.0.0.1:1")), Context())
    assert reply.service_cidr == cidr


def test_a_usable_service_cidr_is_routed_past_the_default_route_and_our_own():
    routes = [route("0.0.0.0/0", RTPROT_STATIC), route("192.168.7.0/24"),
              route("10.244.1.0/24"), route("10.96.0.0/16", MCTL_RTPROT)]
    assert check_service_cidr("10.96.0.0/16", CLUSTER, routes) == IPv4Network("10.96.0.0/16")


@pytest.mark.parametrize("text, routes, message", [
    ("10.96.0.1/16", [], "service CIDR '10.96.0.1/16': 10.96.0.1/16 has host bits set"),
    ("nonsense", [], "service CIDR 'nonsense':"),
    ("0.0.0.0/0", [], "service CIDR 0.0.0.0/0: wider than /8"),
    ("10.0.0.0/8", [], "service CIDR 10.0.0.0/8 overlaps the cluster CIDR 10.244.0.0/16"),
    ("10.96.0.0/16", [route("10.96.5.0/24")],
     "service CIDR 10.96.0.0/16 overlaps the node's route to 10.96.5.0/24"),
    ("10.96.0.0/16", [route("10.0.0.0/8", RTPROT_STATIC)],
     "service CIDR 10.96.0.0/16 overlaps the node's route to 10.0.0.0/8"),
])
def test_a_service_cidr_the_node_must_not_route_is_one_line(text, routes, message):
    with pytest.raises(NetworkError) as e:
        check_service_cidr(text, CLUSTER, routes)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
