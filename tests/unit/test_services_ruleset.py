"""The services table's nft text (services.py), from desired-set services; the kernel runs it in
tests/kernel/test_services_kernel.py."""

from __future__ import annotations

import pytest

from mctl.agent import services
from mctl.agent.services import Endpoint, ServicePort, VirtualService
from mctl.v1 import agent_pb2


def svc(workload="api", vip="10.96.0.10", ports=(("TCP", 8080),), endpoints=(),
        namespace="default"):
    return agent_pb2.Service(
        namespace=namespace, workload=workload, virtual_ip=vip,
        ports=[agent_pb2.ServicePort(port=p, protocol=proto) for proto, p in ports],
        endpoints=[agent_pb2.Endpoint(replica=r, ip=ip, ready=ok) for r, ip, ok in endpoints])


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def section(text: str, header: str) -> list[str]:
    """The lines of one set/map/chain, between its header and its closing brace."""
    ls = lines(text)
    start = ls.index(header)
    return ls[start + 1:ls.index("}", start)]


def test_one_transaction_replaces_the_table():
    text = services.ruleset("mctl0_services", [])
    assert lines(text)[:3] == ["add table ip mctl0_services", "delete table ip mctl0_services",
                               "table ip mctl0_services {"]
    # Empty: the sets and map exist with no elements, the hooks still look them up.
    assert section(text, "map service_ports {") == [
        "type ipv4_addr . inet_proto . inet_service : verdict"]
    assert "ip daddr . meta l4proto . th dport vmap @service_ports" in section(
        text, "chain prerouting {")
    assert "ip daddr . meta l4proto . th dport vmap @service_ports" in section(
        text, "chain output {")


def test_each_port_goes_to_the_service_chain_which_picks_an_endpoint_at_random():
    wanted = services.normalize([svc(ports=(("TCP", 8080), ("UDP", 53)), endpoints=(
        ("api-b", "10.244.1.3", True), ("api-a", "10.244.0.2", True),
        ("api-c", "10.244.2.4", False)))])
    text = services.ruleset("t", wanted)
    assert section(text, "map service_ports {")[1] == (
        "elements = { 10.96.0.10 . tcp . 8080 : goto svc_default_api, "
        "10.96.0.10 . udp . 53 : goto svc_default_api }")
    # Ready endpoints only, in address order; the port is kept.
    assert section(text, "chain svc_default_api {") == [
        "dnat to numgen random mod 2 map { 0 : 10.244.0.2, 1 : 10.244.1.3 }"]
    assert section(text, "set endpoint_pairs {")[1] == (
        "elements = { 10.244.0.2 . 10.244.0.2, 10.244.1.3 . 10.244.1.3 }")
    assert "ct status dnat ip saddr . ip daddr @endpoint_pairs masquerade" in section(
        text, "chain postrouting {")


def test_a_service_without_ready_endpoints_has_no_chain_and_is_rejected():
    wanted = services.normalize([
        svc(endpoints=(("api-a", "10.244.0.2", False),)),
        svc("db", "10.96.0.11", endpoints=(("db-a", "10.244.0.9", True),))])
    text = services.ruleset("t", wanted)
    assert "chain svc_default_api {" not in lines(text)
    assert "10.96.0.10" not in section(text, "map service_ports {")[1]
    assert section(text, "set virtual_ips {")[1] == "elements = { 10.96.0.10, 10.96.0.11 }"
    for chain in ("chain reject_forward {", "chain reject_output {"):
        assert section(text, chain)[1:] == [
            "ip daddr @virtual_ips meta l4proto tcp reject with tcp reset",
            "ip daddr @virtual_ips reject with icmp type port-unreachable"]


def test_services_without_vip_or_ports_are_not_balanced():
    wanted = services.normalize([svc(vip="", endpoints=(("a-1", "10.244.0.2", True),)),
                                 svc("b", "10.96.0.12", ports=())])
    text = services.ruleset("t", wanted)
    assert section(text, "set virtual_ips {") == ["type ipv4_addr"]
    assert section(text, "map service_ports {") == [
        "type ipv4_addr . inet_proto . inet_service : verdict"]


def test_the_text_does_not_depend_on_input_order():
    a = svc(endpoints=(("api-a", "10.244.0.2", True), ("api-b", "10.244.1.3", True)))
    b = svc("db", "10.96.0.11", endpoints=(("db-a", "10.244.0.9", True),))
    assert services.ruleset("t", services.normalize([a, b])) == services.ruleset(
        "t", services.normalize([b, a]))


@pytest.mark.parametrize("bad", [
    svc(namespace="Default;drop"),                          # not a DNS label
    svc("api } flush ruleset {"),
])
def test_names_that_are_not_labels_never_reach_nft(bad):
    assert services.normalize([bad]) == []


def test_bad_addresses_ports_and_protocols_are_dropped_and_a_vip_is_kept_once():
    wanted = services.normalize([
        svc(vip="10.96.0.10; flush ruleset", ports=(("SCTP", 80), ("TCP", 0), ("TCP", 70000),
                                                    ("UDP", 53)),
            endpoints=(("a-1", "10.244.0.2 } ", True), ("A_2", "10.244.0.3", True),
                       ("a-3", "10.244.0.4", True))),
        svc("b", "10.96.0.20"), svc("c", "10.96.0.20")])
    api, b, c = wanted
    assert api.virtual_ip == "" and api.ports == (ServicePort("udp", 53),)
    assert api.endpoints == (Endpoint("a-3", "10.244.0.4", True),)
    assert (b.virtual_ip, c.virtual_ip) == ("10.96.0.20", "")


def test_ready_ips_are_each_address_once():
    s = VirtualService("default", "api", "10.96.0.10", (ServicePort("tcp", 80),),
                       (Endpoint("a", "10.244.0.3", True), Endpoint("b", "10.244.0.2", True),
                        Endpoint("c", "10.244.0.5", False)))
    assert s.ready_ips == ("10.244.0.2", "10.244.0.3")


def test_table_name_follows_the_bridge():
    assert services.table_name("mctl0") == "mctl0_services"
