"""Netlink message packing and parsing (common/netlink.py, common/rtnetlink.py), no kernel.

Requests are checked byte for byte against the layouts in linux/netlink.h,
if_link.h, veth.h and rtnetlink.h; replies are built by hand, including
the error forms (plain, with the request echoed, with extended-ACK text)
and multi-part dumps. A fake socket records what is sent and hands back
scripted datagrams. tests/kernel/test_rtnetlink_kernel.py runs the same
operations against the real kernel.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from mctl.common import netlink, rtnetlink
from mctl.common.netlink import (
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_MULTI,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    Message,
    NetlinkError,
    NetlinkSocket,
    ProtocolError,
)
from mctl.common.rtnetlink import RtNetlink

# -- alignment and attributes ----------------------------------------------------------


@pytest.mark.parametrize(("length", "aligned"), [(0, 0), (1, 4), (3, 4), (4, 4), (5, 8),
                                                  (16, 16), (17, 20)])
def test_align_rounds_up_to_four(length, aligned):
    assert netlink.align(length) == aligned


def test_attribute_length_counts_header_and_payload_not_padding():
    a = netlink.attr_str(3, "eth0")                 # "eth0\0": 5 bytes
    assert struct.unpack_from("=HH", a) == (4 + 5, 3)
    assert len(a) == 12                             # padded to the boundary
    assert a[4:9] == b"eth0\0" and a[9:] == b"\0\0\0"


def test_aligned_attribute_has_no_padding():
    a = netlink.attr_u32(10, 7)
    assert a == struct.pack("=HHI", 8, 10, 7)


def test_empty_attribute_is_a_bare_header():
    assert netlink.attr(5) == struct.pack("=HH", 4, 5)


def test_attributes_round_trip_in_order_with_repeats():
    data = (netlink.attr_str(1, "a") + netlink.attr_u32(2, 0xDEADBEEF) + netlink.attr(3, b"xyz")
            + netlink.attr_str(1, "second"))
    assert list(netlink.iter_attrs(data)) == [(1, b"a\0"), (2, struct.pack("=I", 0xDEADBEEF)),
                                              (3, b"xyz"), (1, b"second\0")]
    parsed = netlink.parse_attrs(data)
    assert netlink.get_str(parsed, 1) == "second"    # the last of a repeated type counts
    assert netlink.get_u32(parsed, 2) == 0xDEADBEEF
    assert netlink.get_u32(parsed, 9, default=42) == 42
    assert netlink.get_str(parsed, 9) == ""


def test_nested_attributes_and_the_nested_flag():
    inner = netlink.attr_str(1, "veth") + netlink.attr_u32(2, 5)
    plain = netlink.nested(18, inner)
    flagged = netlink.nested(18, inner, flag=True)
    assert struct.unpack_from("=HH", plain) == (4 + len(inner), 18)
    assert struct.unpack_from("=HH", flagged) == (4 + len(inner), 18 | netlink.NLA_F_NESTED)
    # The type is read without its flags; the payload parses as attributes.
    for data in (plain, flagged):
        [(kind, payload)] = list(netlink.iter_attrs(data))
        assert kind == 18
        assert netlink.parse_attrs(payload) == {1: b"veth\0", 2: struct.pack("=I", 5)}


def test_attributes_are_parsed_from_an_offset():
    header = b"\x01" * 16                          # a fixed header, say struct ifinfomsg
    data = header + netlink.attr_str(3, "lo")
    assert netlink.parse_attrs(data, 16) == {3: b"lo\0"}


@pytest.mark.parametrize("data", [
    struct.pack("=HH", 2, 1),                     # length shorter than the header
    struct.pack("=HH", 12, 1) + b"abcd",          # longer than what is left
])
def test_malformed_attributes_raise(data):
    with pytest.raises(ProtocolError) as e:
        list(netlink.iter_attrs(data))
    assert e.value.errno == errno.EPROTO


def test_trailing_bytes_shorter_than_a_header_are_ignored():
    assert netlink.parse_attrs(netlink.attr_u32(1, 1) + b"\0\0") == {1: struct.pack("=I", 1)}


# -- messages -----------------------------------------------------------------------------


def test_message_header_and_padding():
    msg = netlink.pack_message(16, NLM_F_REQUEST | NLM_F_ACK, 7, b"abcde", port=99)
    assert struct.unpack_from("=IHHII", msg) == (16 + 5, 16, NLM_F_REQUEST | NLM_F_ACK, 7, 99)
    assert len(msg) == 24 and msg[16:21] == b"abcde" and msg[21:] == b"\0\0\0"


def test_several_messages_in_one_datagram():
    data = (netlink.pack_message(16, NLM_F_MULTI, 3, b"one")
            + netlink.pack_message(16, NLM_F_MULTI, 3, b"four")
            + netlink.pack_message(NLMSG_DONE, NLM_F_MULTI, 3, struct.pack("=i", 0)))
    msgs = list(netlink.parse_messages(data))
    assert [(m.kind, m.seq, m.body) for m in msgs] == [
        (16, 3, b"one"), (16, 3, b"four"), (NLMSG_DONE, 3, b"\0\0\0\0")]


def test_truncated_message_raises():
    data = netlink.pack_message(16, 0, 1, b"x" * 20)[:24]
    with pytest.raises(ProtocolError, match="length 36"):
        list(netlink.parse_messages(data))


def _error(code: int, request: bytes = b"", flags: int = 0, tlvs: bytes = b"",
           seq: int = 1) -> bytes:
    """An NLMSG_ERROR as the kernel sends it: code, the request's header (and body), TLVs."""
    echoed = request if request else netlink.pack_message(16, NLM_F_REQUEST, seq, b"")[:16]
    return netlink.pack_message(NLMSG_ERROR, flags, seq, struct.pack("=i", -code) + echoed
                                + tlvs)


