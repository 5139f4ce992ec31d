"""Container networking on one node: a bridge, a veth and an address per container, routes.

The scheduler gives every node a subnet of the cluster CIDR (say
10.244.2.0/24). The node side, made once when the agent registers:

    bridge mctl0  10.244.2.1/24  (the containers' gateway)
    net.ipv4.ip_forward = 1      (the node routes between its bridge and its link)
    nft table mctl0              (hostPort DNAT, hostports.py)
    nft table mctl0_guard        (no connections from containers to the node, firewall.py)
    10.244.1.0/24 via <node1>    one route per other node, to its subnet
    10.244.3.0/24 via <node3>    (rtm_protocol MCTL_RTPROT marks them as ours)
    10.96.0.0/16 dev mctl0       the service CIDR, scope link (below)

and per container, before the container starts:

    /run/netns/<prefix><container id>   a named network namespace (netns.py)
    veth pair: mctl<hash> in mctl0  <->  eth0 in the container's namespace
    eth0 10.244.2.7/24 (IPAM, ipam.py), lo up, default via 10.244.2.1

The container's config.json then names that namespace by path, so the
runtime (native, runc or crun) joins it instead of making an empty one.
A container on node A reaches one on node B by address: A's bridge, A's
route to B's subnet via B's address, B's bridge. Nodes must share one
link (one L2 network, as a local cluster's nodes share the host bridge):
routes go straight to the other node's address, with no tunnel.

The service CIDR's route is for connections the node opens itself to a
virtual IP (services.py DNATs them in its nat output chain): the kernel
routes a packet before that chain runs, so without a route to the VIP
(a local cluster's node namespace has no default route) the connect fails
with ENETUNREACH before any rule is seen. The route points into the node's
own bridge, never via a gateway: a VIP that no rule rewrites (no ready
endpoint is rejected by services.py; an unclaimed one is asked for on the
bridge, where no container answers) stays on this node instead of leaving
through a default route. Containers need none of it: their default route
is the bridge, and prerouting DNATs before the node routes.

Every step can be undone on its own and undoing is idempotent, so a
teardown after a half-made attach, or a sweep after a crash, removes
exactly what exists.

Others can change all of this behind the agent's back (a link blip deletes
the routes through that link, an operator flushes a table): repair() and
repair_nft() compare the node side and the containers' veths with what
they should be, from one dump per kind of object, and put back the
difference (selfcheck.py calls them on every pass of the node loop and on
the kernel's notifications; drift.py). Man pages: ip-link(8) (veth,
bridge), ip-route(8), ip-netns(8), network_namespaces(7).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import TypeVar

from mctl.common import netns
from mctl.common.rtnetlink import RTPROT_STATIC, Link, NetlinkError, Route, RtNetlink
from mctl.common.sha256 import sha256

from . import firewall, hostports, nft
from .drift import FAILED, Repair
from .ipam import AddressPool, IpamError, gateway_of, parse_subnet

log = logging.getLogger(__name__)

# rtm_protocol of the routes to other nodes' subnets; any value the kernel
# and routing daemons do not use (see /etc/iproute2/rt_protos) marks them
# as mctl's, so they can be found and removed without touching others.
MCTL_RTPROT = 109
# The service route may not be wider than this: a /0../7 "service CIDR"
# would be a takeover of most of the node's traffic, not a set of VIPs.
MIN_SERVICE_ROUTE_PREFIX = 8
ATTACHMENT_FILE = "network.json"
FORWARD_SYSCTL = "net.ipv4.ip_forward"

T = TypeVar("T")


class NetworkError(Exception):
    """A container or node network could not be set up; the message is for the user."""


@dataclass(frozen=True)
class Attachment:
    """What one container holds of the node's network (kept in its bundle)."""

    netns: str                       # path of the container's network namespace
    veth: str                        # the node-side end, a port of the bridge
    ip: str
    subnet: str
    ports: tuple[hostports.Mapping, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"netns": self.netns, "veth": self.veth, "ip": self.ip, "subnet": self.subnet,
                "ports": [m.to_list() for m in self.ports]}

    @classmethod
    def from_dict(cls, doc: dict[str, object]) -> Attachment:
        ports = doc.get("ports") or []
        assert isinstance(ports, list)
        return cls(str(doc["netns"]), str(doc["veth"]), str(doc["ip"]), str(doc["subnet"]),
                   tuple(hostports.Mapping.from_list(p) for p in ports))

    def save(self, bundle: str) -> None:
        tmp = os.path.join(bundle, ATTACHMENT_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, os.path.join(bundle, ATTACHMENT_FILE))

    @classmethod
    def load(cls, bundle: str) -> Attachment | None:
        try:
            with open(os.path.join(bundle, ATTACHMENT_FILE)) as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError, KeyError, AssertionError, TypeError):
            return None


