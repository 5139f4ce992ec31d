"""Services on the real kernel: the nft table balancing a virtual IP, and the DNS responder.

Needs root and nft. Each test gets a fresh namespace standing in for a node
(its bridge and guard made by NodeNetwork, as the agent makes them), three
"containers" attached to it (two endpoints with TCP and UDP listeners that
answer with their name, and a client), and the services table applied in
the node's namespace by services.apply. A route to the service CIDR through
a veth pair with nothing behind it stands in for a node's default route: without the table's
reject rules, traffic to a VIP without endpoints would vanish down it.
The finalizer removes the namespaces and checks nothing of the test is left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from mctl.agent import dns, services
from mctl.agent.network import NodeNetwork
from mctl.agent.services import Endpoint, ServicePort, VirtualService
from mctl.common import netns

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"),
                       reason="needs nft"),
]

VIP = "10.96.0.10"
TABLE = services.table_name("mctl0")


@dataclass
class Box:
    name: str               # the replica's name, which its listeners answer with
    ns: str                 # its network namespace's name
    ip: str


@dataclass
class Node:
    ns: str
    net: NodeNetwork
    boxes: dict[str, Box]


def sh(ns: str, command: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", command], check=True,
                   capture_output=True)


def serve_tcp(box: Box, port: int) -> socket.socket:
    """Answers each connection with the box's name, then echoes what it is sent."""
    sock = netns.run_in(box.ns, lambda: socket.create_server(("0.0.0.0", port)))

    def conn_loop(conn: socket.socket) -> None:
        with conn:
            conn.sendall(box.name.encode() + b"\n")
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=conn_loop, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return sock


def serve_udp(box: Box, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        return s
    sock = netns.run_in(box.ns, make)

    def loop() -> None:
        while True:
            try:
                _, peer = sock.recvfrom(100)
                sock.sendto(box.name.encode(), peer)
            except OSError:
                return

    threading.Thread(target=loop, daemon=True).start()
    return sock


def tcp_name(ns: str, ip: str = VIP, port: int = 8080, timeout: float = 3.0) -> str:
    def go() -> str:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            return s.makefile().readline().strip()
    return netns.run_in(ns, go)


def udp_name(ns: str, ip: str = VIP, port: int = 5353) -> str:
    def go() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"who", (ip, port))
            return s.recv(100).decode()
    return netns.run_in(ns, go)


@pytest.fixture
def node() -> Iterator[Node]:
    name = f"mctl-test-{secrets.token_hex(3)}"
    tmp = tempfile.mkdtemp(prefix="mctl-test-")
    sockets: list[socket.socket] = []
    netns.create(name)
    net = NodeNetwork(os.path.join(tmp, "state"), netns_prefix=f"{name}-", node_netns=name)
    try:
        with netns.rtnl(name) as rt:
            rt.set_link("lo", up=True)
        net.configure("10.99.1.0/24", "10.99.0.0/16")
        sh(name, "ip link add mctlsvca type veth peer name mctlsvcb && ip link set mctlsvca up "
                 "&& ip link set mctlsvcb up && ip route add 10.96.0.0/16 dev mctlsvca")
        boxes = {}
        for replica in ("api-1", "api-2", "client"):
            att = net.attach(f"default_{replica}")
            box = Box(replica, os.path.basename(att.netns), att.ip)
            boxes[replica] = box
            if replica != "client":
                sockets += [serve_tcp(box, 8080), serve_udp(box, 5353)]
        yield Node(name, net, boxes)
    finally:
        for s in sockets:
            s.close()
        net.cleanup()
        netns.remove(name)
        shutil.rmtree(tmp, ignore_errors=True)
    left = netns.list_names(name)
    with open("/proc/self/mountinfo") as f:
        left += [line for line in f if name in line]
    assert not left, f"left behind: {left}"


def apply(node: Node, ready: dict[str, bool], vip: str = VIP) -> str:
    svc = VirtualService("default", "api", vip,
                         (ServicePort("tcp", 8080), ServicePort("udp", 5353)),
                         tuple(Endpoint(r, node.boxes[r].ip, ok) for r, ok in ready.items()))
    return netns.run_in(node.ns, lambda: services.apply(TABLE, [svc]))


def names_seen(fetch: Callable[[], str], tries: int = 60) -> set[str]:
    return {fetch() for _ in range(tries)}


def test_vip_reaches_every_ready_endpoint_over_tcp_and_udp(node):
    listing = apply(node, {"api-1": True, "api-2": True})
    assert f"{VIP} . tcp . 8080 : goto svc_default_api" in listing
    client = node.boxes["client"].ns
    # numgen random over two: 60 tries miss one with probability 2^-59.
    assert names_seen(lambda: tcp_name(client)) == {"api-1", "api-2"}
    assert names_seen(lambda: udp_name(client)) == {"api-1", "api-2"}
    # The node itself (output hook) reaches them too.
    assert names_seen(lambda: tcp_name(node.ns)) == {"api-1", "api-2"}