def _one(data: bytes) -> Message:
    [msg] = list(netlink.parse_messages(data))
    return msg


def test_ack_is_error_zero():
    assert netlink.parse_error(_one(_error(0, flags=NLM_F_CAPPED))) == (0, "")


def test_error_with_capped_request_and_kernel_text():
    tlvs = netlink.attr_str(netlink.NLMSGERR_ATTR_MSG, "Nexthop has invalid gateway")
    msg = _one(_error(errno.ENETUNREACH, flags=NLM_F_CAPPED | NLM_F_ACK_TLVS, tlvs=tlvs))
    assert netlink.parse_error(msg) == (errno.ENETUNREACH, "Nexthop has invalid gateway")


def test_error_with_the_request_echoed_before_the_kernel_text():
    # Without NETLINK_CAP_ACK the whole request follows the code; the TLVs
    # start after it, at its aligned length.
    request = netlink.pack_message(24, NLM_F_REQUEST, 1, b"abcdefghi")   # 25 -> 28 bytes
    tlvs = netlink.attr_str(netlink.NLMSGERR_ATTR_MSG, "bad")
    msg = _one(_error(errno.EINVAL, request=request, flags=NLM_F_ACK_TLVS, tlvs=tlvs))
    assert netlink.parse_error(msg) == (errno.EINVAL, "bad")


def test_error_without_text():
    assert netlink.parse_error(_one(_error(errno.EEXIST))) == (errno.EEXIST, "")


def test_short_error_reply_raises():
    with pytest.raises(ProtocolError):
        netlink.parse_error(Message(NLMSG_ERROR, 0, 1, 0, b"\0\0\0\0"))


def test_netlink_error_is_an_oserror_named_for_the_object():
    e = netlink.error_for(errno.EEXIST, "veth mctl-abc")
    assert isinstance(e, OSError) and e.errno == errno.EEXIST
    assert str(e) == "veth mctl-abc: File exists"
    e = netlink.error_for(errno.ENETUNREACH, "route 10.1.0.0/16 via 192.0.2.1", "No route")
    assert str(e) == "route 10.1.0.0/16 via 192.0.2.1: Network is unreachable (No route)"


