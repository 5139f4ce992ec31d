"""common/rtnetlink.py against the real kernel, inside scratch network namespaces.

Needs root. Every test works in namespaces named `mctl-rtnl-<random>-*` that
its fixture creates and removes; every link is named `mctl...`; the host's
own interfaces are only read (to check nothing of the test appeared there).
The fixture asserts afterwards that no namespace, mount or host link of the
test is left. `ip -n NS ...` (iproute2) is the independent witness of what
the kernel holds. Traffic: one ping between two of the test's namespaces.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mctl.common import netns
from mctl.common.rtnetlink import NetlinkError, RtNetlink

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


@dataclass
class Scratch:
    tag: str                       # "mctl-rtnl-1a2b3c"
    short: str                     # "1a2b3c": for link names (IFNAMSIZ is 15)
    made: list[str]

    def ns(self, suffix: str = "a") -> str:
        """A fresh namespace of the test (made on first use)."""
        name = f"{self.tag}-{suffix}"
        if name not in self.made:
            netns.create(name)
            self.made.append(name)
        return name

    def fd(self, suffix: str) -> int:
        return os.open(netns.path_of(self.ns(suffix)), os.O_RDONLY | os.O_CLOEXEC)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    short = secrets.token_hex(3)
    s = Scratch(f"mctl-rtnl-{short}", short, [])
    host_before = set(os.listdir("/sys/class/net"))
    try:
        yield s
    finally:
        for name in s.made:
            netns.remove(name)
    left = netns.list_names(s.tag)
    with open("/proc/self/mountinfo") as f:
        left += [line for line in f if s.tag in line]
    left += [n for n in set(os.listdir("/sys/class/net")) - host_before if s.short in n]
    assert not left, f"left behind: {left}"


def test_new_namespace_has_loopback_only_and_down(scratch):
    with netns.rtnl(scratch.ns()) as rt:
        [lo] = rt.links()
        assert (lo.ifindex, lo.name, lo.kind, lo.up) == (1, "lo", "", False)
        rt.set_link("lo", up=True)
        assert rt.link("lo").up
    assert "UP" in ip(scratch.ns(), "-br", "link", "show", "lo")


def test_socket_keeps_its_namespace_on_any_thread(scratch):
    # Opened inside the namespace by netns.rtnl, used from this thread and
    # another: the bridge appears there, never on the host.
    bridge = f"mctlb{scratch.short}"
    with netns.rtnl(scratch.ns()) as rt:
        t = threading.Thread(target=rt.add_bridge, args=(bridge,))
        t.start()
        t.join()
        assert rt.link(bridge) is not None
    assert bridge in ip(scratch.ns(), "-br", "link")
    assert bridge not in os.listdir("/sys/class/net")
    with RtNetlink() as host:
        assert host.link(bridge) is None


def test_bridge_lifecycle_and_errors_name_the_object(scratch):
    bridge = f"mctlb{scratch.short}"
    with netns.rtnl(scratch.ns()) as rt:
        rt.add_bridge(bridge, mtu=1400)
        link = rt.link(bridge)
        assert (link.kind, link.mtu, link.up) == ("bridge", 1400, False)
        with pytest.raises(NetlinkError) as e:
            rt.add_bridge(bridge)
        assert isinstance(e.value, OSError) and e.value.errno == errno.EEXIST
        assert str(e.value) == f"bridge {bridge}: File exists"
        rt.set_link(link.ifindex, up=True, mtu=1300)
        link = rt.link(bridge)
        assert link.up and link.mtu == 1300
        rt.set_link(bridge, up=False)
        assert not rt.link(bridge).up
        rt.delete_link(bridge)
        assert rt.link(bridge) is None
        with pytest.raises(NetlinkError, match=f"^link {bridge}: No such device$") as e:
            rt.delete_link(bridge)
        assert e.value.errno == errno.ENODEV
        with pytest.raises(NetlinkError, match="^link #999: No such device"):
            rt.set_link(999, up=True)


def test_veth_with_peer_born_in_another_namespace(scratch):
    bridge, veth = f"mctlb{scratch.short}", f"mctlv{scratch.short}"
    node, box = scratch.ns("node"), scratch.ns("box")
    fd = scratch.fd("box")
    try:
        with netns.rtnl(node) as rt:
            rt.add_bridge(bridge, up=True)
            br = rt.index(bridge)
            rt.add_veth(veth, "eth0", peer_netns_fd=fd, master=br, up=True)
            link = rt.link(veth)
            assert (link.kind, link.master, link.up) == ("veth", br, True)
            assert rt.link("eth0") is None                  # the peer is not here
            with pytest.raises(NetlinkError, match=f"^veth {veth}: File exists$"):
                rt.add_veth(veth, "eth1")
    finally:
        os.close(fd)
    assert f"master {bridge}" in ip(node, "link", "show", veth)
    with netns.rtnl(box) as rt:
        peer = rt.link("eth0")
        assert (peer.kind, peer.up, peer.master) == ("veth", False, 0)
    # Deleting one end deletes the pair.
    with netns.rtnl(node) as rt:
        rt.delete_link(veth)
    with netns.rtnl(box) as rt:
        assert [x.name for x in rt.links()] == ["lo"]


def test_master_set_and_unset_and_move_between_namespaces(scratch):
    bridge, a, b = (f"mctl{x}{scratch.short}" for x in ("b", "x", "y"))
    other = scratch.ns("other")
    with netns.rtnl(scratch.ns()) as rt:
        rt.add_bridge(bridge)
        rt.add_veth(a, b)                                   # both ends here
        rt.set_link(a, master=rt.index(bridge))
        assert rt.link(a).master == rt.index(bridge)
        rt.set_link(a, master=0)
        assert rt.link(a).master == 0
        fd = scratch.fd("other")
        try:
            rt.set_link(b, netns_fd=fd)
        finally:
            os.close(fd)
        assert rt.link(b) is None
    with netns.rtnl(other) as rt:
        assert rt.link(b).kind == "veth"


def test_addresses_add_list_delete(scratch):
    bridge = f"mctlb{scratch.short}"
    with netns.rtnl(scratch.ns()) as rt:
        rt.add_bridge(bridge)
        index = rt.index(bridge)
        rt.add_address(index, "10.123.0.1", 24)
        rt.add_address(bridge, "10.124.0.1", 16)            # by name
        got = [(x.address, x.prefixlen) for x in rt.addresses(bridge)]
        assert got == [("10.123.0.1", 24), ("10.124.0.1", 16)]
        with pytest.raises(NetlinkError, match=f"address 10.123.0.1/24 on link #{index}: "
                                               "File exists") as e:
            rt.add_address(index, "10.123.0.1", 24)
        assert e.value.errno == errno.EEXIST
        rt.add_address(index, "fd00:123::1", 64)
        assert [x.address for x in rt.addresses(index, socket.AF_INET6)
                if not x.address.startswith("fe80")] == ["fd00:123::1"]
        rt.delete_address(index, "10.124.0.1", 16)
        assert [x.address for x in rt.addresses(index)] == ["10.123.0.1"]
        with pytest.raises(NetlinkError) as e:
            rt.delete_address(index, "10.124.0.1", 16)
        assert e.value.errno == errno.EADDRNOTAVAIL
        # Every link's, and only this family's.
        assert {x.address for x in rt.addresses()} == {"10.123.0.1"}
    assert "10.123.0.1/24" in ip(scratch.ns(), "-br", "addr", "show", bridge)


def test_routes_replace_filter_delete(scratch):
    bridge = f"mctlb{scratch.short}"
    with netns.rtnl(scratch.ns()) as rt:
        rt.add_bridge(bridge, up=True)
        rt.add_address(bridge, "10.125.0.1", 24)
        rt.add_route("10.126.0.0/24", gateway="10.125.0.7", protocol=109)
        with pytest.raises(NetlinkError, match="route 10.126.0.0/24 via 10.125.0.8: File exists"):
            rt.add_route("10.126.0.0/24", gateway="10.125.0.8", protocol=109)
        rt.add_route("10.126.0.0/24", gateway="10.125.0.8", protocol=109, replace=True)
        rt.add_route("default", gateway="10.125.0.1")
        ours = rt.routes(protocol=109)
        assert [(r.destination, r.gateway, r.oif) for r in ours] == [
            ("10.126.0.0/24", "10.125.0.8", rt.index(bridge))]
        main = {r.destination for r in rt.routes()}
        assert main == {"default", "10.125.0.0/24", "10.126.0.0/24"}
        # The local table holds the bridge's own address; the main one does not.
        assert "10.125.0.1/32" in {r.destination for r in rt.routes(table=None)}
        with pytest.raises(NetlinkError) as e:
            rt.add_route("10.127.0.0/24", gateway="192.0.2.1")
        assert e.value.errno == errno.ENETUNREACH
        assert str(e.value).startswith("route 10.127.0.0/24 via 192.0.2.1: Network is "
                                       "unreachable")
        # Deleting with another protocol leaves the route alone.
        with pytest.raises(NetlinkError) as e:
            rt.delete_route("10.126.0.0/24", protocol=110)
        assert e.value.errno == errno.ESRCH
        rt.delete_route("10.126.0.0/24", protocol=109)
        rt.delete_route("default")
        assert {r.destination for r in rt.routes()} == {"10.125.0.0/24"}
    assert "proto 109" not in ip(scratch.ns(), "route")


def test_two_namespaces_talk_through_a_bridge(scratch):
    """What a node does for a container, then a ping from the container to its gateway."""
    bridge, veth = f"mctlb{scratch.short}", f"mctlv{scratch.short}"
    node, box = scratch.ns("node"), scratch.ns("box")
    fd = scratch.fd("box")
    try:
        with netns.rtnl(node) as rt:
            rt.add_bridge(bridge)
            rt.add_address(bridge, "10.128.0.1", 24)
            rt.set_link(bridge, up=True)
            rt.add_veth(veth, "eth0", peer_netns_fd=fd, master=rt.index(bridge), up=True)
    finally:
        os.close(fd)
    with netns.rtnl(box) as rt:
        rt.set_link("lo", up=True)
        rt.add_address("eth0", "10.128.0.2", 24)
        rt.set_link("eth0", up=True)
        rt.add_route("default", gateway="10.128.0.1")
    assert "default via 10.128.0.1 dev eth0" in ip(box, "route")
    ping = subprocess.run(["ip", "netns", "exec", box, "busybox", "ping", "-c1", "-W2",
                           "10.128.0.1"], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_closed_socket_and_namespace_gone(scratch):
    name = scratch.ns()
    rt = netns.rtnl(name)
    rt.close()
    with pytest.raises(OSError):
        rt.links()
    scratch.made.remove(name)
    netns.remove(name)
    with pytest.raises(netns.NetnsError, match="does not exist"):
        netns.rtnl(name)
