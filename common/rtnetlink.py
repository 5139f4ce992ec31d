"""Links, addresses and routes through rtnetlink, NETLINK_ROUTE (man 7 rtnetlink).

Exactly what mctl does to the network, nothing more: bridges and veth pairs
(the peer born in another network namespace, given by an open fd), a link
up or down, into a bridge (master), its MTU, moved to another namespace,
looked up by name, listed, deleted; IPv4/IPv6 addresses on a link; routes
in a table, marked with a protocol number so mctl's own can be told apart.
`ip link`, `ip addr` and `ip route` (iproute2) send the same messages.
RtMonitor receives the kernel's notifications of link, IPv4 address and
route changes (multicast groups RTMGRP_*), as `ip monitor` does.

A request is a message type (RTM_NEWLINK, RTM_DELADDR...), a fixed header
(struct ifinfomsg, ifaddrmsg or rtmsg) and attributes (IFLA_*, IFA_*,
RTA_*; linux/if_link.h, if_addr.h, rtnetlink.h, veth.h). Errors are
NetlinkError (an OSError) with the kernel's errno and a message naming the
object: "veth mctl1a2b: File exists".

A socket talks to the network namespace it was opened in, whichever thread
uses it later: RtNetlink() is the caller's namespace, and
netns.rtnl(name) opens one inside another (common/netns.py). An RtNetlink
is not thread-safe; share one only under a lock.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Collection, Iterator
from typing import NamedTuple

from .netlink import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    Message,
    NetlinkError,
    NetlinkSocket,
    attr,
    attr_str,
    attr_u32,
    error_for,
    get_str,
    get_u32,
    nested,
    parse_attrs,
)

__all__ = ["Address", "Change", "Link", "NetlinkError", "Route", "RtMonitor", "RtNetlink"]

# linux/rtnetlink.h: message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

# linux/rtnetlink.h: multicast groups, as bit masks for bind() (RTNLGRP_* is 1 + the bit)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40

# linux/if_link.h
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_PROTINFO = 12
IFLA_BRPORT_MODE = 4          # the port's hairpin mode (linux/if_link.h)
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1           # linux/veth.h
IFF_UP = 0x1                 # linux/if.h

# linux/if_addr.h
IFA_ADDRESS = 1
IFA_LOCAL = 2

# linux/rtnetlink.h: routes
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4            # "installed by administrator": what `ip route add` sets is BOOT (3)
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255       # in a delete request: any scope
RTN_UNSPEC = 0               # in a delete request: any type
RTN_UNICAST = 1

IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, protocol,
                                        # scope, type, flags


# Named tuples, not dataclasses: importing `dataclasses` and building the
# classes would lengthen every agent start (bench/README.md, "Figures behind
# code comments").
class Link(NamedTuple):
    # ifindex, not index: a field named index would hide tuple.index().
    ifindex: int
    name: str
    flags: int               # IFF_*
    mtu: int
    master: int              # index of the bridge it is a port of, 0 for none
    kind: str                # "veth", "bridge"...; "" for a physical device or loopback

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


class Address(NamedTuple):
    ifindex: int             # the link it is on
    family: int
    address: str
    prefixlen: int


class Route(NamedTuple):
    family: int
    dst: str                 # "" for the default route
    dst_len: int
    gateway: str             # "" for a route to a directly connected network
    oif: int                 # output link index, 0 if none
    table: int
    protocol: int            # RTPROT_*, or a number of the creator's own (mctl's marker)
    scope: int
    type: int

    @property
    def destination(self) -> str:
        """The destination network as text: "10.244.1.0/24", "default"."""
        return f"{self.dst}/{self.dst_len}" if self.dst else "default"


class Change(NamedTuple):
    """One notification: what happened (RTM_NEWLINK, RTM_DELROUTE...) and to what."""

    kind: int
    link: Link | None = None
    address: Address | None = None
    route: Route | None = None


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _pack_address(family: int, address: str) -> bytes:
    try:
        return socket.inet_pton(family, address)
    except OSError:
        raise ValueError(f"{address!r} is not an IPv{4 if family == socket.AF_INET else 6} "
                         "address") from None


def _split_destination(dst: str) -> tuple[int, str, int]:
    """(family, address, prefix length) of "default", "10.1.0.0/16" or a single address."""
    if dst == "default":
        return socket.AF_INET, "", 0
    address, _, length = dst.partition("/")
    family = _family_of(address)
    _pack_address(family, address)
    full = 32 if family == socket.AF_INET else 128
    try:
        prefix = int(length) if length else full
    except ValueError:
        raise ValueError(f"{dst!r}: prefix length {length!r} is not a number") from None
    if not 0 <= prefix <= full:
        raise ValueError(f"{dst!r}: prefix length out of range")
    return family, address, prefix


def _unpack_address(family: int, raw: bytes | None) -> str:
    return socket.inet_ntop(family, raw) if raw else ""


def _ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


# What parse_link reads of a link's attributes (see parse_attrs).
LINK_ATTRS = frozenset({IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO})


def parse_link(msg: Message) -> Link:
    _, _, index, flags, _ = IFINFOMSG.unpack_from(msg.body)
    attrs = parse_attrs(msg.body, IFINFOMSG.size, only=LINK_ATTRS)
    kind = ""
    if IFLA_LINKINFO in attrs:
        kind = get_str(parse_attrs(attrs[IFLA_LINKINFO]), IFLA_INFO_KIND)
    return Link(ifindex=index, name=get_str(attrs, IFLA_IFNAME), flags=flags,
                mtu=get_u32(attrs, IFLA_MTU), master=get_u32(attrs, IFLA_MASTER), kind=kind)


def parse_address(msg: Message) -> Address:
    family, prefixlen, _, _, index = IFADDRMSG.unpack_from(msg.body)
    attrs = parse_attrs(msg.body, IFADDRMSG.size)
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the same except
    # on point-to-point links (the peer's) and is the only one for IPv6.
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    return Address(ifindex=index, family=family, address=_unpack_address(family, raw),
                   prefixlen=prefixlen)


def parse_route(msg: Message) -> Route:
    family, dst_len, _, _, table, protocol, scope, kind, _ = RTMSG.unpack_from(msg.body)
    attrs = parse_attrs(msg.body, RTMSG.size)
    return Route(family=family, dst=_unpack_address(family, attrs.get(RTA_DST)), dst_len=dst_len,
                 gateway=_unpack_address(family, attrs.get(RTA_GATEWAY)),
                 oif=get_u32(attrs, RTA_OIF),
                 # rtm_table is one byte; tables above 255 are only in RTA_TABLE.
                 table=get_u32(attrs, RTA_TABLE, table), protocol=protocol, scope=scope,
                 type=kind)


class RtNetlink:
    """An rtnetlink connection to one network namespace (see the module docstring)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.nl = NetlinkSocket(sock=sock)

    def close(self) -> None:
        self.nl.close()

    def __enter__(self) -> RtNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- links ----------------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None if there is none."""
        try:
            replies = self.nl.request(RTM_GETLINK, 0, _ifinfo() + attr_str(IFLA_IFNAME, name),
                                      f"link {name}")
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        links = [parse_link(m) for m in replies if m.kind == RTM_NEWLINK]
        return links[0] if links else None

    def index(self, link: int | str) -> int:
        """The index of `link` (an index is returned as it is); NetlinkError ENODEV if absent."""
        if isinstance(link, int):
            return link
        found = self.link(link)
        if found is None:
            raise error_for(errno.ENODEV, f"link {link}")
        return found.ifindex

    def links(self) -> list[Link]:
        return [parse_link(m) for m in self.nl.dump(RTM_GETLINK, _ifinfo(), "links")
                if m.kind == RTM_NEWLINK]

    def add_bridge(self, name: str, up: bool = False, mtu: int = 0) -> None:
        body = (_ifinfo(up=up or None) + attr_str(IFLA_IFNAME, name)
                + (attr_u32(IFLA_MTU, mtu) if mtu else b"")
                + nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge")))
        self.nl.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"bridge {name}")

    def add_veth(self, name: str, peer: str, peer_netns_fd: int = -1, master: int = 0,
                 up: bool = False, mtu: int = 0) -> None:
        """A veth pair in one request: `name` here, `peer` in the namespace of `peer_netns_fd`.

        `master` (a bridge's index) and `up` apply to `name` only: the peer
        stays down, to be configured from inside its namespace. With no fd the
        peer stays in this namespace.
        """
        mtu_attr = attr_u32(IFLA_MTU, mtu) if mtu else b""
        # VETH_INFO_PEER's payload is a struct ifinfomsg for the peer and then
        # the peer's own link attributes (drivers/net/veth.c).
        peer_body = (_ifinfo() + attr_str(IFLA_IFNAME, peer) + mtu_attr
                     + (attr_u32(IFLA_NET_NS_FD, peer_netns_fd) if peer_netns_fd >= 0 else b""))
        body = (_ifinfo(up=up or None) + attr_str(IFLA_IFNAME, name) + mtu_attr
                + (attr_u32(IFLA_MASTER, master) if master else b"")
                + nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                         nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))))
        self.nl.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"veth {name}")

    def set_link(self, link: int | str, up: bool | None = None, master: int | None = None,
                 mtu: int | None = None, netns_fd: int | None = None,
                 mac: str | None = None) -> None:
        """Changes what is given of `link` (an index, or a name: no lookup needed).

        `master` 0 takes the link out of its bridge; `netns_fd` moves it into
        the namespace that fd refers to (it then vanishes from this one);
        `mac` ("aa:bb:...") sets its hardware address.
        """
        index, by_name = (link, b"") if isinstance(link, int) else (0, attr_str(IFLA_IFNAME, link))
        body = (_ifinfo(index, up) + by_name
                + (attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", ""))) if mac else b"")
                + (attr_u32(IFLA_MASTER, master) if master is not None else b"")
                + (attr_u32(IFLA_MTU, mtu) if mtu is not None else b"")
                + (attr_u32(IFLA_NET_NS_FD, netns_fd) if netns_fd is not None else b""))
        self.nl.request(RTM_SETLINK, 0, body, _link_what(link))

    def set_hairpin(self, link: int | str, on: bool = True) -> None:
        """Lets the bridge send a frame back out the port `link` it came in on.

        What `bridge link set dev LINK hairpin on` asks: an AF_BRIDGE
        RTM_SETLINK with the port's IFLA_BRPORT_MODE in IFLA_PROTINFO (by
        index: the bridge's handler does not look names up).
        """
        index = link if isinstance(link, int) else self.index(link)
        body = (IFINFOMSG.pack(socket.AF_BRIDGE, 0, index, 0, 0)
                + nested(IFLA_PROTINFO, attr(IFLA_BRPORT_MODE, bytes([1 if on else 0])),
                         flag=True))
        self.nl.request(RTM_SETLINK, 0, body, _link_what(link))

    def delete_link(self, link: int | str) -> None:
        """Deletes `link` (a veth takes its peer along); NetlinkError ENODEV if absent."""
        index, by_name = (link, b"") if isinstance(link, int) else (0, attr_str(IFLA_IFNAME, link))
        self.nl.request(RTM_DELLINK, 0, _ifinfo(index) + by_name, _link_what(link))

    # -- addresses ----------------------------------------------------------------------------

    def addresses(self, link: int | str = 0, family: int = socket.AF_INET) -> list[Address]:
        """The addresses of `link` (0: of every link) in `family`."""
        index = self.index(link) if link else 0
        replies = self.nl.dump(RTM_GETADDR, IFADDRMSG.pack(family, 0, 0, 0, 0), "addresses")
        found = [parse_address(m) for m in replies if m.kind == RTM_NEWADDR]
        return [a for a in found if a.family == family and (not index or a.ifindex == index)]

    def add_address(self, link: int | str, address: str, prefixlen: int) -> None:
        self._address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, link, address, prefixlen)

    def delete_address(self, link: int | str, address: str, prefixlen: int) -> None:
        self._address(RTM_DELADDR, 0, link, address, prefixlen)

    def _address(self, kind: int, flags: int, link: int | str, address: str,
                 prefixlen: int) -> None:
        family = _family_of(address)
        raw = _pack_address(family, address)
        index = self.index(link)
        # As `ip addr add`: IFA_LOCAL is the address, IFA_ADDRESS the same (no peer).
        body = (IFADDRMSG.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw))
        self.nl.request(kind, flags, body, f"address {address}/{prefixlen} on {_link_what(link)}")

    # -- routes ---------------------------------------------------------------------------------

    def routes(self, family: int = socket.AF_INET, table: int | None = RT_TABLE_MAIN,
               protocol: int | None = None) -> list[Route]:
        """The routes of `table` (None: every table), only those of `protocol` if given."""
        replies = self.nl.dump(RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                               "routes")
        found = [parse_route(m) for m in replies if m.kind == RTM_NEWROUTE]
        return [r for r in found if r.family == family
                and (table is None or r.table == table)
                and (protocol is None or r.protocol == protocol)]

    def add_route(self, dst: str, gateway: str = "", oif: int = 0,
                  protocol: int = RTPROT_STATIC, table: int = RT_TABLE_MAIN,
                  replace: bool = False) -> None:
        """A unicast route to `dst` ("default", "10.244.1.0/24") via `gateway` and/or `oif`.

        `replace` changes an existing route to `dst` instead of failing with EEXIST.
        """
        family, address, prefix = _split_destination(dst)
        if gateway:
            family = _family_of(gateway)
        # A route without a gateway reaches a directly connected network.
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = (RTMSG.pack(family, prefix, 0, 0, table if table < 256 else 0, protocol, scope,
                           RTN_UNICAST, 0)
                + self._route_attrs(family, address, table)
                + (attr(RTA_GATEWAY, _pack_address(family, gateway)) if gateway else b"")
                + (attr_u32(RTA_OIF, oif) if oif else b""))
        flags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        what = f"route {dst}" + (f" via {gateway}" if gateway else "")
        self.nl.request(RTM_NEWROUTE, flags, body, what)

    def delete_route(self, dst: str, protocol: int = 0, table: int = RT_TABLE_MAIN) -> None:
        """Deletes the route to `dst` in `table`; with `protocol`, only one made by it."""
        family, address, prefix = _split_destination(dst)
        # Scope NOWHERE and type UNSPEC match any route to dst; protocol 0 any creator.
        body = (RTMSG.pack(family, prefix, 0, 0, table if table < 256 else 0, protocol,
                           RT_SCOPE_NOWHERE, RTN_UNSPEC, 0)
                + self._route_attrs(family, address, table))
        self.nl.request(RTM_DELROUTE, 0, body, f"route {dst}")

    @staticmethod
    def _route_attrs(family: int, address: str, table: int) -> bytes:
        return ((attr(RTA_DST, _pack_address(family, address)) if address else b"")
                + attr_u32(RTA_TABLE, table))


def _link_what(link: int | str) -> str:
    return f"link {link}" if isinstance(link, str) else f"link #{link}"


def parse_change(msg: Message) -> Change | None:
    """The Change a notification says, None for a message of another kind."""
    if msg.kind in (RTM_NEWLINK, RTM_DELLINK):
        return Change(msg.kind, link=parse_link(msg))
    if msg.kind in (RTM_NEWADDR, RTM_DELADDR):
        return Change(msg.kind, address=parse_address(msg))
    if msg.kind in (RTM_NEWROUTE, RTM_DELROUTE):
        return Change(msg.kind, route=parse_route(msg))
    return None


class RtMonitor:
    """The kernel's notifications of changes to links, IPv4 addresses and routes.

    Subscribes to `groups` (RTMGRP_* bits) of the namespace the socket was
    opened in (`sock`, as for RtNetlink; default the caller's). Wait for
    fileno() to be readable, then read(). A notification says something
    changed, not the whole state: after an overrun (read() returns None)
    some were lost, and the reader looks at everything again.
    """

    def __init__(self, groups: int = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE,
                 sock: socket.socket | None = None) -> None:
        self.nl = NetlinkSocket(sock=sock, groups=groups)

    def fileno(self) -> int:
        return self.nl.sock.fileno()

    def read(self) -> list[Change] | None:
        """The changes notified since the last read ([] if none); None after an overrun."""
        changes = self.changes()
        return None if changes is None else list(changes)

    def changes(self, kinds: Collection[int] | None = None) -> Iterator[Change] | None:
        """As read(), but each change is parsed only when the caller reaches it.

        Every notification waiting is received at once; a reader that needs
        only the first change of some `kinds` (RTM_*; default all) saves
        parsing the rest, which is most of the cost: a burst of container
        starts brings dozens of link notifications of some 40 attributes each.
        """
        messages = self.nl.notifications()
        if messages is None:
            return None
        wanted = (m for m in messages if kinds is None or m.kind in kinds)
        return (c for c in map(parse_change, wanted) if c is not None)

    def close(self) -> None:
        self.nl.close()

    def __enter__(self) -> RtMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