# -- the socket, with a fake kernel --------------------------------------------------------


class FakeSocket:
    """Records requests; answers each with the datagrams `reply(request)` returns."""

    def __init__(self, reply=None) -> None:
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []
        self.reply = reply or (lambda req: [_error(0, seq=req.seq, flags=NLM_F_CAPPED)])
        self.options: list[tuple[int, int, int]] = []
        self.bound = None
        self.closed = False

    def setsockopt(self, level, option, value):
        self.options.append((level, option, value))

    def bind(self, address):
        self.bound = address

    def sendto(self, data, address):
        assert address == (0, 0)
        self.sent.append(data)
        self.queue.extend(self.reply(_one(data)))

    def recvmsg(self, size):
        return self.queue.pop(0), [], 0, None

    def close(self):
        self.closed = True

    def request(self, i: int = -1) -> Message:
        return _one(self.sent[i])


def test_socket_asks_for_extended_acks_and_binds():
    fake = FakeSocket()
    with NetlinkSocket(sock=fake):
        pass
    assert (netlink.SOL_NETLINK, netlink.NETLINK_EXT_ACK, 1) in fake.options
    assert (netlink.SOL_NETLINK, netlink.NETLINK_CAP_ACK, 1) in fake.options
    assert fake.bound == (0, 0) and fake.closed


def test_request_returns_replies_before_the_ack_and_skips_stale_ones():
    def reply(req):
        return [netlink.pack_message(16, 0, req.seq - 1, b"stale")     # an old request's
                + netlink.pack_message(16, 0, req.seq, b"answer"),
                _error(0, seq=req.seq, flags=NLM_F_CAPPED)]
    nl = NetlinkSocket(sock=FakeSocket(reply))
    [msg] = nl.request(18, 0, b"", "link x")
    assert msg.body == b"answer"


def test_request_error_names_the_object():
    def reply(req):
        return [_error(errno.EEXIST, seq=req.seq, flags=NLM_F_CAPPED | NLM_F_ACK_TLVS,
                       tlvs=netlink.attr_str(netlink.NLMSGERR_ATTR_MSG, "already there"))]
    nl = NetlinkSocket(sock=FakeSocket(reply))
    with pytest.raises(NetlinkError) as e:
        nl.request(16, NLM_F_CREATE | NLM_F_EXCL, b"", "bridge mctl0")
    assert e.value.errno == errno.EEXIST
    assert str(e.value) == "bridge mctl0: File exists (already there)"


def test_dump_collects_multipart_datagrams_until_done():
    def reply(req):
        assert req.flags == NLM_F_REQUEST | NLM_F_DUMP
        return [netlink.pack_message(16, NLM_F_MULTI, req.seq, b"a")
                + netlink.pack_message(16, NLM_F_MULTI, req.seq, b"b"),
                netlink.pack_message(16, NLM_F_MULTI, req.seq, b"c"),
                netlink.pack_message(NLMSG_DONE, NLM_F_MULTI, req.seq, struct.pack("=i", 0))]
    nl = NetlinkSocket(sock=FakeSocket(reply))
    assert [m.body for m in nl.dump(18, b"", "links")] == [b"a", b"b", b"c"]


def test_interrupted_dump_is_repeated():
    calls = []

    def reply(req):
        calls.append(req.seq)
        flags = NLM_F_MULTI | (NLM_F_DUMP_INTR if len(calls) == 1 else 0)
        return [netlink.pack_message(16, flags, req.seq, f"try{len(calls)}".encode()),
                netlink.pack_message(NLMSG_DONE, flags, req.seq, struct.pack("=i", 0))]
    nl = NetlinkSocket(sock=FakeSocket(reply))
    assert [m.body for m in nl.dump(18, b"", "links")] == [b"try2"]
    assert calls == [1, 2]


def test_dump_error_in_done():
    def reply(req):
        return [netlink.pack_message(NLMSG_DONE, NLM_F_MULTI, req.seq,
                                     struct.pack("=i", -errno.EOPNOTSUPP))]
    with pytest.raises(NetlinkError, match="routes: Operation not supported"):
        NetlinkSocket(sock=FakeSocket(reply)).dump(26, b"", "routes")