@dataclass(frozen=True)
class PeerNode:
    """Another node as the scheduler describes it: where its containers' subnet lives."""

    name: str
    address: str                     # the node's own IP on the shared link
    subnet: str


@dataclass
class _State:
    subnet: IPv4Network | None = None
    cluster_cidr: IPv4Network | None = None
    mappings: dict[str, tuple[hostports.Mapping, ...]] = field(default_factory=dict)
    # The service CIDR routed into the bridge; None: no services, or refused.
    service_cidr: IPv4Network | None = None
    # The routes to other nodes' subnets as last asked (destination -> gateway),
    # None before the first sync_routes: what repair() puts back.
    routes: dict[str, str] | None = None
    # "family table" -> the stateless listing the kernel gave right after
    # our last write of that table: what repair_nft() compares with.
    nft_refs: dict[str, str] = field(default_factory=dict)


def bridge_mac(gateway: ipaddress.IPv4Address) -> str:
    """The bridge's own hardware address: fixed, locally administered, from its address.

    A bridge left to choose takes the lowest address of its ports, so it
    changes when a container's veth comes or goes, and the other containers'
    neighbour entries for their gateway point at a port that is gone until
    they expire (seconds of lost traffic through the gateway: other nodes,
    services, DNS). Set once, it never changes.
    """
    return "02:6d:" + ":".join(f"{b:02x}" for b in gateway.packed)


def check_service_cidr(text: str, cluster: IPv4Network, routes: Iterable[Route]) -> IPv4Network:
    """The scheduler's service CIDR if the node may route it into its bridge.

    `routes` are the node's main table; NetworkError (one line) if the CIDR
    is malformed, wider than /MIN_SERVICE_ROUTE_PREFIX, overlaps the
    cluster CIDR, or overlaps a route someone else made (say, the node's
    own link network): the VIPs would then shadow real addresses.
    """
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as e:
        raise NetworkError(f"service CIDR {text!r}: {e}") from None
    if net.prefixlen < MIN_SERVICE_ROUTE_PREFIX:
        raise NetworkError(f"service CIDR {net}: wider than /{MIN_SERVICE_ROUTE_PREFIX}")
    if net.overlaps(cluster):
        raise NetworkError(f"service CIDR {net} overlaps the cluster CIDR {cluster}")
    for r in routes:
        # The default route (length 0) is what the service route must win
        # over; mctl's own are the old service route and peer subnets.
        if r.family != socket.AF_INET or r.dst_len == 0 or r.protocol == MCTL_RTPROT:
            continue
        if net.overlaps(IPv4Network(r.destination, strict=False)):
            raise NetworkError(f"service CIDR {net} overlaps the node's route to "
                               f"{r.destination}")
    return net


def veth_name(bridge: str, container_id: str) -> str:
    """The node-side veth name: 15 characters at most (IFNAMSIZ), unique per bridge."""
    digest = sha256(f"{bridge}/{container_id}".encode()).hexdigest()
    return "mctl" + digest[:11]


