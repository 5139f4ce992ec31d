"""The node's DNS responder: names of services and replicas, other names forwarded.

Every node answers its containers' DNS queries on its bridge address
(UDP and TCP port 53; a container's resolv.conf names it, with the search
list `<namespace>.mctl mctl`, bundle/config.py). The zone `mctl.` holds,
for every service of the desired set:

    <workload>.<namespace>.mctl.             A  the workload's virtual IP
    <replica>.<workload>.<namespace>.mctl.   A  that replica's address

so `api`, `api.<namespace>` and `api.<namespace>.mctl` all reach the VIP
through the search list. In the zone: NXDOMAIN for a name that does not
exist, NOERROR with no answer for one that exists without an address of
the asked type (AAAA, MX, ...; also the empty names between, such as
`<namespace>.mctl.`). Names outside it are forwarded to the node's own
resolvers (its /etc/resolv.conf, less this responder's own address) with a
short timeout; SERVFAIL when there are none or none answers, so a client
never waits on us longer than its own first retry.

Bad input gets an error, never a crash or a stall: a query that does not
parse (but has a header) gets FORMERR, as does one longer than a query can
be or with other than one question; another opcode gets NOTIMP, another
class than IN REFUSED; a packet shorter than a header, or a response, is
dropped. decide() holds all of that as a pure function of (bytes, names).

One selector thread serves both sockets and answers names in the zone
itself; forwarding and TCP connections (which may wait on the network)
go to a small bounded pool, and when that is full the query gets SERVFAIL
at once (or the connection is closed). The wire format is dnslib's.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field

from .services import VirtualService

log = logging.getLogger(__name__)

ZONE = "mctl."
TTL = 5                       # seconds; endpoints change, and clients re-ask soon
MAX_QUERY_BYTES = 512         # a query (one question, an EDNS record) is far smaller
HEADER_BYTES = 12
FORWARD_TIMEOUT = 1.0         # per upstream
FORWARD_BUDGET = 2.0          # for all upstreams of one query
TCP_IDLE_SECONDS = 2.0
TCP_MAX_QUERIES = 16
POOL_WORKERS = 4
POOL_QUEUE = 64
RESOLV_CONF = "/etc/resolv.conf"


@dataclass(frozen=True)
class Names:
    """The zone's content: fully qualified lowercase name -> addresses."""

    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Every name that exists, with or without addresses (parents included).
    existing: frozenset[str] = frozenset()


def build_names(services: Iterable[VirtualService]) -> Names:
    """The zone for `services` (pure)."""
    addresses: dict[str, set[str]] = {}
    for s in services:
        base = f"{s.workload}.{s.namespace}.{ZONE}"
        if s.virtual_ip:
            addresses.setdefault(base, set()).add(s.virtual_ip)
        for e in s.endpoints:
            addresses.setdefault(f"{e.replica}.{base}", set()).add(e.ip)
    existing = {ZONE}
    for name in addresses:
        labels = name.split(".")
        existing.update(".".join(labels[i:]) for i in range(len(labels) - 2))
    return Names({k: tuple(sorted(v)) for k, v in addresses.items()}, frozenset(existing))


def in_zone(name: str) -> bool:
    return name == ZONE or name.endswith("." + ZONE)


@dataclass(frozen=True)
class Forward:
    """decide()'s answer for a name outside the zone: ask the node's resolvers."""

    query: bytes


def error_reply(data: bytes, rcode: int) -> bytes:
    """A header-only reply to `data` (whose header is intact) with `rcode`."""
    ident, flags = struct.unpack("!HH", data[:4])
    opcode = flags & 0x7800
    rd = flags & 0x0100
    return struct.pack("!HHHHHH", ident, 0x8000 | opcode | rd | 0x0080 | rcode, 0, 0, 0, 0)