# -- rtnetlink requests, byte for byte ------------------------------------------------------


def _ifinfo(body: bytes) -> tuple[tuple[int, ...], dict[int, bytes]]:
    return (rtnetlink.IFINFOMSG.unpack_from(body),
            netlink.parse_attrs(body, rtnetlink.IFINFOMSG.size))


def test_add_veth_with_peer_in_a_namespace():
    fake = FakeSocket()
    RtNetlink(fake).add_veth("mctlabc", "eth0", peer_netns_fd=9, master=4, up=True)
    req = fake.request()
    assert req.kind == rtnetlink.RTM_NEWLINK
    assert req.flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    (family, _, index, flags, change), attrs = _ifinfo(req.body)
    assert (family, index, flags, change) == (socket.AF_UNSPEC, 0, 1, 1)   # IFF_UP, changed
    assert netlink.get_str(attrs, rtnetlink.IFLA_IFNAME) == "mctlabc"
    assert netlink.get_u32(attrs, rtnetlink.IFLA_MASTER) == 4
    info = netlink.parse_attrs(attrs[rtnetlink.IFLA_LINKINFO])
    assert netlink.get_str(info, rtnetlink.IFLA_INFO_KIND) == "veth"
    data = netlink.parse_attrs(info[rtnetlink.IFLA_INFO_DATA])
    # The peer: a struct ifinfomsg of its own (down, unchanged), then its attributes.
    (_, _, peer_index, peer_flags, peer_change), peer = _ifinfo(data[rtnetlink.VETH_INFO_PEER])
    assert (peer_index, peer_flags, peer_change) == (0, 0, 0)
    assert netlink.get_str(peer, rtnetlink.IFLA_IFNAME) == "eth0"
    assert netlink.get_u32(peer, rtnetlink.IFLA_NET_NS_FD) == 9
    assert rtnetlink.IFLA_MASTER not in peer


def test_add_veth_without_namespace_or_master():
    fake = FakeSocket()
    RtNetlink(fake).add_veth("mctla", "mctlb")
    (_, _, _, flags, change), attrs = _ifinfo(fake.request().body)
    assert (flags, change) == (0, 0) and rtnetlink.IFLA_MASTER not in attrs
    info = netlink.parse_attrs(attrs[rtnetlink.IFLA_LINKINFO])
    _, peer = _ifinfo(netlink.parse_attrs(info[rtnetlink.IFLA_INFO_DATA])[1])
    assert rtnetlink.IFLA_NET_NS_FD not in peer


def test_add_bridge():
    fake = FakeSocket()
    RtNetlink(fake).add_bridge("mctl0", mtu=1400)
    _, attrs = _ifinfo(fake.request().body)
    assert netlink.get_u32(attrs, rtnetlink.IFLA_MTU) == 1400
    info = netlink.parse_attrs(attrs[rtnetlink.IFLA_LINKINFO])
    assert netlink.get_str(info, rtnetlink.IFLA_INFO_KIND) == "bridge"


@pytest.mark.parametrize(("kwargs", "flags", "change", "attrs"), [
    ({"up": True}, 1, 1, {}),
    ({"up": False}, 0, 1, {}),
    ({"master": 0}, 0, 0, {rtnetlink.IFLA_MASTER: 0}),
    ({"mtu": 9000, "netns_fd": 5}, 0, 0, {rtnetlink.IFLA_MTU: 9000, rtnetlink.IFLA_NET_NS_FD: 5}),
])
def test_set_link_by_index_sends_only_what_changes(kwargs, flags, change, attrs):
    fake = FakeSocket()
    RtNetlink(fake).set_link(7, **kwargs)
    req = fake.request()
    assert req.kind == rtnetlink.RTM_SETLINK
    (_, _, index, got_flags, got_change), got = _ifinfo(req.body)
    assert (index, got_flags, got_change) == (7, flags, change)
    assert {k: netlink.get_u32(got, k) for k in got} == attrs


