"""Container addresses from the node's subnet (IPAM), kept on disk.

Like CNI's host-local plugin: every address in use is one claim file in
the pool's directory, named by the address and holding its owner (a
container id; claims.py).

The subnet's first address is the gateway (the node's bridge); the
network and broadcast addresses are never handed out. Allocation goes
round-robin from the last address handed out, so an address just freed is
not reused at once while a peer may still have it in /etc/hosts.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from mctl.common.claims import Claims
from mctl.common.ipnet import parse_ipv4_network


class IpamError(Exception):
    """No address could be given out (the subnet is full, or bad input)."""


def parse_subnet(text: str) -> IPv4Network:
    try:
        net = parse_ipv4_network(text, "subnet")
    except ValueError as e:
        raise IpamError(str(e)) from None
    if net.num_addresses < 4:
        raise IpamError(f"subnet {text!r}: too small for a gateway and a container")
    return net


def gateway_of(subnet: IPv4Network) -> IPv4Address:
    """The node's own address in the subnet: the first host address."""
    return subnet.network_address + 1


def next_free(subnet: IPv4Network, taken: set[IPv4Address],
              last: IPv4Address | None = None) -> IPv4Address | None:
    """The first free container address after `last`, wrapping around; None when full."""
    first = int(subnet.network_address) + 2            # after network and gateway
    end = int(subnet.broadcast_address) - 1            # before broadcast
    count = end - first + 1
    start = first
    if last is not None and first <= int(last) <= end:
        start = int(last) + 1
    for i in range(count):
        candidate = IPv4Address(first + (start - first + i) % count)
        if candidate not in taken:
            return candidate
    return None


class AddressPool:
    """The addresses this node's containers hold, one claim file each under `directory`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._claims = Claims(directory, lambda name: not name.endswith(".tmp"))
        # Where round-robin goes on from; a restarted agent starts over at
        # the beginning, skipping the addresses its adopted containers hold.
        self._last: IPv4Address | None = None

    def held(self) -> dict[str, str]:
        """address -> owner, for every address handed out."""
        return self._claims.held()

    def owned_by(self, owner: str) -> str | None:
        for ip, who in self.held().items():
            if who == owner:
                return ip
        return None

    def allocate(self, subnet: IPv4Network, owner: str) -> str:
        """An address of `subnet` for `owner` (the one it holds already, if any)."""
        with self._claims.locked() as held:
            for ip, who in held.items():
                if who == owner and IPv4Address(ip) in subnet:
                    return ip
            taken = {IPv4Address(ip) for ip in held}
            while True:
                candidate = next_free(subnet, taken, self._last)
                if candidate is None:
                    raise IpamError(f"no free address left in {subnet} "
                                    f"({len(taken)} in use)")
                if self._claims.claim(held, str(candidate), owner):
                    self._last = candidate
                    return str(candidate)
                # Taken since the directory was read (another agent process on
                # the same dir would be a bug, but never give one address twice).
                taken.add(candidate)

    def release(self, ip: str, owner: str) -> bool:
        """Frees `ip` if `owner` holds it; False if it did not."""
        with self._claims.locked() as held:
            return self._claims.drop(held, ip, owner)

    def release_all_but(self, owners: set[str]) -> list[str]:
        """Frees every address whose owner is not in `owners`; returns those freed."""
        return self._claims.release_all_but(owners)