def decide(data: bytes, names: Names) -> bytes | Forward | None:
    """What to do with one query: a reply, Forward, or None to drop it (pure)."""
    # dnslib loads with the first query, not in an agent whose containers ask
    # nothing yet: 0.6 MiB of its RSS (tests/unit/test_agent_imports.py).
    from dnslib import CLASS, OPCODE, QTYPE, RCODE, RR, A, DNSRecord

    if len(data) < HEADER_BYTES:
        return None
    flags = struct.unpack("!H", data[2:4])[0]
    if flags & 0x8000:
        return None             # a response: answering it could start a loop
    if (flags >> 11) & 0xF != OPCODE.QUERY:
        return error_reply(data, RCODE.NOTIMP)
    if len(data) > MAX_QUERY_BYTES:
        return error_reply(data, RCODE.FORMERR)
    try:
        request = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 - dnslib raises many kinds on garbage
        return error_reply(data, RCODE.FORMERR)
    if len(request.questions) != 1 or request.rr or request.auth:
        return error_reply(data, RCODE.FORMERR)
    q = request.q
    if q.qclass != CLASS.IN:
        return error_reply(data, RCODE.REFUSED)
    try:
        name = str(q.qname).lower()
    except Exception:  # noqa: BLE001 - undecodable labels
        return error_reply(data, RCODE.FORMERR)
    if not in_zone(name):
        return Forward(data)
    reply = request.reply()     # the id, question and RD copied; QR, AA and RA set
    if name not in names.existing:
        reply.header.rcode = RCODE.NXDOMAIN
    elif q.qtype in (QTYPE.A, QTYPE.ANY):
        for ip in names.addresses.get(name, ()):
            reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
    try:
        return bytes(reply.pack())
    except Exception:  # noqa: BLE001 - a name dnslib parsed but cannot write back
        return error_reply(data, RCODE.FORMERR)


def upstreams(path: str = RESOLV_CONF, exclude: Iterable[str] = ()) -> list[str]:
    """The nameservers of `path`, less `exclude` (this responder's own addresses)."""
    skip = set(exclude)
    out = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver" and words[1] not in skip:
                    out.append(words[1].split("%")[0])
    except OSError:
        return []
    return out[:3]      # as glibc: MAXNS


def forward(query: bytes, servers: list[str], timeout: float = FORWARD_TIMEOUT,
            budget: float = FORWARD_BUDGET, port: int = 53) -> bytes:
    """The first upstream answer to `query` (same id, from the server asked), else SERVFAIL."""
    ident = query[:2]
    left = budget
    for server in servers:
        if left <= 0:
            break
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(min(timeout, left))
                s.connect((server, port))   # connected: replies from others are dropped
                s.send(query)
                while True:
                    reply = s.recv(65535)
                    if len(reply) >= HEADER_BYTES and reply[:2] == ident:
                        return reply
        except OSError as e:        # socket.timeout is one
            log.debug("dns: upstream %s: %s", server, e)
        left -= timeout
    from dnslib import RCODE
    return error_reply(query, RCODE.SERVFAIL)


