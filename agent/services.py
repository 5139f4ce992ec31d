"""Services in the kernel: each workload's virtual IP balanced over its ready replicas by nftables.

Every node balances every service (a container on any node reaches any
virtual IP through its own node), in one nftables table of its own per node
network, `<bridge>_services` (next to hostports.py's `<bridge>` table and
firewall.py's guard). The layout follows kube-proxy's nftables mode:

    map service_ports   VIP . protocol . port  ->  goto the service's chain
    chain svc_<namespace>_<workload>
        dnat to numgen random mod N map { 0 : ep0, 1 : ep1, ... }
    set endpoint_pairs  ep . ep, for every endpoint (hairpin, below)
    set virtual_ips     every VIP (rejecting what no endpoint takes)

- nat prerouting looks every new connection from the bridge (containers)
  and from other nodes up in the map; nat output does the same for those
  the node itself opens. The endpoint keeps the port (a service port is
  also the container port), so one chain per service serves all its ports,
  and `numgen random` spreads new connections evenly; conntrack then keeps
  each connection on the endpoint it got and rewrites the replies.
- Hairpin: a replica that reaches its own workload's VIP and is sent to
  itself would see a packet from its own address and answer it directly,
  never through the node's conntrack. nat postrouting masquerades exactly
  those packets (DNATed, source = destination, from the set), so the reply
  goes back through the node.
- A VIP with no ready endpoint, or a port the service does not have, is
  not DNATed; filter chains on forward and output then reject it (TCP
  reset, ICMP port unreachable for the rest) so a client fails at once
  instead of waiting for a timeout.

The table is written whole, in one `nft -f` transaction (add, delete and
define the table), whenever the services or their ready endpoints change,
so a new connection sees either the old or the new set, never half of
one. Nothing of the agent sits in the data path: the table and conntrack
keep balancing and keep established connections while the agent restarts,
and a new agent rewrites the table from the first desired set it gets
(conntrack is never flushed, so connections made before keep their
endpoint).

Everything written into the nft text comes from the desired set, so
`normalize` parses addresses and checks names and ports before a word of
it reaches nft. Man pages: nft(8) (maps, verdict maps, `numgen`, `ct
status`, `reject`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mctl.v1 import agent_pb2

from . import nft

log = logging.getLogger(__name__)

FAMILY = "ip"
PROTOCOLS = ("tcp", "udp")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ServiceTableError(Exception):
    """The services table could not be written or removed; the message says why."""


@dataclass(frozen=True, order=True)
class Endpoint:
    replica: str
    ip: str
    ready: bool


@dataclass(frozen=True, order=True)
class ServicePort:
    protocol: str       # "tcp" or "udp"
    port: int
    name: str = ""


@dataclass(frozen=True, order=True)
class VirtualService:
    namespace: str
    workload: str
    virtual_ip: str                    # "" if the workload has none (no ports)
    ports: tuple[ServicePort, ...]
    endpoints: tuple[Endpoint, ...]

    @property
    def ready_ips(self) -> tuple[str, ...]:
        """The addresses traffic goes to, each once, in a stable order."""
        return tuple(sorted({e.ip for e in self.endpoints if e.ready}))


def table_name(bridge: str) -> str:
    """The services table of a node bridge (bridges are unique per network namespace)."""
    return f"{bridge}_services"


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def normalize(services: Iterable[agent_pb2.Service]) -> list[VirtualService]:
    """The desired set's services as plain values, with whatever nft must not see dropped.

    A name that is not a DNS label, an address that is not IPv4, a port out
    of range or a protocol other than TCP/UDP is skipped with a warning (the
    scheduler validates all of it; this keeps one bad entry from making
    the whole nft transaction fail). A VIP claimed twice keeps its first
    service in (namespace, workload) order.
    """
    out: list[VirtualService] = []
    vips: set[str] = set()
    for s in sorted(services, key=lambda s: (s.namespace, s.workload)):
        what = f"service {s.namespace}/{s.workload}"
        if not (_LABEL.match(s.namespace) and _LABEL.match(s.workload)):
            log.warning("%s skipped: its names are not DNS labels", what)
            continue
        vip = ""
        if s.virtual_ip:
            vip = _ipv4(s.virtual_ip) or ""
            if not vip:
                log.warning("%s: virtual IP %r is not an IPv4 address", what, s.virtual_ip)
            elif vip in vips:
                log.warning("%s: virtual IP %s is taken by another service", what, vip)
                vip = ""
            else:
                vips.add(vip)
        ports = set()
        for p in s.ports:
            proto = (p.protocol or "TCP").lower()
            if proto in PROTOCOLS and 0 < p.port < 65536:
                ports.add(ServicePort(proto, p.port, p.name))
            else:
                log.warning("%s: port %s/%d skipped", what, p.protocol, p.port)
        endpoints = set()
        for e in s.endpoints:
            ip = _ipv4(e.ip)
            if ip is None or not _LABEL.match(e.replica):
                log.warning("%s: endpoint %r %r skipped", what, e.replica, e.ip)
                continue
            endpoints.add(Endpoint(e.replica, ip, e.ready))
        out.append(VirtualService(s.namespace, s.workload, vip, tuple(sorted(ports)),
                                  tuple(sorted(endpoints))))
    return out


def chain_name(s: VirtualService) -> str:
    # Labels hold no "_", so namespace and workload cannot run together.
    return f"svc_{s.namespace}_{s.workload}"


def ruleset(table: str, services: Iterable[VirtualService]) -> str:
    """The `nft -f` text that replaces `table` with one balancing `services` (pure)."""
    balanced = [s for s in sorted(services) if s.virtual_ip and s.ports]
    routed = [s for s in balanced if s.ready_ips]
    vips = sorted({s.virtual_ip for s in balanced}, key=ipaddress.IPv4Address)
    ports = sorted(f"{s.virtual_ip} . {p.protocol} . {p.port} : goto {chain_name(s)}"
                   for s in routed for p in s.ports)
    pairs = sorted({f"{ip} . {ip}" for s in routed for ip in s.ready_ips})

    def elements(items: list[str]) -> list[str]:
        return [f"    elements = {{ {', '.join(items)} }}"] if items else []

    lines = [
        # "add" then "delete": the delete works whether or not the table
        # existed, and the whole text is one transaction.
        f"add table ip {table}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  set virtual_ips {",
        "    type ipv4_addr",
        *elements(vips),
        "  }",
        "  set endpoint_pairs {",
        "    type ipv4_addr . ipv4_addr",
        *elements(pairs),
        "  }",
        "  map service_ports {",
        "    type ipv4_addr . inet_proto . inet_service : verdict",
        *elements(ports),
        "  }",
    ]
    for s in routed:
        targets = ", ".join(f"{i} : {ip}" for i, ip in enumerate(s.ready_ips))
        lines += [
            f"  chain {chain_name(s)} {{",
            f"    dnat to numgen random mod {len(s.ready_ips)} map {{ {targets} }}",
            "  }",
        ]
    lookup = "ip daddr . meta l4proto . th dport vmap @service_ports"
    reject = ["    ip daddr @virtual_ips meta l4proto tcp reject with tcp reset",
              "    ip daddr @virtual_ips reject with icmp type port-unreachable"]
    lines += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    {lookup}",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        f"    {lookup}",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    ct status dnat ip saddr . ip daddr @endpoint_pairs masquerade",
        "  }",
        # After DNAT (nat hooks run at -100), so what still goes to a VIP
        # here found no endpoint.
        "  chain reject_forward {",
        "    type filter hook forward priority filter; policy accept;",
        *reject,
        "  }",
        "  chain reject_output {",
        "    type filter hook output priority filter; policy accept;",
        *reject,
        "  }",
        "}",
        "",
    ]
    return "\n".join(lines)


def _nft(script: str) -> None:
    try:
        nft.run(script, "services")
    except nft.NftError as e:
        raise ServiceTableError(str(e)) from None


def apply(table: str, services: Iterable[VirtualService]) -> str:
    """Makes `table` balance exactly `services`, atomically; returns the kernel's listing of it."""
    services = list(services)
    _nft(ruleset(table, services))
    log.info("nft table=%s services=%s", table,
             ",".join(f"{s.namespace}/{s.workload}={s.virtual_ip}x{len(s.ready_ips)}"
                      for s in services if s.virtual_ip) or "none")
    try:
        return nft.table(FAMILY, table)
    except nft.NftError as e:
        raise ServiceTableError(str(e)) from None


def delete(table: str) -> None:
    """Removes `table` if it exists."""
    if nft.binary() is None:
        return
    _nft(f"add table ip {table}\ndelete table ip {table}\n")
