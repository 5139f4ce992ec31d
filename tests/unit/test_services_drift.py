"""Drift of the node's services, without the kernel: the table compared with our last write and
rewritten when it differs, a dead DNS responder re-opened, and the self-check running both."""

from __future__ import annotations

import socket
import types
from ipaddress import IPv4Network

import pytest
from dnslib import DNSRecord

from mctl.agent import nft, selfcheck, services, services_sync
from mctl.agent.drift import FAILED, Repair
from mctl.v1 import agent_pb2


def service() -> agent_pb2.Service:
    return agent_pb2.Service(
        namespace="default", workload="api", virtual_ip="10.96.0.10",
        ports=[agent_pb2.ServicePort(port=8080, protocol="TCP")],
        endpoints=[agent_pb2.Endpoint(replica="api-abcde", ip="10.244.0.2", ready=True)])


@pytest.fixture
def node(monkeypatch, tmp_path):
    """NodeServices over a fake network (gateway 127.0.0.1) and a fake kernel table."""
    kernel = {"table": ""}
    writes = []

    def apply(table: str, wanted) -> str:
        writes.append(table)
        kernel["table"] = f"table ip {table} (write {len(writes)})"
        return kernel["table"]

    monkeypatch.setattr(services, "apply", apply)
    monkeypatch.setattr(nft, "table", lambda family, name: kernel["table"])
    network = types.SimpleNamespace(ready=True, subnet=IPv4Network("127.0.0.0/24"),
                                    bridge="mctl0", node_netns=None)
    (tmp_path / "resolv.conf").write_text("")
    ns = services_sync.NodeServices(types.SimpleNamespace(network=network),  # type: ignore[arg-type]
                                    dns_port=0, resolv_conf=str(tmp_path / "resolv.conf"))
    ns.set([service()])
    ns.sync()
    yield ns, kernel, writes
    ns.close()


def test_an_untouched_table_is_left_alone(node):
    ns, _, writes = node
    assert ns.repair() == [] and writes == ["mctl0_services"]


@pytest.mark.parametrize("now, found", [("", "missing"), ("table ip mctl0_services {}",
                                                         "changed")])
def test_a_flushed_or_deleted_table_is_rewritten(node, now, found):
    ns, kernel, writes = node
    kernel["table"] = now
    assert [(r.what, r.found, r.done) for r in ns.repair()] == [
        ("nft table ip mctl0_services", found, "rewritten")]
    assert len(writes) == 2
    # Compared with the new write from now on: nothing more to do.
    assert ns.repair() == []


def test_a_failed_rewrite_is_reported_and_tried_again(node, monkeypatch):
    ns, kernel, _ = node
    kernel["table"] = ""

    def broken(table, wanted):
        raise services.ServiceTableError("nft: no such file")

    monkeypatch.setattr(services, "apply", broken)
    assert [(r.found, r.outcome) for r in ns.repair()] == [("missing", FAILED)]
    assert [(r.found, r.outcome) for r in ns.repair()] == [("missing", FAILED)]


def test_nothing_to_compare_before_the_first_write(monkeypatch):
    ns = services_sync.NodeServices(types.SimpleNamespace(network=None))  # type: ignore[arg-type]
    monkeypatch.setattr(nft, "table", lambda *a: pytest.fail("read without a table"))
    assert ns.repair() == []


def test_a_responder_whose_socket_died_is_opened_again(node):
    ns, _, _ = node
    dead = ns._dns
    assert dead is not None and dead.serving
    dead.udp.close()                       # as if its socket had gone
    assert not dead.serving
    ns.sync()
    assert ns._dns is not None and ns._dns is not dead and ns._dns.serving
    q = DNSRecord.question("api.default.mctl", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(bytes(q.pack()), ("127.0.0.1", ns._dns.port))
        assert [str(rr.rdata) for rr in DNSRecord.parse(s.recv(4096)).rr] == ["10.96.0.10"]


def test_the_selfchecks_nft_pass_runs_the_services_repair():
    calls = []
    network = types.SimpleNamespace(
        ready=True, disabled=False, node_netns=None, repair=lambda attachments: [],
        repair_nft=lambda: calls.append("network") or [])
    manager = types.SimpleNamespace(network=network)
    check = selfcheck.SelfCheck(manager, lambda: None,  # type: ignore[arg-type]
                                more_nft=lambda: calls.append("services") or [
                                    Repair("nft table ip mctl0_services", "missing",
                                           "rewritten")])
    found = check.run([])
    assert calls == ["network", "services"]
    assert ("nft table ip mctl0_services", "missing") in {(r.what, r.found) for r in found}
