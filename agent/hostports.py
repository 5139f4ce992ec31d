"""hostPort: a container port published on its node's addresses, by nftables DNAT.

One nftables table per node network (named after its bridge) holds a map
`(protocol, host port) -> (container address, container port)` and two NAT
chains that look every new connection to a local address up in it:
prerouting for connections from elsewhere (the host, other nodes and their
containers), output for those the node itself opens. Conntrack rewrites the
replies back, so the kernel does all the work and nothing of the agent sits
in the data path: a published port keeps working while the agent restarts,
like the container behind it (a userspace proxy would not, and would hide
the client's address).

The whole table is written in one `nft -f` transaction whenever the set of
mappings changes (a container with hostPorts starts or goes), so there is
never a moment with half of it, and a restarted agent rewrites it from the
containers it adopts; the agent rewrites it too when it finds it changed
by someone else (network.py's drift check). Connections to 127.0.0.0/8
are left alone: the kernel does not route DNATed loopback traffic out of
the node.

Man pages: nft(8) (maps, `fib`, `dnat`), conntrack-tools for the state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from . import nft

log = logging.getLogger(__name__)


class HostPortError(Exception):
    """The nftables table could not be written; the message is for the user."""


@dataclass(frozen=True, order=True)
class Mapping:
    protocol: str        # "tcp" or "udp"
    host_port: int
    address: str         # the container's address
    container_port: int

    def to_list(self) -> list[object]:
        return [self.protocol, self.host_port, self.address, self.container_port]

    @classmethod
    def from_list(cls, item: list[object]) -> Mapping:
        proto, host, address, port = item
        return cls(str(proto), int(str(host)), str(address), int(str(port)))


def ruleset(table: str, mappings: Iterable[Mapping]) -> str:
    """The `nft -f` text that replaces `table` with one holding `mappings`."""
    elements = ", ".join(f"{m.protocol} . {m.host_port} : {m.address} . {m.container_port}"
                         for m in sorted(mappings))
    return "\n".join([
        # "add" then "delete" makes the delete succeed whether or not the
        # table existed; all lines are one transaction.
        f"add table ip {table}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  map hostports {",
        "    type inet_proto . inet_service : ipv4_addr . inet_service",
        *([f"    elements = {{ {elements} }}"] if elements else []),
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local dnat ip to meta l4proto . th dport map @hostports",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    ip daddr != 127.0.0.0/8 fib daddr type local "
        "dnat ip to meta l4proto . th dport map @hostports",
        "  }",
        "}",
        "",
    ])


def _nft(script: str) -> None:
    try:
        nft.run(script, "hostPort")
    except nft.NftError as e:
        raise HostPortError(str(e)) from None


FAMILY = "ip"


def apply(table: str, mappings: Iterable[Mapping]) -> str:
    """Makes `table` hold exactly `mappings`, atomically; returns the table as the kernel has it.

    The returned text (stateless: see nft.py) is what a later listing must
    equal while nobody else touched the table (network.py's drift check).
    """
    mappings = list(mappings)
    _nft(ruleset(table, mappings))
    log.info("nft table=%s hostports=%s", table,
             ",".join(f"{m.protocol}/{m.host_port}->{m.address}:{m.container_port}"
                      for m in sorted(mappings)) or "none")
    try:
        return nft.table(FAMILY, table)
    except nft.NftError as e:
        raise HostPortError(str(e)) from None


def delete(table: str) -> None:
    """Removes `table` if it exists."""
    if nft.binary() is None:
        return
    _nft(f"add table ip {table}\ndelete table ip {table}\n")
