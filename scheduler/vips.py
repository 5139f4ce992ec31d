"""Virtual IPs: one stable address per workload with ports, from the service CIDR.

A workload that declares `ports` is a service: every node balances
connections to `VIP:port` over its ready replicas (the agents' nftables
maps) and answers its DNS names with the VIP. The address must stay the
same for the workload's whole life (clients cache it, DNS answers carry
it), across rolling updates, scheduler restarts and leader changes, and two
live workloads must never share one.

Where it lives. Each VIP in use has a claim in etcd, `vips/<a.b.c.d>` ->
"<namespace>/<name>" of its owner, created by a compare-and-swap that
requires the key not to exist (as node subnets are claimed, subnets.py);
the owner's record carries the address in `status.virtual_ip`, which the
API and the CLI show. The claim is the truth; the status is its copy.

Who decides. The leading scheduler's controller, in every pass, with
`plan` below: a pure function of the stored workloads and claims. It is
level-triggered like the rest of the pass, so any half-done state (a pass
that committed some of its writes and not others, a claim left by a crash,
a changed --service-cidr) is mended by the next pass:

- a live workload with ports holds exactly one claim inside the CIDR; if it
  holds none it takes back the address its status names when that is still
  free (its claim was lost), else a free one;
- a workload being deleted keeps what it holds (a re-apply before its
  replicas are gone keeps the address) but gets nothing new; its claim is
  released in the pass that removes its record;
- a workload without ports, or gone, holds nothing: its status is cleared
  and its claims are released; so are claims outside the CIDR and extra
  claims of one owner.

Write order keeps the invariant at every step, even when a pass stops
half-way: claims are created before a status names them, and a status is
cleared (or the record deleted) before its claim is released. An address
released in a pass is not handed out again in the same pass.

New addresses are picked from a random offset in the CIDR (the caller's
`start`), as Kubernetes does: a freed address is then unlikely to be handed
out again soon, while clients may still hold it in their caches.

Pure: no store, no gRPC, no protobuf.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from mctl.common.ipnet import parse_ipv4_network

DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
# At most 2^20 addresses (Kubernetes' bound too): picking scans the CIDR
# from a random offset, and a larger one buys nothing a cluster could use.
MIN_SERVICE_PREFIX = 12
# A /30 still has two usable addresses; /31 and /32 have no network and
# broadcast address to leave out, and no room for services.
MAX_SERVICE_PREFIX = 30

WorkloadKey = tuple[str, str]


class ServiceCIDRError(ValueError):
    """--service-cidr is not usable (malformed, too large or small, overlapping)."""


def parse_service_cidr(text: str, others: Mapping[str, str] | None = None) -> IPv4Network:
    """--service-cidr, checked alone and against `others` (flag -> CIDR, "" = not set).

    The message is one line naming the flags, for the scheduler to print
    before it exits.
    """
    try:
        net = parse_ipv4_network(text, "--service-cidr")
    except ValueError as e:
        raise ServiceCIDRError(str(e)) from None
    if not MIN_SERVICE_PREFIX <= net.prefixlen <= MAX_SERVICE_PREFIX:
        raise ServiceCIDRError(f"--service-cidr {net}: the prefix must be between "
                               f"/{MIN_SERVICE_PREFIX} and /{MAX_SERVICE_PREFIX}")
    for flag, other_text in (others or {}).items():
        try:
            other = ipaddress.ip_network(other_text, strict=False)
        except ValueError:
            continue        # unset, or bad: that flag's own check says so
        if net.overlaps(other):
            # A VIP inside the container or node network would shadow real
            # addresses: nftables would rewrite traffic meant for them.
            raise ServiceCIDRError(f"--service-cidr {net} overlaps {flag} {other}")
    return net


def owner_text(key: WorkloadKey) -> str:
    """A claim's value: the owner as "<namespace>/<name>"."""
    return f"{key[0]}/{key[1]}"


def parse_owner(text: str) -> WorkloadKey | None:
    namespace, slash, name = text.partition("/")
    return (namespace, name) if slash and namespace and name else None


def usable(ip: str, cidr: IPv4Network) -> bool:
    """Whether `ip` is an address a service may have: inside, not network or broadcast."""
    try:
        address = IPv4Address(ip)
    except ValueError:
        return False
    return (address in cidr and address != cidr.network_address
            and address != cidr.broadcast_address)


def pick(cidr: IPv4Network, taken: Iterable[str], start: int) -> str | None:
    """A usable address of `cidr` not in `taken`, scanning from offset `start`; None if full."""
    first = int(cidr.network_address) + 1
    size = cidr.num_addresses - 2
    held = {ip for ip in taken if usable(ip, cidr)}
    if len(held) >= size:
        return None
    for i in range(size):
        candidate = str(IPv4Address(first + (start + i) % size))
        if candidate not in held:
            return candidate
    return None


class Need(enum.Enum):
    """What a stored workload asks of the allocator."""

    NONE = "none"   # no ports: holds nothing
    KEEP = "keep"   # being deleted: keeps what it holds, gets nothing new
    WANT = "want"   # live, with ports: holds exactly one


@dataclass(frozen=True)
class Holder:
    """One stored workload as the allocator sees it: its need and its status's address."""

    need: Need
    current: str = ""


@dataclass
class VipPlan:
    """What one pass writes for VIPs; empty when all is as it should be."""

    claims: dict[str, WorkloadKey] = field(default_factory=dict)   # ip -> owner: create
    status: dict[WorkloadKey, str] = field(default_factory=dict)   # new status.virtual_ip
    releases: list[str] = field(default_factory=list)               # claims to delete
    exhausted: list[WorkloadKey] = field(default_factory=list)      # wanted one; none free

    @property
    def empty(self) -> bool:
        return not (self.claims or self.status or self.releases)


def plan(cidr: IPv4Network, workloads: Mapping[WorkloadKey, Holder],
         claims: Mapping[str, str], start: int = 0) -> VipPlan:
    """The claims to make and release, and the statuses to write, for `workloads`.

    `workloads` is every stored workload record (those removed in this
    pass left out); `claims` every stored claim, ip -> owner text.
    """
    out = VipPlan()
    held: dict[WorkloadKey, list[str]] = {}
    for ip, owner_value in sorted(claims.items()):
        owner = parse_owner(owner_value)
        holder = workloads.get(owner) if owner is not None else None
        if owner is None or holder is None or holder.need is Need.NONE or not usable(ip, cidr):
            out.releases.append(ip)
        else:
            held.setdefault(owner, []).append(ip)
    kept: dict[WorkloadKey, str] = {}
    for owner, ips in held.items():
        # One each: the address its status names, else the lowest.
        current = workloads[owner].current
        keep = current if current in ips else min(ips, key=IPv4Address)
        kept[owner] = keep
        out.releases += [ip for ip in ips if ip != keep]
    taken = set(claims)
    for key in sorted(workloads):
        holder = workloads[key]
        if holder.need is Need.NONE:
            if holder.current:
                out.status[key] = ""
            continue
        if holder.need is Need.KEEP:
            continue
        have = kept.get(key)
        if have is None:
            current = holder.current
            if current and usable(current, cidr) and current not in taken:
                have = current          # its claim was lost: take the same address back
            else:
                have = pick(cidr, taken, start)
            if have is None:
                out.exhausted.append(key)
                if current:
                    out.status[key] = ""    # it names an address it does not hold
                continue
            out.claims[have] = key
            taken.add(have)
        if holder.current != have:
            out.status[key] = have
    return out
