"""Container addresses from the node's subnet (IPAM), kept on disk.

Like CNI's host-local plugin: every address in use is one file in the
pool's directory, named by the address and holding its owner (a container
id), created with O_EXCL so that one address never gets two owners, even
across threads or a crash in the middle. A restarted agent reads the
directory, keeps the addresses of the containers it adopts and frees the
rest.

The subnet's first address is the gateway (the node's bridge); the
network and broadcast addresses are never handed out. Allocation goes
round-robin from the last address handed out, so an address just freed is
not reused at once while a peer may still have it in /etc/hosts.
The addresses in use are read from disk once; after that this agent, the
directory's only writer, keeps them in memory too.
"""

from __future__ import annotations

import os
import threading
from ipaddress import IPv4Address, IPv4Network

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
    """The addresses this node's containers hold, one file each under `directory`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        # What the directory holds, read once: this agent is its only writer.
        self._cache: dict[str, str] | None = None
        # Where round-robin goes on from; a restarted agent starts over at
        # the beginning, skipping the addresses its adopted containers hold.
        self._last: IPv4Address | None = None

    def _path(self, ip: str) -> str:
        return os.path.join(self.directory, ip)

    def held(self) -> dict[str, str]:
        """address -> owner, for every address handed out."""
        with self._lock:
            return dict(self._held())

    def _held(self) -> dict[str, str]:
        if self._cache is None:
            self._cache = self._read()
        return self._cache

    def _read(self) -> dict[str, str]:
        out = {}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        for name in names:
            if name.endswith(".tmp"):
                continue
            try:
                with open(self._path(name)) as f:
                    out[name] = f.read().strip()
            except FileNotFoundError:
                continue
        return out

    def owned_by(self, owner: str) -> str | None:
        for ip, who in self.held().items():
            if who == owner:
                return ip
        return None

    def allocate(self, subnet: IPv4Network, owner: str) -> str:
        """An address of `subnet` for `owner` (the one it holds already, if any)."""
        with self._lock:
            os.makedirs(self.directory, exist_ok=True)
            held = self._held()
            for ip, who in held.items():
                if who == owner and IPv4Address(ip) in subnet:
                    return ip
            taken = {IPv4Address(ip) for ip in held}
            last = self._last
            while True:
                candidate = next_free(subnet, taken, last)
                if candidate is None:
                    raise IpamError(f"no free address left in {subnet} "
                                    f"({len(taken)} in use)")
                try:
                    fd = os.open(self._path(str(candidate)),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    # Taken since held() was read (another agent process on the
                    # same dir would be a bug, but never give one address twice).
                    taken.add(candidate)
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(owner)
                held[str(candidate)] = owner
                self._last = candidate
                return str(candidate)

    def release(self, ip: str, owner: str) -> bool:
        """Frees `ip` if `owner` holds it; False if it did not."""
        with self._lock:
            held = self._held()
            try:
                with open(self._path(ip)) as f:
                    if f.read().strip() != owner:
                        return False
                os.unlink(self._path(ip))
                return True
            except FileNotFoundError:
                return False
            finally:
                if held.get(ip) == owner:
                    del held[ip]

    def release_all_but(self, owners: set[str]) -> list[str]:
        """Frees every address whose owner is not in `owners`; returns those freed."""
        freed = []
        for ip, who in self.held().items():
            if who not in owners and self.release(ip, who):
                freed.append(ip)
        return freed