def test_set_and_delete_link_by_name_need_no_lookup():
    fake = FakeSocket()
    rt = RtNetlink(fake)
    rt.set_link("lo", up=True)
    rt.delete_link("mctlgone")
    assert len(fake.sent) == 2
    (_, _, index, _, _), attrs = _ifinfo(fake.request(0).body)
    assert index == 0 and netlink.get_str(attrs, rtnetlink.IFLA_IFNAME) == "lo"
    delete = fake.request(1)
    assert delete.kind == rtnetlink.RTM_DELLINK
    assert netlink.get_str(_ifinfo(delete.body)[1], rtnetlink.IFLA_IFNAME) == "mctlgone"


def _link_reply(index: int, name: str, kind: str = "", master: int = 0, seq: int = 1) -> bytes:
    body = (rtnetlink.IFINFOMSG.pack(0, 1, index, 0x1003, 0) + netlink.attr_str(3, name)
            + netlink.attr_u32(4, 1500) + (netlink.attr_u32(10, master) if master else b"")
            + netlink.attr(7, b"\0" * 92)                       # IFLA_STATS: ignored
            + (netlink.nested(18, netlink.attr_str(1, kind)) if kind else b""))
    return netlink.pack_message(rtnetlink.RTM_NEWLINK, 0, seq, body)


def test_link_lookup_by_name_and_missing_link():
    def reply(req):
        name = netlink.get_str(_ifinfo(req.body)[1], rtnetlink.IFLA_IFNAME)
        if name == "mctl0":
            return [_link_reply(3, "mctl0", "bridge", seq=req.seq),
                    _error(0, seq=req.seq, flags=NLM_F_CAPPED)]
        return [_error(errno.ENODEV, seq=req.seq, flags=NLM_F_CAPPED)]
    rt = RtNetlink(FakeSocket(reply))
    assert rt.link("mctl0") == rtnetlink.Link(3, "mctl0", 0x1003, 1500, 0, "bridge")
    assert rt.link("mctl0").up
    assert rt.index("mctl0") == 3 and rt.index(12) == 12
    assert rt.link("nope") is None
    with pytest.raises(NetlinkError, match=r"^link nope: No such device$") as e:
        rt.index("nope")
    assert e.value.errno == errno.ENODEV


def test_add_address_sends_local_and_address():
    fake = FakeSocket()
    RtNetlink(fake).add_address(5, "10.244.1.7", 24)
    req = fake.request()
    assert req.kind == rtnetlink.RTM_NEWADDR
    assert req.flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    assert rtnetlink.IFADDRMSG.unpack_from(req.body) == (socket.AF_INET, 24, 0, 0, 5)
    attrs = netlink.parse_attrs(req.body, rtnetlink.IFADDRMSG.size)
    raw = socket.inet_aton("10.244.1.7")
    assert attrs == {rtnetlink.IFA_LOCAL: raw, rtnetlink.IFA_ADDRESS: raw}


def test_ipv6_address_and_bad_address():
    fake = FakeSocket()
    RtNetlink(fake).delete_address(5, "fd00::1", 64)
    req = fake.request()
    assert req.kind == rtnetlink.RTM_DELADDR
    assert rtnetlink.IFADDRMSG.unpack_from(req.body)[:2] == (socket.AF_INET6, 64)
    with pytest.raises(ValueError, match="not an IPv4 address"):
        RtNetlink(FakeSocket()).add_address(5, "10.1.2", 24)


