"""The local cluster's network: every node in its own network namespace, as if on its own VM.

    host:  bridge mctl<id>  172.30.0.1/24   (the scheduler listens here)
             |-- mctl<id>n1  <->  eth0 172.30.0.2/24  in netns mctl-<id>-node1  (agent node1)
             |-- mctl<id>n2  <->  eth0 172.30.0.3/24  in netns mctl-<id>-node2  (agent node2)
             ...

Each agent runs inside its node's namespace (`mctl-agent --netns`), listens
on its node's address and reaches the scheduler at the bridge's address;
the CLI on the host reaches both through the bridge. Containers get
addresses from the cluster CIDR (the scheduler gives each node a subnet
of it) and the agents route between nodes over this bridge: the bridge
is the "switch" the "VMs" share. Nothing is routed off the host.

The node network defaults to the first /24 of 172.30.0.0/16 that no
route of this machine (and no other local cluster) covers; `--node-cidr`
and `--cluster-cidr` choose them, and both are checked against the
machine's routes. Every object is named with the cluster id, recorded in
cluster.json before it is made, and also swept by name on `down`, so a
crash at any point leaves nothing `down` (or the next `up`) misses.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from ipaddress import IPv4Network
from typing import TypedDict

from mctl.common import netns
from mctl.common.ipnet import parse_ipv4_network
from mctl.common.rtnetlink import RT_TABLE_MAIN, RtNetlink

log = logging.getLogger(__name__)

NODE_CIDR_POOL = IPv4Network("172.30.0.0/16")
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
AGENT_PORT = 7071


class NetworkSetupError(Exception):
    """The local cluster's network cannot be made as asked; the message names the flag."""


class NodeNetwork(TypedDict):
    """One node's part of the plan (cluster.json "network" -> "nodes" -> name)."""

    netns: str               # its network namespace, mctl-<id>-nodeN
    veth: str                # the host end of its veth, in the bridge
    ip: str                  # its address on the node network


class NetworkPlan(TypedDict):
    """The local cluster's network as recorded in cluster.json ("network")."""

    bridge: str
    node_cidr: str
    cluster_cidr: str
    host_ip: str             # the bridge's address: where the scheduler listens
    nodes: dict[str, NodeNetwork]


def bridge_name(cluster_id: str) -> str:
    return f"mctl{cluster_id}"                     # 10 characters: IFNAMSIZ is 15


def node_veth(cluster_id: str, index: int) -> str:
    return f"mctl{cluster_id}n{index}"


def node_netns(cluster_id: str, node: str) -> str:
    return f"mctl-{cluster_id}-{node}"


def host_routes(exclude_link: str = "") -> list[tuple[IPv4Network, str]]:
    """This machine's IPv4 routes (main table, default route left out) and their devices."""
    out: list[tuple[IPv4Network, str]] = []
    with RtNetlink() as rt:
        names = {link.ifindex: link.name for link in rt.links()}
        for r in rt.routes(socket.AF_INET, table=RT_TABLE_MAIN):
            if r.dst_len == 0:
                continue
            dev = names.get(r.oif, "?")
            if dev == exclude_link:
                continue
            out.append((IPv4Network(r.destination), dev))
    return out


def _parse(flag: str, text: str) -> IPv4Network:
    try:
        net = parse_ipv4_network(text, flag)
    except ValueError as e:
        raise NetworkSetupError(str(e)) from None
    if net.is_loopback or net.is_multicast or net.is_link_local:
        raise NetworkSetupError(f"{flag} {text!r}: not a usable unicast range")
    return net


def _collision(net: IPv4Network, routes: list[tuple[IPv4Network, str]]) -> str:
    for dst, dev in routes:
        if net.overlaps(dst):
            return f"{dst} dev {dev}"
    return ""


def choose(cluster_id: str, nodes: int, node_cidr: str, cluster_cidr: str) -> NetworkPlan:
    """The network plan for cluster.json: checked, with no object made yet."""
    routes = host_routes(exclude_link=bridge_name(cluster_id))
    cluster = _parse("--cluster-cidr", cluster_cidr or DEFAULT_CLUSTER_CIDR)
    hit = _collision(cluster, routes)
    if hit:
        raise NetworkSetupError(f"--cluster-cidr {cluster} overlaps this machine's route {hit}")
    if node_cidr:
        node_net = _parse("--node-cidr", node_cidr)
        hit = _collision(node_net, routes)
        if hit:
            raise NetworkSetupError(f"--node-cidr {node_net} overlaps this machine's route {hit}")
    else:
        free = [n for n in NODE_CIDR_POOL.subnets(new_prefix=24)
                if not _collision(n, routes) and not n.overlaps(cluster)]
        if not free:
            raise NetworkSetupError(f"no free /24 left in {NODE_CIDR_POOL}; give --node-cidr")
        node_net = free[0]
    if node_net.overlaps(cluster):
        raise NetworkSetupError(f"--node-cidr {node_net} overlaps --cluster-cidr {cluster}")
    hosts = list(node_net.hosts())
    if len(hosts) < nodes + 1:
        raise NetworkSetupError(f"--node-cidr {node_net} has room for {len(hosts) - 1} nodes, "
                                f"not {nodes}")
    plan: NetworkPlan = {
        "bridge": bridge_name(cluster_id),
        "node_cidr": str(node_net),
        "cluster_cidr": str(cluster),
        "host_ip": str(hosts[0]),
        "nodes": {},
    }
    for i in range(1, nodes + 1):
        plan_node(plan, cluster_id, i)
    return plan


