"""This node's part of services: the nft table and the DNS responder, kept as the desired set says.

The scheduler sends every node all services with their endpoints in each
desired set (no agent talks to etcd). The node loop hands them here
(set()) and calls sync() on every pass: the services table (services.py)
is rewritten when what it balances changed, and the DNS responder (dns.py)
gets the new names at once. The responder listens on the bridge's address
(the containers' gateway and nameserver), so it is started once the node
network is ready, and again on another address if the subnet changes;
a failed start is retried on the next pass, as is a responder whose
thread or socket died (re-opened, and logged as drift).

Drift: the self-check's nft pass (selfcheck.py) calls repair(), which
compares the kernel's listing of the table with the one it gave right
after our last write (as network.py does for its tables) and rewrites the
table on any difference: a flushed or deleted table balances again within
one pass.

On agent stop the responder closes (no socket stays) and the table stays,
so the kernel keeps balancing for running containers until a new agent
rewrites it from its first desired set; remove() takes the table away
when the node's network goes (cleanup).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from mctl.common import netns
from mctl.v1 import agent_pb2

from . import dns, nft, services
from .containers import ContainerManager
from .debug import table as text_table
from .drift import FAILED, Repair
from .ipam import gateway_of
from .network import NodeNetwork
from .services import VirtualService

log = logging.getLogger(__name__)

T = TypeVar("T")


class NodeServices:
    def __init__(self, manager: ContainerManager, dns_port: int = 53,
                 resolv_conf: str = dns.RESOLV_CONF) -> None:
        self.manager = manager
        self.dns_port = dns_port
        self.resolv_conf = resolv_conf
        self._services: list[VirtualService] | None = None   # None: no desired set yet
        self._applied: list[VirtualService] | None = None
        self._reference = ""        # the kernel's listing right after our last write
        self._table_error = ""
        self._dns: dns.Responder | None = None
        self._dns_error = ""

    @property
    def network(self) -> NodeNetwork | None:
        """The node network (read when used: the manager's may be set up later)."""
        return self.manager.network

    def set(self, wanted: list[agent_pb2.Service]) -> None:
        """Takes the services of a new desired set (applied by the next sync)."""
        self._services = services.normalize(wanted)

    def _in_node_netns(self, fn: Callable[[], T]) -> T:
        assert self.network is not None
        if self.network.node_netns is None:
            return fn()
        return netns.run_in(self.network.node_netns, fn)

    def sync(self) -> None:
        """Brings the table and the responder in line with the last set(); never raises."""
        network = self.network
        wanted = self._services
        if network is None or not network.ready or network.subnet is None or wanted is None:
            return
        if wanted != self._applied:
            table = services.table_name(network.bridge)
            try:
                self._reference = self._in_node_netns(lambda: services.apply(table, wanted))
                self._applied = wanted
                self._table_error = ""
            except services.ServiceTableError as e:
                if str(e) != self._table_error:
                    log.error("services table %s not written: %s", table, e)
                self._table_error = str(e)
        self._sync_dns(str(gateway_of(network.subnet)), wanted)

    def _sync_dns(self, address: str, wanted: list[VirtualService]) -> None:
        if self._dns is not None and self._dns.address != address:
            self._dns.close()
            self._dns = None
        elif self._dns is not None and not self._dns.serving:
            log.warning("drift found: dns responder on %s:%d not serving; re-opened",
                        address, self.dns_port)
            self._dns.close()
            self._dns = None
        if self._dns is None:
            try:
                # Made in the node's namespace (where the bridge address is).
                udp, tcp = self._in_node_netns(lambda: dns.bind_pair(address, self.dns_port))
                self._dns = dns.Responder(address, resolv_conf=self.resolv_conf,
                                          udp=udp, tcp=tcp)
                self._dns_error = ""
            except OSError as e:
                if str(e) != self._dns_error:
                    log.error("dns responder not started on %s:%d: %s", address,
                              self.dns_port, e)
                self._dns_error = str(e)
                return
        names = dns.build_names(wanted)
        if names != self._dns.names:
            self._dns.set_names(names)

    def repair(self) -> list[Repair]:
        """Rewrites the services table if it differs from our last write (selfcheck's nft pass)."""
        network = self.network
        wanted = self._applied
        if network is None or not network.ready or wanted is None or not self._reference:
            return []
        table = services.table_name(network.bridge)
        what = f"nft table {services.FAMILY} {table}"
        try:
            have = self._in_node_netns(lambda: nft.table(services.FAMILY, table))
        except nft.NftError as e:
            return [Repair(what, "not readable", str(e), outcome=FAILED)]
        if have == self._reference:
            return []
        found = "missing" if not have else "changed"
        try:
            self._reference = self._in_node_netns(lambda: services.apply(table, wanted))
        except services.ServiceTableError as e:
            return [Repair(what, found, str(e), outcome=FAILED)]
        return [Repair(what, found, "rewritten")]

    def close(self) -> None:
        """Stops answering DNS; the table stays for the containers that keep running."""
        if self._dns is not None:
            self._dns.close()
            self._dns = None

    def remove(self) -> None:
        """Closes the responder and removes the table (the node network goes)."""
        self.close()
        if self.network is not None:
            remove_table(self.network)
        self._applied = None
        self._reference = ""

    def view(self) -> list[str]:
        """`mctl debug node NODE services`: the table's services, endpoints and names."""
        wanted = self._services
        if wanted is None:
            return ["no desired set received yet"]
        lines = []
        if self.network is not None:
            lines.append(f"nft table: {services.FAMILY} {services.table_name(self.network.bridge)}"
                         + (f" (NOT WRITTEN: {self._table_error})" if self._table_error else
                            "" if wanted == self._applied else " (not written yet)"))
        lines.append(f"dns: {self._dns.address}:{self._dns.port} (udp, tcp)" if self._dns
                     else f"dns: not listening{': ' + self._dns_error if self._dns_error else ''}")
        if not wanted:
            return [*lines, "no services"]
        rows = []
        for s in wanted:
            ports = ",".join(f"{p.port}/{p.protocol}" + (f"({p.name})" if p.name else "")
                             for p in s.ports) or "-"
            base = f"{s.workload}.{s.namespace}.{dns.ZONE}"
            rows.append([f"{s.namespace}/{s.workload}", s.virtual_ip or "-", ports,
                         f"{len(s.ready_ips)}/{len(s.endpoints)}", base])
            for e in s.endpoints:
                rows.append([f"  {e.replica}", e.ip, "", "ready" if e.ready else "not ready",
                             f"{e.replica}.{base}"])
        return [*lines, "", *text_table(["SERVICE", "ADDRESS", "PORTS", "READY", "DNS NAME"], rows)]


def remove_table(network: NodeNetwork) -> None:
    """Removes the node's services table if it exists; logs a failure."""
    table = services.table_name(network.bridge)
    try:
        if network.node_netns is None:
            services.delete(table)
        else:
            netns.run_in(network.node_netns, lambda: services.delete(table))
    except services.ServiceTableError as e:
        log.error("nft table %s not removed: %s", table, e)
