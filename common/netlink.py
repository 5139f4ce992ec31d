"""Netlink messages and a request/reply socket: what rtnetlink.py is built on (man 7 netlink).

Netlink is the kernel's message protocol for configuring subsystems such as
routing and network devices. Every message is a 16-byte header (`struct
nlmsghdr`: length, type, flags, sequence number, port id) followed by a
family-specific fixed header and a list of attributes. An attribute
(`struct nlattr`, also known as `rtattr`) is a 4-byte header (length, type)
and a payload; a *nested* attribute's payload is itself a list of
attributes. Messages and attributes start on 4-byte boundaries
(NLMSG_ALIGN, NLA_ALIGN), so every item is padded to a multiple of 4;
an item's length field counts its header and payload but not the padding.

The kernel answers a request with its result messages, then, when asked
with NLM_F_ACK, one NLMSG_ERROR whose error code is 0 (an acknowledgement)
or a negative errno. A dump (NLM_F_DUMP) answers with multi-part messages
ended by NLMSG_DONE. With NETLINK_EXT_ACK set, an error may carry the
kernel's own explanation ("Error: ...") as an NLMSGERR_ATTR_MSG attribute.

A socket bound to multicast groups (`groups`, a bit mask of the protocol's
groups, e.g. RTMGRP_LINK) also receives the kernel's notifications of
changes made by anyone: `notifications()` reads them. When the reader lags,
the kernel drops what does not fit in the socket's buffer and the next read
fails with ENOBUFS; that is reported as an overrun, after which the reader
must look at the whole state again (a notification is a hint, never the
state itself).

Here only struct and socket are used: nothing to import but the standard
library, and no thread, so a socket opened inside another network namespace
(netns.netlink_socket) keeps talking to that namespace (man 7
network_namespaces). Constants come from linux/netlink.h.
"""

from __future__ import annotations

import errno as errno_codes
import logging
import os
import socket
import struct
from collections.abc import Container, Iterable, Iterator

log = logging.getLogger(__name__)

# linux/netlink.h
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100        # in an ACK: the request is not echoed back
NLM_F_ACK_TLVS = 0x200      # in an ACK: extended-ACK attributes follow

NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

HEADER = struct.Struct("=IHHII")        # struct nlmsghdr
ATTR_HEADER = struct.Struct("=HH")      # struct nlattr
ERROR_CODE = struct.Struct("=i")        # first field of struct nlmsgerr
U32 = struct.Struct("=I")

# A dump is sent in datagrams of at most 32 KiB (the kernel sizes them
# after the reader's buffer, capped there); 64 KiB always holds one.
RECV_BUFFER = 65536
DUMP_RETRIES = 5


class NetlinkError(OSError):
    """The kernel refused a request: `errno` is its error code, the message names the object.

    str() is the message alone ("veth mctl1234: File exists"), without
    OSError's "[Errno 17]" prefix: the message already ends in strerror.
    """

    def __str__(self) -> str:
        return str(self.strerror)


class ProtocolError(NetlinkError):
    """A reply that does not parse: a bug here or in the kernel, never the caller's input."""

    def __init__(self, message: str) -> None:
        super().__init__(errno_codes.EPROTO, message)


def align(length: int) -> int:
    """`length` rounded up to the 4-byte boundary that messages and attributes start on."""
    return (length + 3) & ~3


# -- attributes -------------------------------------------------------------------------


def attr(kind: int, payload: bytes = b"") -> bytes:
    """One attribute: its header, `payload`, and the padding up to the next boundary."""
    length = ATTR_HEADER.size + len(payload)
    return ATTR_HEADER.pack(length, kind) + payload + b"\0" * (align(length) - length)


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, U32.pack(value))


def attr_str(kind: int, value: str) -> bytes:
    """A NUL-terminated string attribute (NLA_NUL_STRING / NLA_STRING: names, kinds)."""
    return attr(kind, value.encode() + b"\0")


def nested(kind: int, *children: bytes, flag: bool = False) -> bytes:
    """An attribute whose payload is other attributes (already padded).

    `flag` sets NLA_F_NESTED. Like iproute2, rtnetlink's nests (IFLA_LINKINFO,
    IFLA_INFO_DATA) are sent without it: those are parsed leniently by the
    kernel, and VETH_INFO_PEER is not a plain nest (it starts with a struct).
    """
    return attr(kind | (NLA_F_NESTED if flag else 0), b"".join(children))