def test_an_endpoint_not_ready_gets_no_new_connection(node):
    apply(node, {"api-1": True, "api-2": True})
    client = node.boxes["client"].ns
    assert tcp_name(client) in {"api-1", "api-2"}
    apply(node, {"api-1": True, "api-2": False})
    assert names_seen(lambda: tcp_name(client), 30) == {"api-1"}
    assert names_seen(lambda: udp_name(client), 30) == {"api-1"}
    # And removed from the set altogether: the same.
    apply(node, {"api-2": True})
    assert names_seen(lambda: tcp_name(client), 30) == {"api-2"}


def test_no_ready_endpoint_is_refused_at_once(node):
    apply(node, {"api-1": False})
    client = node.boxes["client"].ns
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        tcp_name(client)
    with pytest.raises(ConnectionRefusedError):
        tcp_name(client, port=9999)             # a port the service does not have
    with pytest.raises(OSError):                 # ICMP port unreachable: ECONNREFUSED
        def go() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.connect((VIP, 5353))
                s.send(b"who")
                s.recv(100)
        netns.run_in(client, go)
    assert time.monotonic() - started < 2.5, "rejects must not wait for a timeout"


def test_hairpin_a_replica_reaches_itself_through_its_vip(node):
    apply(node, {"api-1": True})
    me = node.boxes["api-1"].ns
    assert names_seen(lambda: tcp_name(me), 10) == {"api-1"}
    assert names_seen(lambda: udp_name(me), 10) == {"api-1"}


def test_established_connections_survive_a_rewrite_and_a_new_agent(node):
    apply(node, {"api-1": True})
    client = node.boxes["client"].ns
    conn = netns.run_in(client, lambda: socket.create_connection((VIP, 8080), timeout=3))
    with conn:
        reader = conn.makefile("rb")
        assert reader.readline() == b"api-1\n"
        # The endpoint leaves the rotation: its open connection stays.
        apply(node, {"api-1": False, "api-2": True})
        conn.sendall(b"still\n")
        assert reader.readline() == b"still\n"
        # A new agent: no table for a moment, then one written from scratch.
        netns.run_in(node.ns, lambda: services.delete(TABLE))
        apply(node, {"api-2": True})
        conn.sendall(b"again\n")
        assert reader.readline() == b"again\n"
    assert tcp_name(client) == "api-2"


def test_the_table_is_replaced_whole_and_removed(node):
    apply(node, {"api-1": True, "api-2": True})
    apply(node, {"api-1": True}, vip="10.96.0.20")
    listing = netns.run_in(node.ns, lambda: services.nft.table("ip", TABLE))
    assert "10.96.0.20" in listing and VIP not in listing
    netns.run_in(node.ns, lambda: services.delete(TABLE))
    assert netns.run_in(node.ns, lambda: services.nft.table("ip", TABLE)) == ""


def test_dns_answers_containers_on_the_bridge_address_through_the_guard(node, tmp_path):
    apply(node, {"api-1": True, "api-2": True})
    (tmp_path / "resolv.conf").write_text("")       # no upstreams: SERVFAIL at once

    def sockets() -> tuple[socket.socket, socket.socket]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp.bind(("10.99.1.1", 53))
        tcp.bind(("10.99.1.1", 53))
        return udp, tcp

    udp, tcp = netns.run_in(node.ns, sockets)
    responder = dns.Responder("10.99.1.1", resolv_conf=str(tmp_path / "resolv.conf"),
                              udp=udp, tcp=tcp)
    try:
        svc = VirtualService("default", "api", VIP, (ServicePort("tcp", 8080),),
                             (Endpoint("api-1", node.boxes["api-1"].ip, True),))
        responder.set_names(dns.build_names([svc]))
        client = node.boxes["client"].ns

        def ask(name: str, tcp: bool = False) -> DNSRecord:
            q = DNSRecord.question(name, "A")
            return DNSRecord.parse(netns.run_in(
                client, lambda: q.send("10.99.1.1", 53, tcp=tcp, timeout=3)))

        for tcp_ in (False, True):
            r = ask("api.default.mctl", tcp_)
            assert [str(a.rdata) for a in r.rr if a.rtype == QTYPE.A] == [VIP]
        assert [str(a.rdata) for a in ask("api-1.api.default.mctl").rr] == [
            node.boxes["api-1"].ip]
        assert ask("nope.default.mctl").header.rcode == RCODE.NXDOMAIN
        started = time.monotonic()
        assert ask("example.com").header.rcode == RCODE.SERVFAIL
        assert time.monotonic() - started < 1
    finally:
        responder.close()


def test_the_gateway_keeps_its_hardware_address_as_ports_come_and_go(node):
    """Containers' neighbour entries for the gateway (the bridge) must stay right: a bridge
    left to choose takes its lowest port's address, which goes with that port."""
    def mac() -> str:
        out = subprocess.run(["ip", "-n", node.ns, "-br", "link", "show", "mctl0"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[2]

    assert mac() == "02:6d:0a:63:01:01"         # from 10.99.1.1
    att = node.net.attach("default_more")
    assert mac() == "02:6d:0a:63:01:01"
    node.net.detach("default_more", att)
    node.net.detach("default_api-1", None)
    assert mac() == "02:6d:0a:63:01:01"
    # And the client still reaches the node's DNS responder's address.
    client = node.boxes["client"].ns
    sh(client, "busybox ping -c1 -W2 10.99.1.1")