def test_addresses_dump_filters_family_and_link():
    def reply(req):
        assert req.flags == NLM_F_REQUEST | NLM_F_DUMP

        def addr(index, ip, length, local=True):
            raw = socket.inet_aton(ip)
            kind = rtnetlink.IFA_LOCAL if local else rtnetlink.IFA_ADDRESS
            return netlink.pack_message(rtnetlink.RTM_NEWADDR, NLM_F_MULTI, req.seq,
                                        rtnetlink.IFADDRMSG.pack(socket.AF_INET, length, 0, 0,
                                                                 index)
                                        + netlink.attr(kind, raw))
        return [addr(1, "127.0.0.1", 8) + addr(5, "10.0.0.1", 24)
                + addr(5, "10.0.1.1", 16, local=False),
                netlink.pack_message(NLMSG_DONE, NLM_F_MULTI, req.seq, struct.pack("=i", 0))]
    rt = RtNetlink(FakeSocket(reply))
    assert rt.addresses(5) == [rtnetlink.Address(5, socket.AF_INET, "10.0.0.1", 24),
                               rtnetlink.Address(5, socket.AF_INET, "10.0.1.1", 16)]
    assert len(rt.addresses()) == 3


def test_route_replace_with_gateway_and_protocol():
    fake = FakeSocket()
    RtNetlink(fake).add_route("10.244.3.0/24", gateway="172.30.0.4", protocol=109, replace=True)
    req = fake.request()
    assert req.kind == rtnetlink.RTM_NEWROUTE
    assert req.flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    assert rtnetlink.RTMSG.unpack_from(req.body) == (
        socket.AF_INET, 24, 0, 0, 254, 109, rtnetlink.RT_SCOPE_UNIVERSE, rtnetlink.RTN_UNICAST, 0)
    attrs = netlink.parse_attrs(req.body, rtnetlink.RTMSG.size)
    assert attrs[rtnetlink.RTA_DST] == socket.inet_aton("10.244.3.0")
    assert attrs[rtnetlink.RTA_GATEWAY] == socket.inet_aton("172.30.0.4")
    assert netlink.get_u32(attrs, rtnetlink.RTA_TABLE) == 254


def test_default_route_has_no_destination_and_delete_matches_any_scope():
    fake = FakeSocket()
    rt = RtNetlink(fake)
    rt.add_route("default", gateway="10.0.0.1")
    add = fake.request()
    assert add.flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    assert rtnetlink.RTMSG.unpack_from(add.body)[1] == 0
    assert rtnetlink.RTA_DST not in netlink.parse_attrs(add.body, rtnetlink.RTMSG.size)
    rt.delete_route("10.9.0.0/16", protocol=109)
    delete = fake.request()
    assert delete.kind == rtnetlink.RTM_DELROUTE
    _, dst_len, _, _, _, protocol, scope, kind, _ = rtnetlink.RTMSG.unpack_from(delete.body)
    assert (dst_len, protocol, scope, kind) == (16, 109, rtnetlink.RT_SCOPE_NOWHERE,
                                                rtnetlink.RTN_UNSPEC)


def test_route_without_gateway_is_link_scoped():
    fake = FakeSocket()
    RtNetlink(fake).add_route("10.9.9.0/24", oif=3)
    req = fake.request()
    assert rtnetlink.RTMSG.unpack_from(req.body)[6] == rtnetlink.RT_SCOPE_LINK
    assert netlink.get_u32(netlink.parse_attrs(req.body, rtnetlink.RTMSG.size),
                           rtnetlink.RTA_OIF) == 3


@pytest.mark.parametrize("dst", ["10.0.0.0/33", "10.0.0.0/x", "nonsense/8"])
def test_bad_destination(dst):
    with pytest.raises(ValueError):
        RtNetlink(FakeSocket()).add_route(dst, gateway="10.0.0.1")