def plan_node(plan: NetworkPlan, cluster_id: str, i: int) -> None:
    """Adds node `i` (its namespace, veth and address) to the plan."""
    hosts = IPv4Network(plan["node_cidr"]).hosts()
    ip = next((h for n, h in enumerate(hosts) if n == i), None)
    if ip is None:
        raise NetworkSetupError(f"node network {plan['node_cidr']} has no room for node{i}")
    plan["nodes"][f"node{i}"] = {
        "netns": node_netns(cluster_id, f"node{i}"), "veth": node_veth(cluster_id, i),
        "ip": str(ip)}


class _Lock:
    """Serializes choosing and claiming a node network among `cluster up`s on this machine."""

    def __enter__(self) -> _Lock:
        os.makedirs(netns.NETNS_DIR, exist_ok=True)
        self.fd = os.open(netns.NETNS_DIR, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def lock() -> _Lock:
    return _Lock()


def create_bridge(plan: NetworkPlan) -> None:
    prefix = IPv4Network(plan["node_cidr"]).prefixlen
    with RtNetlink() as rt:
        rt.add_bridge(plan["bridge"])
        index = rt.index(plan["bridge"])
        rt.add_address(index, plan["host_ip"], prefix)
        rt.set_link(index, up=True)


def create_node(plan: NetworkPlan, node: str) -> None:
    """The node's namespace, its veth into the bridge and its address."""
    info = plan["nodes"][node]
    prefix = IPv4Network(plan["node_cidr"]).prefixlen
    path = netns.create(info["netns"])
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with RtNetlink() as rt:
            bridge = rt.index(plan["bridge"])
            rt.add_veth(info["veth"], "eth0", peer_netns_fd=fd, master=bridge, up=True)
    finally:
        os.close(fd)
    with netns.rtnl(info["netns"]) as rt:
        rt.set_link("lo", up=True)
        eth0 = rt.index("eth0")
        rt.add_address(eth0, info["ip"], prefix)
        rt.set_link(eth0, up=True)


def agent_flags(plan: NetworkPlan, node: str) -> list[str]:
    info = plan["nodes"][node]
    return ["--netns", info["netns"], "--netns-prefix", f"{info['netns']}-",
            "--listen", f"{info['ip']}:{AGENT_PORT}"]


def cleanup_flags(plan: NetworkPlan | None, node: str) -> list[str]:
    if not plan or node not in plan.get("nodes", {}):
        return []
    info = plan["nodes"][node]
    return ["--netns", info["netns"], "--netns-prefix", f"{info['netns']}-"]


def remove(cluster_id: str, plan: NetworkPlan | None) -> list[str]:
    """Removes every namespace and link of the cluster (recorded or named for it).

    Returns what was removed, for the log.
    """
    removed: list[str] = []
    names = set(netns.list_names(f"mctl-{cluster_id}-"))
    if plan:
        names |= {n["netns"] for n in plan.get("nodes", {}).values()}
    # Containers' namespaces first (mctl-<id>-nodeN-<container>), then the nodes'.
    for name in sorted(names, key=len, reverse=True):
        try:
            if netns.remove(name):
                removed.append(f"netns {name}")
        except OSError as e:
            log.warning("network namespace %s not removed: %s", name, e)
    with RtNetlink() as rt:
        for link in rt.links():
            if link.name.startswith(bridge_name(cluster_id)):
                try:
                    rt.delete_link(link.ifindex)
                    removed.append(f"link {link.name}")
                except OSError as e:
                    # A veth whose peer's namespace just went is gone already.
                    if e.errno != errno.ENODEV:
                        log.warning("link %s not removed: %s", link.name, e)
    return removed


def leftovers(cluster_id: str) -> list[str]:
    """Namespaces and links named for the cluster that still exist."""
    found = [f"netns {n}" for n in netns.list_names(f"mctl-{cluster_id}-")]
    with RtNetlink() as rt:
        found += [f"link {link.name}" for link in rt.links()
                  if link.name.startswith(bridge_name(cluster_id))]
    return found


def describe(plan: NetworkPlan) -> list[str]:
    """Lines for `cluster status`."""
    lines = [f"network: bridge {plan['bridge']} {plan['host_ip']} (node network "
             f"{plan['node_cidr']}), containers from {plan['cluster_cidr']}"]
    present = set(netns.list_names("mctl-"))
    for name, info in plan["nodes"].items():
        state = "" if info["netns"] in present else "  (namespace MISSING)"
        lines.append(f"  {name:<10} {info['ip']:<15} netns {info['netns']}{state}")
    return lines


def ensure_node(plan: NetworkPlan, node: str) -> list[str]:
    """Makes again the bridge and the node's namespace if they are gone (a reboot, a hand).

    For restarting an agent: it enters its node's namespace and fails
    without it. Returns what was made, for the log.
    """
    made = []
    with RtNetlink() as rt:
        has_bridge = any(link.name == plan["bridge"] for link in rt.links())
    if not has_bridge:
        create_bridge(plan)
        made.append(f"bridge {plan['bridge']}")
    if not netns.exists(plan["nodes"][node]["netns"]):
        create_node(plan, node)
        made.append(f"netns {plan['nodes'][node]['netns']}")
    return made