class Responder:
    """Serves `names` on `address`:53 (UDP and TCP) until close()."""

    def __init__(self, address: str, port: int = 53, resolv_conf: str = RESOLV_CONF,
                 udp: socket.socket | None = None, tcp: socket.socket | None = None,
                 upstream_port: int = 53) -> None:
        self.address = address
        self.resolv_conf = resolv_conf
        self.upstream_port = upstream_port
        self._names = Names()
        self._servers: tuple[float, list[str]] = (-1.0, [])
        self._pending = threading.BoundedSemaphore(POOL_QUEUE)
        self._pool = futures.ThreadPoolExecutor(max_workers=POOL_WORKERS,
                                                thread_name_prefix="dns")
        # Sockets may be made by the caller (in another network namespace).
        if udp is None or tcp is None:
            udp, tcp = bind_pair(address, port)
        self.udp, self.tcp = udp, tcp
        try:
            self.tcp.listen(16)
        except OSError:
            self.udp.close()
            self.tcp.close()
            raise
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="dns", daemon=True)
        self._closed = False
        self._thread.start()
        log.info("dns responder listening on %s:%d (udp, tcp)", address,
                 self.udp.getsockname()[1])

    @property
    def port(self) -> int:
        return int(self.udp.getsockname()[1])

    @property
    def serving(self) -> bool:
        """False once its thread has stopped or a socket was closed (services_sync re-opens it)."""
        return (not self._closed and self._thread.is_alive()
                and self.udp.fileno() != -1 and self.tcp.fileno() != -1)

    @property
    def names(self) -> Names:
        return self._names

    def set_names(self, names: Names) -> None:
        self._names = names          # one reference swap: readers see old or new

    def servers(self) -> list[str]:
        """The upstreams, re-read when the node's resolv.conf changes."""
        try:
            mtime = os.stat(self.resolv_conf).st_mtime
        except OSError:
            mtime = 0.0
        if mtime != self._servers[0]:
            self._servers = (mtime, upstreams(self.resolv_conf, exclude=[self.address]))
        return self._servers[1]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in (self.udp, self.tcp, self._wake_r, self._wake_w):
            s.close()
        log.info("dns responder on %s closed", self.address)

    # -- serving ---------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, "udp")
        sel.register(self.tcp, selectors.EVENT_READ, "tcp")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        if key.data == "udp":
                            self._udp_one()
                        else:
                            self._tcp_accept()
                    except Exception:  # noqa: BLE001 - one bad packet must not stop it
                        log.exception("dns: serving failed")
        finally:
            sel.close()

    def _submit(self, fn: Callable[..., None], *args: object) -> bool:
        """Runs fn on the pool unless POOL_QUEUE tasks are waiting already."""
        if not self._pending.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - logged; the task is lost, not the responder
                log.exception("dns: task failed")
            finally:
                self._pending.release()
        try:
            self._pool.submit(run)
        except RuntimeError:        # shut down
            self._pending.release()
            return False
        return True

    def _udp_one(self) -> None:
        try:
            data, peer = self.udp.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        result = decide(data, self._names)
        if isinstance(result, Forward):
            if not self._submit(self._forward_udp, result.query, peer):
                from dnslib import RCODE
                self._send_udp(error_reply(data, RCODE.SERVFAIL), peer)
        elif result is not None:
            self._send_udp(result, peer)

    def _send_udp(self, reply: bytes, peer: tuple[str, int]) -> None:
        try:
            self.udp.sendto(reply, peer)
        except OSError as e:    # a full buffer or a vanished peer: the client retries
            log.debug("dns: reply to %s lost: %s", peer, e)

    def _forward_udp(self, query: bytes, peer: tuple[str, int]) -> None:
        self._send_udp(forward(query, self.servers(), port=self.upstream_port), peer)

    def _tcp_accept(self) -> None:
        try:
            conn, _ = self.tcp.accept()
        except (BlockingIOError, InterruptedError):
            return
        if not self._submit(self._tcp_serve, conn):
            conn.close()

    def _tcp_serve(self, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(True)
            conn.settimeout(TCP_IDLE_SECONDS)
            for _ in range(TCP_MAX_QUERIES):
                try:
                    head = _recv_exact(conn, 2)
                    if head is None:
                        return
                    size = struct.unpack("!H", head)[0]
                    data = _recv_exact(conn, size)
                    if data is None:
                        return
                    result = decide(data, self._names)
                    if isinstance(result, Forward):
                        result = forward(result.query, self.servers(),
                                         port=self.upstream_port)
                    if result is None:
                        return
                    conn.sendall(struct.pack("!H", len(result)) + result)
                except OSError:
                    return


def bind_pair(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to one port; port 0 (tests): a free one for both."""
    for _ in range(20 if port == 0 else 1):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind((address, port))
            tcp.bind((address, udp.getsockname()[1]))
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            if port != 0 or e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {address}")


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