def test_routes_dump_parses_and_filters_table_and_protocol():
    def route(dst, length, table, proto, gateway=""):
        attrs = (netlink.attr(rtnetlink.RTA_DST, socket.inet_aton(dst)) if length else b"")
        attrs += netlink.attr_u32(rtnetlink.RTA_TABLE, table)
        if gateway:
            attrs += netlink.attr(rtnetlink.RTA_GATEWAY, socket.inet_aton(gateway))
        attrs += netlink.attr_u32(rtnetlink.RTA_OIF, 2)
        return netlink.pack_message(rtnetlink.RTM_NEWROUTE, NLM_F_MULTI, 1, rtnetlink.RTMSG.pack(
            socket.AF_INET, length, 0, 0, min(table, 255), proto, 0, 1, 0) + attrs)

    datagram = (route("0.0.0.0", 0, 254, 4, "10.0.0.1") + route("10.1.0.0", 16, 254, 109,
                                                                  "10.0.0.9")
                + route("127.0.0.1", 32, 255, 2) + route("10.5.0.0", 16, 1000, 109))

    def reply(req):
        # The same routes, answering this request's sequence number.
        answer = b"".join(netlink.pack_message(m.kind, m.flags, req.seq, m.body)
                          for m in netlink.parse_messages(datagram))
        return [answer,
                netlink.pack_message(NLMSG_DONE, NLM_F_MULTI, req.seq, struct.pack("=i", 0))]

    rt = RtNetlink(FakeSocket(reply))
    main = rt.routes()
    assert [r.destination for r in main] == ["default", "10.1.0.0/16"]
    assert main[1] == rtnetlink.Route(socket.AF_INET, "10.1.0.0", 16, "10.0.0.9", 2, 254, 109, 0, 1)
    assert [r.destination for r in rt.routes(protocol=109)] == ["10.1.0.0/16"]
    # Tables above 255 are read from RTA_TABLE.
    assert [(r.destination, r.table) for r in rt.routes(table=None, protocol=109)] == [
        ("10.1.0.0/16", 254), ("10.5.0.0/16", 1000)]
    assert len(rt.routes(table=None)) == 4


# -- notifications (multicast groups) ------------------------------------------------------


def test_parse_attrs_can_keep_only_some_types():
    data = netlink.attr_str(3, "eth0") + netlink.attr(7, b"x" * 200) + netlink.attr_u32(10, 4)
    assert netlink.parse_attrs(data, only={3, 10}) == {3: b"eth0\0", 10: struct.pack("=I", 4)}
    assert netlink.parse_attrs(data, only=()) == {}
    with pytest.raises(ProtocolError):
        netlink.parse_attrs(struct.pack("=HH", 12, 1) + b"abcd", only={1})


class NotifySocket(FakeSocket):
    """A socket bound to groups: recv() hands out queued datagrams, then EAGAIN."""

    def __init__(self, datagrams: list[bytes | OSError]) -> None:
        super().__init__()
        self.datagrams = datagrams

    def recv(self, size, flags):
        assert flags & socket.MSG_DONTWAIT
        if not self.datagrams:
            raise BlockingIOError(errno.EAGAIN, "no more")
        item = self.datagrams.pop(0)
        if isinstance(item, OSError):
            raise item
        return item


def test_socket_binds_to_groups_and_reads_notifications_without_blocking():
    link_down = netlink.pack_message(rtnetlink.RTM_NEWLINK, 0, 0,
                                     rtnetlink.IFINFOMSG.pack(0, 0, 7, 0, 0)
                                     + netlink.attr_str(rtnetlink.IFLA_IFNAME, "eth0"))
    fake = NotifySocket([link_down + netlink.pack_message(NLMSG_DONE, 0, 0, b""), link_down])
    monitor = rtnetlink.RtMonitor(sock=fake)
    assert fake.bound == (0, rtnetlink.RTMGRP_LINK | rtnetlink.RTMGRP_IPV4_IFADDR
                          | rtnetlink.RTMGRP_IPV4_ROUTE)
    changes = monitor.read()
    assert changes is not None and len(changes) == 2
    assert {(c.kind, c.link.name, c.link.up) for c in changes if c.link} == {
        (rtnetlink.RTM_NEWLINK, "eth0", False)}
    assert monitor.read() == []


def test_an_overrun_is_said_as_none():
    fake = NotifySocket([OSError(errno.ENOBUFS, "No buffer space available")])
    assert NetlinkSocket(sock=fake, groups=1).notifications() is None
    broken = NotifySocket([OSError(errno.EBADF, "Bad file descriptor")])
    with pytest.raises(OSError):
        NetlinkSocket(sock=broken, groups=1).notifications()
