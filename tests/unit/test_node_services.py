"""The node's part of services without the kernel: readiness in the reported status, the table
written only when it changes, the responder's names following the desired set, the debug view,
and the containers' resolv.conf."""

from __future__ import annotations

import socket
import types
from ipaddress import IPv4Network

import pytest
from dnslib import DNSRecord

from mctl.agent import services, services_sync
from mctl.agent.bundle import config as bundle_config
from mctl.agent.containers import Container
from mctl.agent.node import NodeLoop
from mctl.agent.runtime.state import Exit
from mctl.v1 import agent_pb2, types_pb2


def container(**kw) -> Container:
    r = types_pb2.Replica()
    r.metadata.name = "api-abcde"
    return Container(id="default_api-abcde", bundle="/nonexistent", replica=r, cgroup="x",
                     started_ms=1000, **kw)


def status(c: Container, ready: bool) -> types_pb2.ReplicaStatus:
    loop = NodeLoop(types.SimpleNamespace(), types.SimpleNamespace(),  # type: ignore[arg-type]
                    lambda report: None, "n1", 1.0)
    loop.ready_of = lambda _c: ready
    return loop.status_of(c, now=10_000)


def test_only_a_running_container_passing_readiness_is_ready():
    assert status(container(monitor_pid=7), ready=True).ready
    assert not status(container(monitor_pid=7), ready=False).ready
    assert not status(container(), ready=True).ready                          # starting
    assert not status(container(monitor_pid=7, busy=True), ready=True).ready   # terminating
    assert not status(container(monitor_pid=7, unhealthy="x"), ready=True).ready
    exited = container(monitor_pid=7)
    exited.exit = Exit(0)
    assert not status(exited, ready=True).ready


def service(ready: bool = True, vip: str = "10.96.0.10") -> agent_pb2.Service:
    return agent_pb2.Service(
        namespace="default", workload="api", virtual_ip=vip,
        ports=[agent_pb2.ServicePort(port=8080, protocol="TCP")],
        endpoints=[agent_pb2.Endpoint(replica="api-abcde", ip="10.244.0.2", ready=ready)])


@pytest.fixture
def node(monkeypatch, tmp_path):
    """NodeServices over a fake network whose gateway is 127.0.0.1 (the responder binds there)."""
    applied = []
    monkeypatch.setattr(services, "apply", lambda table, wanted: applied.append(
        (table, list(wanted))) or "")
    network = types.SimpleNamespace(ready=True, subnet=IPv4Network("127.0.0.0/24"),
                                    bridge="mctl0", node_netns=None)
    (tmp_path / "resolv.conf").write_text("")
    ns = services_sync.NodeServices(types.SimpleNamespace(network=network),  # type: ignore[arg-type]
                                    dns_port=0, resolv_conf=str(tmp_path / "resolv.conf"))
    yield ns, applied, network
    ns.close()


def ask(ns: services_sync.NodeServices, name: str) -> list[str]:
    assert ns._dns is not None
    q = DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(bytes(q.pack()), ("127.0.0.1", ns._dns.port))
        return [str(rr.rdata) for rr in DNSRecord.parse(s.recv(4096)).rr]


def test_nothing_before_the_first_desired_set_or_the_network(node):
    ns, applied, network = node
    ns.sync()
    assert applied == [] and ns._dns is None
    assert ns.view() == ["no desired set received yet"]
    network.ready = False
    ns.set([service()])
    ns.sync()
    assert applied == [] and ns._dns is None


def test_the_table_is_written_when_services_change_and_names_follow(node):
    ns, applied, _ = node
    ns.set([service()])
    ns.sync()
    ns.set([service()])             # the same again: nothing to write
    ns.sync()
    assert [(t, [s.workload for s in w]) for t, w in applied] == [("mctl0_services", ["api"])]
    assert ask(ns, "api.default.mctl") == ["10.96.0.10"]
    ns.set([service(ready=False)])
    ns.sync()
    assert len(applied) == 2 and applied[1][1][0].ready_ips == ()
    ns.set([])
    ns.sync()
    assert len(applied) == 3 and applied[2][1] == []
    assert ask(ns, "api.default.mctl") == []


def test_the_view_lists_vips_endpoints_and_names(node):
    ns, _, _ = node
    ns.set([service(), service(vip="")])
    ns.set([service()])
    ns.sync()
    text = "\n".join(ns.view())
    assert "nft table: ip mctl0_services" in text and "NOT WRITTEN" not in text
    assert "dns: 127.0.0.1:" in text
    assert "default/api" in text and "10.96.0.10" in text and "8080/tcp" in text
    assert "1/1" in text and "api-abcde.api.default.mctl." in text and "ready" in text


def test_a_failed_write_is_shown_and_retried(node, monkeypatch):
    ns, applied, _ = node

    def broken(table, wanted):
        raise services.ServiceTableError("nft: no")

    monkeypatch.setattr(services, "apply", broken)
    ns.set([service()])
    ns.sync()
    assert "NOT WRITTEN: nft: no" in ns.view()[0]
    monkeypatch.setattr(services, "apply", lambda table, wanted: applied.append(1) or "")
    ns.sync()
    assert applied == [1] and "NOT WRITTEN" not in ns.view()[0]


def test_close_stops_the_responder():
    ns = services_sync.NodeServices(types.SimpleNamespace(network=None))  # type: ignore[arg-type]
    ns.set([service()])
    ns.sync()           # no network: nothing, and no error
    ns.close()
    assert ns.view()[0] == "dns: not listening"


def test_resolv_conf_names_the_node_and_the_search_list():
    assert bundle_config.resolv_conf("10.244.2.1", "shop") == (
        "nameserver 10.244.2.1\nsearch shop.mctl mctl\noptions ndots:3\n")
    assert bundle_config.resolv_conf("", "shop") == ""