def iter_attrs(data: bytes, offset: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in data[offset:end]; the type without its flags."""
    end = len(data) if end is None else end
    while offset + ATTR_HEADER.size <= end:
        length, kind = ATTR_HEADER.unpack_from(data, offset)
        if length < ATTR_HEADER.size or offset + length > end:
            raise ProtocolError(f"attribute of type {kind & NLA_TYPE_MASK} at offset {offset} "
                                f"has length {length}, {end - offset} bytes left")
        yield kind & NLA_TYPE_MASK, data[offset + ATTR_HEADER.size:offset + length]
        offset += align(length)


def parse_attrs(data: bytes, offset: int = 0, end: int | None = None,
                only: Container[int] | None = None) -> dict[int, bytes]:
    """The attributes in data[offset:end] by type; when a type repeats, the last one counts.

    With `only`, the other types are skipped without copying their payload:
    a link carries some forty attributes (statistics among them) of which a
    dump's reader may want four, and a periodic dump of every link is the
    agent's self-check's main cost (agent/selfcheck.py).
    """
    if only is None:
        return dict(iter_attrs(data, offset, end))
    end = len(data) if end is None else end
    out = {}
    unpack = ATTR_HEADER.unpack_from
    while offset + ATTR_HEADER.size <= end:
        length, kind = unpack(data, offset)
        if length < ATTR_HEADER.size or offset + length > end:
            raise ProtocolError(f"attribute of type {kind & NLA_TYPE_MASK} at offset {offset} "
                                f"has length {length}, {end - offset} bytes left")
        kind &= NLA_TYPE_MASK
        if kind in only:
            out[kind] = data[offset + ATTR_HEADER.size:offset + length]
        offset += align(length)
    return out


def get_u32(attrs: dict[int, bytes], kind: int, default: int = 0) -> int:
    value = attrs.get(kind)
    return U32.unpack_from(value)[0] if value is not None and len(value) >= 4 else default


def get_str(attrs: dict[int, bytes], kind: int, default: str = "") -> str:
    value = attrs.get(kind)
    return value.split(b"\0", 1)[0].decode(errors="replace") if value is not None else default


# -- messages ---------------------------------------------------------------------------


def pack_message(kind: int, flags: int, seq: int, body: bytes, port: int = 0) -> bytes:
    """One message: the header (its length counts the body) and `body`, padded."""
    length = HEADER.size + len(body)
    return HEADER.pack(length, kind, flags, seq, port) + body + b"\0" * (align(length) - length)


class Message:
    """One received message: header fields and the body (what follows the header)."""

    __slots__ = ("kind", "flags", "seq", "port", "body")

    def __init__(self, kind: int, flags: int, seq: int, port: int, body: bytes) -> None:
        self.kind, self.flags, self.seq, self.port, self.body = kind, flags, seq, port, body

    def __repr__(self) -> str:
        return (f"Message(kind={self.kind}, flags={self.flags:#x}, seq={self.seq}, "
                f"{len(self.body)} bytes)")


def parse_messages(data: bytes) -> Iterator[Message]:
    """The messages in one datagram (the kernel puts several in one)."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, seq, port = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            raise ProtocolError(f"message of type {kind} at offset {offset} has length "
                                f"{length}, {len(data) - offset} bytes left")
        yield Message(kind, flags, seq, port, data[offset + HEADER.size:offset + length])
        offset += align(length)


def parse_error(msg: Message) -> tuple[int, str]:
    """(errno, the kernel's own message or "") of an NLMSG_ERROR; errno 0 is an ACK.

    struct nlmsgerr is the error code and the header of the request; the
    request's body follows unless NLM_F_CAPPED, then extended-ACK attributes
    if NLM_F_ACK_TLVS.
    """
    if len(msg.body) < ERROR_CODE.size + HEADER.size:
        raise ProtocolError(f"error reply of {len(msg.body)} bytes")
    code = -ERROR_CODE.unpack_from(msg.body)[0]
    text = ""
    if msg.flags & NLM_F_ACK_TLVS:
        offset = ERROR_CODE.size + HEADER.size
        if not msg.flags & NLM_F_CAPPED:
            request_len = HEADER.unpack_from(msg.body, ERROR_CODE.size)[0]
            offset = ERROR_CODE.size + align(request_len)
        if offset < len(msg.body):
            text = get_str(parse_attrs(msg.body, offset), NLMSGERR_ATTR_MSG)
    return code, text


