"""The node's guard: containers may not open connections to the node itself.

A container's default route is its node's bridge, so without a rule it
could connect to anything the node listens on: the agent's API (which runs
containers), etcd or the scheduler on a local cluster, sshd on a real
machine. One nftables table per node network, `<bridge>_guard` (inet, so
IPv4 and IPv6), filters what arrives for the node's own addresses (the
input hook sees only traffic addressed to the node; what it routes
between containers, to other nodes or through a hostPort DNAT goes through
forward and is left alone):

- replies to connections the node opened are let in (conntrack's
  established/related), which is how health checks (tcpPort, from the
  agent to the container) and the node's own traffic keep working;
- ICMP is let in (ping of the gateway, and ICMPv6 neighbour discovery,
  without which IPv6 on the bridge would not work);
- DNS (UDP and TCP port 53) to the bridge's own address is let in: the
  node's DNS responder listens there for its containers (dns.py);
- everything else from the bridge is dropped, whatever source address a
  container with CAP_NET_RAW writes on its packets;
- and so is everything from the cluster's container addresses arriving on
  another link: other nodes' containers, routed to this node without NAT.

The table is written in one `nft -f` transaction when the node network is
set up (network.py), written again when the agent finds it changed by
someone else (its drift check), and removed with the node network. Man
pages: nft(8) (`ct state`, `iifname`), nftables' wiki "Netfilter hooks".
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Network

from . import nft

log = logging.getLogger(__name__)


class FirewallError(OSError):
    """The guard table could not be written or removed; the message says why."""


def table_name(bridge: str) -> str:
    """The guard's table for a node bridge (bridges are unique per network namespace)."""
    return f"{bridge}_guard"


def ruleset(bridge: str, cluster_cidr: IPv4Network) -> str:
    """The `nft -f` text that replaces the guard table of `bridge`."""
    table = table_name(bridge)
    return "\n".join([
        # "add" then "delete": the delete works whether or not the table
        # existed, and the whole text is one transaction.
        f"add table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    ct state established,related accept",
        f'    iifname "{bridge}" meta l4proto {{ icmp, ipv6-icmp }} accept',
        # `fib daddr . iif`: only an address of the bridge itself.
        f'    iifname "{bridge}" fib daddr . iif type local meta l4proto {{ tcp, udp }} '
        "th dport 53 accept",
        f'    iifname "{bridge}" counter drop',
        f"    ip saddr {cluster_cidr} meta l4proto icmp accept",
        f"    ip saddr {cluster_cidr} counter drop",
        "  }",
        "}",
        "",
    ])


def _nft(script: str) -> None:
    try:
        nft.run(script, "the node's guard")
    except nft.NftError as e:
        raise FirewallError(str(e)) from None


FAMILY = "inet"


def apply(bridge: str, cluster_cidr: IPv4Network) -> str:
    """Makes the guard of `bridge` drop new connections from containers to this node.

    Returns the table as the kernel has it (stateless: counters left out),
    the reference for network.py's drift check.
    """
    _nft(ruleset(bridge, cluster_cidr))
    log.info("nft table=%s guards the node from bridge=%s and %s", table_name(bridge), bridge,
             cluster_cidr)
    try:
        return nft.table(FAMILY, table_name(bridge))
    except nft.NftError as e:
        raise FirewallError(str(e)) from None


def delete(bridge: str) -> None:
    """Removes the guard table of `bridge` if it exists."""
    if nft.binary() is None:
        return
    table = table_name(bridge)
    _nft(f"add table inet {table}\ndelete table inet {table}\n")