class NodeNetwork:
    """The container network of one node, in the namespace `node_netns` (None: the agent's)."""

    def __init__(self, state_dir: str, netns_prefix: str, bridge: str = "mctl0",
                 node_netns: str | None = None) -> None:
        if not netns_prefix.startswith("mctl"):
            raise ValueError(f"netns prefix {netns_prefix!r} must start with 'mctl'")
        if not bridge.startswith("mctl") or len(bridge) > 15:
            raise ValueError(f"bridge {bridge!r} must start with 'mctl' and have at most "
                             "15 characters")
        self.dir = os.path.join(state_dir, "network")
        self.pool = AddressPool(os.path.join(self.dir, "addresses"))
        self.netns_prefix = netns_prefix
        self.bridge = bridge
        self.node_netns = node_netns
        self._state = _State()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._disabled = False
        self._nl_lock = threading.Lock()
        self._nl: RtNetlink | None = None
        self._bridge_index = 0

    # -- the node side ------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the node has its subnet and bridge, so containers can attach."""
        return self._ready.is_set()

    @property
    def disabled(self) -> bool:
        """The scheduler gave no subnet: containers get loopback only."""
        return self._disabled

    def disable(self) -> None:
        self._disabled = True
        log.warning("the scheduler gave this node no subnet: containers get loopback only")

    @property
    def subnet(self) -> IPv4Network | None:
        return self._state.subnet

    def configure(self, subnet: str, cluster_cidr: str, service_cidr: str = "") -> None:
        """Sets up the node side for `subnet`; idempotent, and safe on a subnet change.

        `service_cidr` ("" = none) is routed into the bridge (see the module
        docstring); one the node must not route is logged and left out, as
        only the node's own connections to VIPs need it.
        """
        net = parse_subnet(subnet)
        cluster = parse_subnet(cluster_cidr) if cluster_cidr else net
        gateway = gateway_of(net)
        with self._lock:
            with netns.rtnl(self.node_netns) as rt:
                bridge = rt.link(self.bridge)
                if bridge is None:
                    rt.add_bridge(self.bridge)
                index = bridge.ifindex if bridge is not None else rt.index(self.bridge)
                kept = False
                for addr in rt.addresses(index, socket.AF_INET):
                    if (addr.address, addr.prefixlen) == (str(gateway), net.prefixlen):
                        kept = True
                        continue
                    log.warning("bridge=%s drops old address %s/%d", self.bridge, addr.address,
                                addr.prefixlen)
                    rt.delete_address(index, addr.address, addr.prefixlen)
                if not kept:
                    rt.add_address(index, str(gateway), net.prefixlen)
                rt.set_link(index, up=True, mac=bridge_mac(gateway))
                # After the link is up: the kernel refuses a route through a
                # link that is down (ENETDOWN).
                self._set_service_route_locked(rt, index, service_cidr, cluster)
            # Forwarding: containers reach other nodes and hostPorts reach
            # containers through this node.
            netns.write_sysctl(self.node_netns, FORWARD_SYSCTL, "1")
            old = self._state.subnet
            if old is not None and old != net:
                log.warning("node subnet changed from %s to %s: running containers keep "
                            "their old addresses", old, net)
            self._state.subnet = net
            self._state.cluster_cidr = cluster
            with self._nl_lock:
                self._bridge_index = index
            try:
                self._write_hostports_locked()
            except hostports.HostPortError as e:
                # Containers without hostPorts need no table; those with
                # them fail to start with this same message.
                log.warning("hostPorts unavailable on this node: %s", e)
            # Not ready without it (FirewallError is an OSError): a container
            # must never reach its node's agent because a rule is missing.
            self._write_guard_locked()
            self._disabled = False
            self._ready.set()
        log.info("node network ready bridge=%s gateway=%s/%d cluster_cidr=%s", self.bridge,
                 gateway, net.prefixlen, cluster)

    def _set_service_route_locked(self, rt: RtNetlink, index: int, text: str,
                                  cluster: IPv4Network) -> None:
        old = self._state.service_cidr
        service = None
        if text:
            try:
                service = check_service_cidr(text, cluster, rt.routes(socket.AF_INET))
            except NetworkError as e:
                log.error("no route to the virtual IPs: %s; the node's own connections to "
                          "them fail (containers' do not need it)", e)
        if old is not None and old != service:
            try:
                rt.delete_route(str(old), protocol=MCTL_RTPROT)
                log.info("route %s dev %s removed", old, self.bridge)
            except OSError as e:
                if e.errno != errno.ESRCH:
                    raise
        self._state.service_cidr = service
        if service is None:
            return
        try:
            # replace: safe, as check_service_cidr found no one else's route there.
            rt.add_route(str(service), oif=index, protocol=MCTL_RTPROT, replace=True)
            log.info("route %s dev %s (virtual IPs)", service, self.bridge)
        except OSError as e:
            # Containers need none of it: the node network is ready without
            # it, and repair() tries again on its next pass.
            log.warning("cannot route %s dev %s: %s", service, self.bridge, e)

    def sync_routes(self, peers: Iterable[PeerNode]) -> None:
        """Makes the routes to other nodes' subnets exactly those of `peers`."""
        own = self._state.subnet
        want: dict[str, str] = {}
        for p in peers:
            try:
                net = ipaddress.ip_network(p.subnet)
                via = ipaddress.IPv4Address(p.address)
            except ValueError:
                log.warning("ignoring node=%s with subnet=%r address=%r", p.name, p.subnet,
                            p.address)
                continue
            if via.is_loopback or via.is_unspecified:
                # Agents on one host's loopback share no link to route over.
                continue
            if own is not None and net == own:
                continue
            cluster = self._state.cluster_cidr
            if cluster is not None and not (net.version == 4 and net.subnet_of(cluster)):
                # Only container subnets are routed: never let a bad peer
                # entry take over the node's own traffic (say, 0.0.0.0/0).
                log.warning("ignoring node=%s subnet=%s outside the cluster CIDR %s", p.name,
                            net, cluster)
                continue
            want[str(net)] = p.address
        with self._lock:
            self._state.routes = dict(want)
        with netns.rtnl(self.node_netns) as rt:
            have = {r.destination: r.gateway
                    for r in rt.routes(socket.AF_INET, protocol=MCTL_RTPROT)}
            for dst, gateway in sorted(want.items()):
                if have.get(dst) == gateway:
                    continue
                try:
                    rt.add_route(dst, gateway=gateway, protocol=MCTL_RTPROT, replace=True)
                    log.info("route %s via %s", dst, gateway)
                except OSError as e:
                    # E.g. ENETUNREACH: the other node is not on this node's link.
                    log.warning("cannot route %s via %s: %s", dst, gateway, e)
            for dst in sorted(set(have) - set(want) - self._service_dst()):
                try:
                    rt.delete_route(dst, protocol=MCTL_RTPROT)
                    log.info("route %s removed", dst)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise

    # -- containers -----------------------------------------------------------------

    def netns_name(self, container_id: str) -> str:
        return self.netns_prefix + container_id

    def netns_path(self, container_id: str) -> str:
        return netns.path_of(self.netns_name(container_id))

    def attach(self, container_id: str, ports: Iterable[tuple[str, int, int]] = ()
               ) -> Attachment:
        """Gives the container its namespace, veth, address and hostPorts.

        `ports` are (protocol, host port, container port). On failure every
        step done so far is undone and NetworkError says which step failed.
        """
        subnet = self._state.subnet
        if subnet is None:
            raise NetworkError("the node has no subnet yet (not registered with the scheduler)")
        t0 = time.perf_counter()
        name = self.netns_name(container_id)
        veth = veth_name(self.bridge, container_id)
        step = "address"
        ip = ""
        try:
            ip = self.pool.allocate(subnet, container_id)
            step = "network namespace"
            if netns.exists(name):
                # Left by a crash between create and a recorded attachment.
                netns.remove(name)
            path = netns.create(name)
            step = "veth"
            self._make_veth(veth, path)
            step = "container interface"
            self._configure_inside(path, ip, subnet)
            att = Attachment(path, veth, ip, str(subnet),
                             tuple(hostports.Mapping(proto.lower(), host, ip, cport)
                                   for proto, host, cport in ports))
            if att.ports:
                step = "hostPort"
                with self._lock:
                    self._state.mappings[container_id] = att.ports
                    self._write_hostports_locked()
        except (OSError, IpamError, NetworkError, hostports.HostPortError) as e:
            self.detach(container_id, Attachment(netns.path_of(name), veth, ip, str(subnet)))
            raise NetworkError(f"network setup failed at {step}: {e}") from e
        log.info("container=%s attached ip=%s veth=%s netns=%s ms=%.1f", container_id, ip, veth,
                 name, (time.perf_counter() - t0) * 1000)
        return att

    def _node_link(self) -> tuple[RtNetlink, int]:
        """The kept netlink socket to the node's namespace and the bridge's index.

        Start is the hot path: the socket (opened on a thread of its own when
        the node has a namespace of its own) and the bridge's lookup are made
        once, not per container. Callers hold _nl_lock.
        """
        if self._nl is None:
            self._nl = netns.rtnl(self.node_netns)
        if self._bridge_index == 0:
            found = self._nl.link(self.bridge)
            if found is None:
                raise NetworkError(f"bridge {self.bridge} is gone")
            self._bridge_index = found.ifindex
        return self._nl, self._bridge_index

    def _make_veth(self, veth: str, netns_path: str) -> None:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with self._nl_lock:
                for attempt in range(3):
                    rt, bridge = self._node_link()
                    try:
                        # One request: the node end is born in the bridge and
                        # up, the container end in the container's namespace
                        # as eth0.
                        rt.add_veth(veth, "eth0", peer_netns_fd=fd, master=bridge, up=True)
                        # Hairpin: with br_netfilter loaded, a container's
                        # connection to its own service's virtual IP, DNATed
                        # back to itself, is bridged out the port it came
                        # in on (services.py).
                        rt.set_hairpin(veth)
                        return
                    except OSError as e:
                        if e.errno == errno.EEXIST and attempt == 0:
                            # Left by a crash with the same container id.
                            rt.delete_link(veth)
                        elif e.errno in (errno.ENODEV, errno.EINVAL) and attempt < 2:
                            self._bridge_index = 0      # the bridge was made anew
                        else:
                            raise
        finally:
            os.close(fd)

    @staticmethod
    def _configure_inside(netns_path: str, ip: str, subnet: IPv4Network) -> None:
        def inside() -> None:
            # In the container's namespace, on this thread: a new namespace
            # has lo at index 1, and the ioctl behind if_nametoindex saves a
            # netlink round trip.
            eth0 = socket.if_nametoindex("eth0")
            with RtNetlink() as rt:
                rt.set_link(1, up=True)
                rt.add_address(eth0, ip, subnet.prefixlen)
                rt.set_link(eth0, up=True)
                rt.add_route("default", gateway=str(gateway_of(subnet)), protocol=RTPROT_STATIC)
        netns.run_in(netns_path, inside)

    def adopt(self, container_id: str, att: Attachment) -> None:
        """Takes back a running container's attachment after an agent restart."""
        if att.ports:
            with self._lock:
                self._state.mappings[container_id] = att.ports
                if self._ready.is_set():
                    self._write_hostports_locked()

    def detach(self, container_id: str, att: Attachment | None) -> None:
        """Removes whatever the container holds; idempotent, also after a half-made attach."""
        name = self.netns_name(container_id)
        veth = att.veth if att is not None else veth_name(self.bridge, container_id)
        with self._lock:
            if self._state.mappings.pop(container_id, None) and self._ready.is_set():
                try:
                    self._write_hostports_locked()
                except hostports.HostPortError as e:
                    log.error("container=%s hostPorts not removed: %s", container_id, e)
        # Deleting one end of a veth deletes both, at once; removing the
        # namespace alone would leave it to the kernel's deferred cleanup.
        try:
            with netns.rtnl(self.node_netns) as rt:
                rt.delete_link(veth)
        except NetlinkError as e:
            if e.errno != errno.ENODEV:
                log.error("container=%s veth %s not removed: %s", container_id, veth, e)
        except OSError as e:     # the node's own namespace is gone (a local cluster's sweep)
            log.warning("container=%s veth %s not looked up: %s", container_id, veth, e)
        try:
            netns.remove(att.netns if att is not None else name)
        except OSError as e:
            log.error("container=%s network namespace not removed: %s", container_id, e)
        ip = att.ip if att is not None and att.ip else self.pool.owned_by(container_id)
        if ip:
            self.pool.release(ip, container_id)

    def forget_unowned(self, container_ids: set[str]) -> None:
        """Frees addresses and namespaces no container of `container_ids` holds (after a crash)."""
        for ip in self.pool.release_all_but(container_ids):
            log.info("freed address %s of a container that is gone", ip)
        owned = {self.netns_name(cid) for cid in container_ids}
        for name in netns.list_names(self.netns_prefix):
            if name not in owned:
                log.info("removing stray network namespace %s", name)
                netns.remove(name)

    def _in_node_netns(self, fn: Callable[[], T]) -> T:
        if self.node_netns is None:
            return fn()
        return netns.run_in(self.node_netns, fn)

    def _write_hostports_locked(self) -> None:
        mappings = [m for ms in self._state.mappings.values() for m in ms]
        listing = self._in_node_netns(lambda: hostports.apply(self.bridge, mappings))
        self._state.nft_refs[f"{hostports.FAMILY} {self.bridge}"] = listing

    def _write_guard_locked(self) -> None:
        cluster = self._state.cluster_cidr
        assert cluster is not None
        listing = self._in_node_netns(lambda: firewall.apply(self.bridge, cluster))
        self._state.nft_refs[f"{firewall.FAMILY} {firewall.table_name(self.bridge)}"] = listing

    # -- drift ------------------------------------------------------------------------

    def repair(self, attachments: Mapping[str, Attachment]) -> list[Repair]:
        """Puts back what differs from what the node network should be; returns what it did.

        Checked, with one dump each of links, IPv4 addresses and mctl's
        routes: the bridge (exists, up, has the gateway address), the
        routes to other nodes' subnets as last synced, forwarding, and the
        veth of each container of `attachments` (container id -> its
        attachment; containers being torn down must not be in it): it
        exists, is a port of the bridge and is up. A repair that fails
        (say, a route while the link to its gateway is down) is returned
        with outcome FAILED and tried again on the next call.
        """
        if not self._ready.is_set() or self._disabled:
            return []
        repairs: list[Repair] = []
        remake: list[tuple[str, Attachment]] = []
        with self._lock:
            subnet = self._state.subnet
            if subnet is None:
                return []
            with self._nl_lock:
                rt = self._kept_rtnl()
                links = {link.name: link for link in rt.links()}
                index = self._repair_bridge(rt, links.get(self.bridge), subnet, repairs)
                ours = rt.routes(socket.AF_INET, protocol=MCTL_RTPROT)
                if index:
                    self._repair_address(rt, index, subnet, repairs)
                    self._repair_veths(rt, index, links, attachments, repairs, remake)
                    self._repair_service_route(rt, index, ours, repairs)
                if self._state.routes is not None:
                    self._repair_routes(rt, self._state.routes, ours, self._service_dst(),
                                        repairs)
            self._repair_forwarding(repairs)
        for cid, att in remake:
            # A deleted veth takes the container's eth0 along: both are made
            # again, with the same address, as attach() made them.
            what = f"veth {att.veth} of container {cid}"
            try:
                self._make_veth(att.veth, att.netns)
                self._configure_inside(att.netns, att.ip, parse_subnet(att.subnet))
                repairs.append(Repair(what, "missing", f"re-made with {att.ip}"))
            except (OSError, IpamError, NetworkError) as e:
                repairs.append(Repair(what, "missing", f"not re-made: {e}", outcome=FAILED))
        return repairs

    def _kept_rtnl(self) -> RtNetlink:
        """The kept netlink socket (callers hold _nl_lock)."""
        if self._nl is None:
            self._nl = netns.rtnl(self.node_netns)
        return self._nl

    def _repair_bridge(self, rt: RtNetlink, bridge: Link | None, subnet: IPv4Network,
                       repairs: list[Repair]) -> int:
        what = f"bridge {self.bridge}"
        try:
            if bridge is None:
                rt.add_bridge(self.bridge, up=True)
                self._bridge_index = rt.index(self.bridge)
                # The same fixed MAC as configure() gives it: the containers'
                # neighbour entries for their gateway stay right.
                rt.set_link(self._bridge_index, mac=bridge_mac(gateway_of(subnet)))
                repairs.append(Repair(what, "missing", "re-made, up"))
                return self._bridge_index
            self._bridge_index = bridge.ifindex
            if not bridge.up:
                rt.set_link(bridge.ifindex, up=True)
                repairs.append(Repair(what, "down", "set up"))
            return bridge.ifindex
        except OSError as e:
            repairs.append(Repair(what, "missing" if bridge is None else "down", str(e),
                                  outcome=FAILED))
            return 0

    def _repair_address(self, rt: RtNetlink, index: int, subnet: IPv4Network,
                        repairs: list[Repair]) -> None:
        gateway = str(gateway_of(subnet))
        have = {(a.address, a.prefixlen) for a in rt.addresses(index, socket.AF_INET)}
        if (gateway, subnet.prefixlen) in have:
            return
        what = f"bridge {self.bridge} address {gateway}/{subnet.prefixlen}"
        try:
            rt.add_address(index, gateway, subnet.prefixlen)
            repairs.append(Repair(what, "missing", "re-added"))
        except OSError as e:
            repairs.append(Repair(what, "missing", str(e), outcome=FAILED))

    def _repair_veths(self, rt: RtNetlink, bridge: int, links: Mapping[str, Link],
                      attachments: Mapping[str, Attachment], repairs: list[Repair],
                      remake: list[tuple[str, Attachment]]) -> None:
        for cid, att in sorted(attachments.items()):
            link = links.get(att.veth)
            if link is None:
                if os.path.exists(att.netns):
                    remake.append((cid, att))
                continue
            if link.master == bridge and link.up:
                continue
            found = ", ".join(f for f, bad in (("not in the bridge", link.master != bridge),
                                                ("down", not link.up)) if bad)
            what = f"veth {att.veth} of container {cid}"
            try:
                rt.set_link(link.ifindex, up=True, master=bridge)
                repairs.append(Repair(what, found, f"put in {self.bridge}, up"))
            except OSError as e:
                repairs.append(Repair(what, found, str(e), outcome=FAILED))

    def _service_dst(self) -> set[str]:
        cidr = self._state.service_cidr
        return {str(cidr)} if cidr is not None else set()

    def _repair_service_route(self, rt: RtNetlink, bridge: int, ours: list[Route],
                              repairs: list[Repair]) -> None:
        cidr = self._state.service_cidr
        if cidr is None:
            return
        dst = str(cidr)
        have = [r for r in ours if r.destination == dst]
        if any(r.oif == bridge and not r.gateway for r in have):
            return
        found = "missing" if not have else "through another link"
        what = f"route {dst} dev {self.bridge}"
        try:
            # Only ours is replaced: a route someone else put there since
            # makes this fail (EEXIST) rather than be overwritten.
            rt.add_route(dst, oif=bridge, protocol=MCTL_RTPROT, replace=bool(have))
            repairs.append(Repair(what, found, "re-added"))
        except OSError as e:
            repairs.append(Repair(what, found, str(e), outcome=FAILED))

    @staticmethod
    def _repair_routes(rt: RtNetlink, want: Mapping[str, str], ours: list[Route],
                       keep: set[str], repairs: list[Repair]) -> None:
        have = {r.destination: r.gateway for r in ours if r.destination not in keep}
        for dst, gateway in sorted(want.items()):
            if have.get(dst) == gateway:
                continue
            found = "missing" if dst not in have else f"via {have[dst]}"
            what = f"route {dst} via {gateway}"
            try:
                rt.add_route(dst, gateway=gateway, protocol=MCTL_RTPROT, replace=True)
                repairs.append(Repair(what, found, "re-added"))
            except OSError as e:
                repairs.append(Repair(what, found, str(e), outcome=FAILED))
        for dst in sorted(set(have) - set(want)):
            what = f"route {dst} via {have[dst]}"
            try:
                rt.delete_route(dst, protocol=MCTL_RTPROT)
                repairs.append(Repair(what, "not ours to have", "removed"))
            except OSError as e:
                if e.errno != errno.ESRCH:
                    repairs.append(Repair(what, "not ours to have", str(e), FAILED))

    def _repair_forwarding(self, repairs: list[Repair]) -> None:
        path = "/proc/sys/" + FORWARD_SYSCTL.replace(".", "/")

        def read() -> str:
            with open(path) as f:
                return f.read().strip()

        try:
            if self._in_node_netns(read) == "1":
                return
            netns.write_sysctl(self.node_netns, FORWARD_SYSCTL, "1")
            repairs.append(Repair(FORWARD_SYSCTL, "0", "set to 1"))
        except OSError as e:
            repairs.append(Repair(FORWARD_SYSCTL, "unknown", str(e), outcome=FAILED))

    def repair_nft(self) -> list[Repair]:
        """Rewrites each nft table of the node's that differs from what was last written.

        One `nft list ruleset`; a table compares equal to the listing the
        kernel gave right after our own last write of it (stateless, so
        packet counters do not count as a change).
        """
        repairs: list[Repair] = []
        with self._lock:
            if not self._ready.is_set() or not self._state.nft_refs:
                return []
            try:
                live = self._in_node_netns(nft.tables)
            except nft.NftError as e:
                return [Repair("nftables", "not readable", str(e), outcome=FAILED)]
            for key, reference in sorted(self._state.nft_refs.items()):
                have = live.get(key, "")
                if have == reference:
                    continue
                found = "missing" if not have else "changed"
                what = f"nft table {key}"
                try:
                    if key.startswith(hostports.FAMILY + " "):
                        self._write_hostports_locked()
                    else:
                        self._write_guard_locked()
                    repairs.append(Repair(what, found, "rewritten"))
                except (hostports.HostPortError, firewall.FirewallError) as e:
                    repairs.append(Repair(what, found, str(e), outcome=FAILED))
        return repairs

    # -- everything ------------------------------------------------------------------

    def close(self) -> None:
        """Closes the kept netlink socket (the network itself stays)."""
        with self._nl_lock:
            if self._nl is not None:
                self._nl.close()
                self._nl = None
            self._bridge_index = 0

    def cleanup(self) -> None:
        """Removes the node side: routes, nft table, bridge, stray namespaces, IPAM state.

        Containers are removed first by their own teardown; whatever they
        left (a crash) goes here too.
        """
        self.forget_unowned(set())
        with netns.rtnl(self.node_netns) as rt:
            for r in rt.routes(socket.AF_INET, protocol=MCTL_RTPROT):
                try:
                    rt.delete_route(r.destination, protocol=MCTL_RTPROT)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
            try:
                rt.delete_link(self.bridge)
            except OSError as e:
                if e.errno != errno.ENODEV:
                    raise
        try:
            if self.node_netns is None:
                hostports.delete(self.bridge)
            else:
                netns.run_in(self.node_netns, lambda: hostports.delete(self.bridge))
        except hostports.HostPortError as e:
            log.error("nft table %s not removed: %s", self.bridge, e)
        try:
            self._in_node_netns(lambda: firewall.delete(self.bridge))
        except firewall.FirewallError as e:
            log.error("nft table %s not removed: %s", firewall.table_name(self.bridge), e)
        shutil.rmtree(self.dir, ignore_errors=True)
        with self._lock:
            self._state = _State()
            self._ready.clear()
        self.close()
        log.info("node network removed bridge=%s", self.bridge)