def error_for(code: int, what: str, kernel_text: str = "") -> NetlinkError:
    """The exception for error `code` on `what` ("veth mctl1234"), with the kernel's words."""
    message = f"{what}: {os.strerror(code)}"
    if kernel_text:
        message += f" ({kernel_text})"
    return NetlinkError(code, message)


# -- the socket ---------------------------------------------------------------------------


class NetlinkSocket:
    """A netlink socket that sends one request at a time and collects its replies.

    Not thread-safe: callers sharing one hold a lock around each request.
    `sock` is an already opened socket (for one made inside another network
    namespace); it is owned, and closed, from then on.
    """

    def __init__(self, protocol: int = NETLINK_ROUTE, sock: socket.socket | None = None,
                 groups: int = 0) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock = sock
        try:
            # Ask for the kernel's explanation with errors, and not for our
            # own request echoed back in them.
            for option in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:
                    pass                 # older kernels: plain errno only
            sock.bind((0, groups))       # the kernel picks the port id
        except BaseException:
            sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[Message]:
        """Sends a request, acknowledged, and returns the messages answered before the ACK.

        Raises NetlinkError naming `what` when the kernel refuses it.
        """
        log.debug("netlink request type=%d flags=%#x: %s", kind, flags, what)
        seq = self._send(kind, flags | NLM_F_REQUEST | NLM_F_ACK, body)
        replies: list[Message] = []
        while True:
            for msg in self._receive(seq):
                if msg.kind == NLMSG_ERROR:
                    code, text = parse_error(msg)
                    if code:
                        raise error_for(code, what, text)
                    return replies
                if msg.kind not in (NLMSG_NOOP, NLMSG_DONE):
                    replies.append(msg)

    def dump(self, kind: int, body: bytes, what: str) -> list[Message]:
        """All objects of one kind (NLM_F_DUMP); repeated if it changed meanwhile."""
        log.debug("netlink dump type=%d: %s", kind, what)
        for _ in range(DUMP_RETRIES):
            seq = self._send(kind, NLM_F_REQUEST | NLM_F_DUMP, body)
            replies: list[Message] = []
            interrupted = False
            done = False
            while not done:
                for msg in self._receive(seq):
                    interrupted = interrupted or bool(msg.flags & NLM_F_DUMP_INTR)
                    if msg.kind == NLMSG_DONE:
                        # Its body, when there is one, is the dump's error code.
                        if len(msg.body) >= ERROR_CODE.size:
                            code = -ERROR_CODE.unpack_from(msg.body)[0]
                            if code:
                                raise error_for(code, what)
                        done = True
                        break
                    if msg.kind == NLMSG_ERROR:
                        code, text = parse_error(msg)
                        if code:
                            raise error_for(code, what, text)
                        done = True
                        break
                    if msg.kind != NLMSG_NOOP:
                        replies.append(msg)
            if not interrupted:
                return replies
            # NLM_F_DUMP_INTR: the table changed while it was being sent,
            # so the dump may have missed or repeated an entry.
            log.debug("netlink dump of %s interrupted by a change, repeating", what)
        raise error_for(errno_codes.EAGAIN, what, "dump kept changing")

    def notifications(self) -> list[Message] | None:
        """The notifications waiting on a socket bound to groups; None after an overrun.

        Never blocks (select() or poll() on `sock` to wait): [] when nothing
        is waiting. None says the kernel dropped some (ENOBUFS): what they
        said is lost, so the caller re-reads the state it cares about.
        """
        out: list[Message] = []
        while True:
            try:
                data = self.sock.recv(RECV_BUFFER, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno_codes.ENOBUFS:
                    return None
                raise
            # Notifications carry sequence number 0 and port 0 (the kernel).
            out.extend(m for m in parse_messages(data)
                       if m.kind not in (NLMSG_NOOP, NLMSG_DONE, NLMSG_ERROR))

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self.sock.sendto(pack_message(kind, flags, self._seq, body), (0, 0))
        return self._seq

    def _receive(self, seq: int) -> Iterable[Message]:
        """The messages of the next datagram that answer `seq` (others are stale: skipped)."""
        data, _, msg_flags, _ = self.sock.recvmsg(RECV_BUFFER)
        if msg_flags & socket.MSG_TRUNC:
            raise ProtocolError(f"a reply longer than {RECV_BUFFER} bytes was cut short")
        out = []
        for msg in parse_messages(data):
            if msg.seq != seq:
                # A reply to a request whose caller gave up (an exception
                # between send and receive): not ours.
                log.debug("skipping a stale netlink reply %r", msg)
                continue
            out.append(msg)
        return out
