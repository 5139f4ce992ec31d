"""The node's DNS responder (dns.py): the answer logic as a pure function, then a real responder
on loopback, forwarding, and a bounded fuzz run of random and mutated packets."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pytest
from dnslib import CLASS, QTYPE, RCODE, RR, A, DNSQuestion, DNSRecord

from mctl.agent import dns
from mctl.agent.services import Endpoint, ServicePort, VirtualService

SERVICES = [
    VirtualService("default", "api", "10.96.0.10", (ServicePort("tcp", 8080),),
                   (Endpoint("api-abcde", "10.244.1.5", True),
                    Endpoint("api-fghij", "10.244.2.7", False))),
    VirtualService("shop", "db", "10.96.0.11", (ServicePort("tcp", 5432),), ()),
    # No ports, no VIP: its replicas still have names.
    VirtualService("default", "batch", "", (), (Endpoint("batch-x", "10.244.0.9", True),)),
]
NAMES = dns.build_names(SERVICES)


def ask(name: str, qtype: str = "A", names: dns.Names = NAMES) -> DNSRecord:
    out = dns.decide(bytes(DNSRecord.question(name, qtype).pack()), names)
    assert isinstance(out, bytes), out
    return DNSRecord.parse(out)


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


# -- the answer logic ------------------------------------------------------------------


def test_workload_and_replica_names_answer_their_addresses():
    for name in ("api.default.mctl", "API.Default.Mctl.", "api.default.mctl."):
        reply = ask(name)
        assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
        assert addresses(reply) == ["10.96.0.10"]
        assert reply.rr[0].ttl == dns.TTL
    assert addresses(ask("api-abcde.api.default.mctl")) == ["10.244.1.5"]
    # Not ready: out of the rotation, but still its own name.
    assert addresses(ask("api-fghij.api.default.mctl")) == ["10.244.2.7"]
    assert addresses(ask("db.shop.mctl")) == ["10.96.0.11"]
    assert addresses(ask("batch-x.batch.default.mctl")) == ["10.244.0.9"]
    assert addresses(ask("api.default.mctl", "ANY")) == ["10.96.0.10"]


def test_the_reply_copies_id_question_and_recursion_desired():
    q = DNSRecord.question("api.default.mctl", "A")
    q.header.id = 4242
    reply = DNSRecord.parse(dns.decide(bytes(q.pack()), NAMES))
    assert reply.header.id == 4242 and reply.header.qr and reply.header.rd
    assert str(reply.q.qname) == "api.default.mctl." and reply.q.qtype == QTYPE.A


def test_unknown_names_in_the_zone_are_nxdomain():
    for name in ("nope.default.mctl", "api.other.mctl", "x.api-abcde.api.default.mctl",
                 "api.mctl", "default.api.mctl"):
        reply = ask(name)
        assert reply.header.rcode == RCODE.NXDOMAIN, name
        assert reply.header.aa and not reply.rr


def test_known_names_without_that_type_and_empty_parents_have_no_answer():
    for name, qtype in (("api.default.mctl", "AAAA"), ("api.default.mctl", "MX"),
                        ("api-abcde.api.default.mctl", "TXT"), ("default.mctl", "A"),
                        ("mctl", "A"), ("batch.default.mctl", "A"), ("shop.mctl", "A")):
        reply = ask(name, qtype)
        assert reply.header.rcode == RCODE.NOERROR and not reply.rr, (name, qtype)


def test_names_outside_the_zone_are_forwarded_as_they_came():
    query = bytes(DNSRecord.question("example.com", "A").pack())
    assert dns.decide(query, NAMES) == dns.Forward(query)
    assert isinstance(dns.decide(bytes(DNSRecord.question("notmctl", "A").pack()), NAMES),
                      dns.Forward)


def test_names_follow_the_services():
    assert ask("api.default.mctl", names=dns.build_names([])).header.rcode == RCODE.NXDOMAIN
    assert dns.build_names([]).existing == frozenset({"mctl."})


def header(ident=7, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def rcode_of(out) -> int:
    assert isinstance(out, bytes) and len(out) >= 12
    assert out[2] & 0x80, "a reply has QR set"
    return out[3] & 0x0F


def test_bad_queries_get_the_proper_error():
    good = bytes(DNSRecord.question("api.default.mctl", "A").pack())
    # Too short for a header, or a response: dropped.
    assert dns.decide(b"", NAMES) is None
    assert dns.decide(good[:11], NAMES) is None
    assert dns.decide(good[:2] + bytes([good[2] | 0x80]) + good[3:], NAMES) is None
    # A header and garbage, a truncated question: FORMERR with the query's id.
    out = dns.decide(header(ident=99) + b"\xff\xfe", NAMES)
    assert rcode_of(out) == RCODE.FORMERR and out[:2] == b"\x00\x63"
    assert rcode_of(dns.decide(good[:-3], NAMES)) == RCODE.FORMERR
    # Oversized.
    assert rcode_of(dns.decide(good + b"\0" * dns.MAX_QUERY_BYTES, NAMES)) == RCODE.FORMERR
    # No question, two questions.
    assert rcode_of(dns.decide(header(qd=0), NAMES)) == RCODE.FORMERR
    two = DNSRecord.question("api.default.mctl", "A")
    two.add_question(DNSQuestion("db.shop.mctl"))
    assert rcode_of(dns.decide(bytes(two.pack()), NAMES)) == RCODE.FORMERR
    # Answers in a query.
    withan = DNSRecord.question("api.default.mctl", "A")
    withan.add_answer(RR("x.mctl", QTYPE.A, rdata=A("1.2.3.4")))
    assert rcode_of(dns.decide(bytes(withan.pack()), NAMES)) == RCODE.FORMERR
    # Another opcode (STATUS = 2): NOTIMP, opcode echoed.
    out = dns.decide(header(flags=0x1000) + good[12:], NAMES)
    assert rcode_of(out) == RCODE.NOTIMP and (out[2] >> 3) & 0xF == 2
    # Another class (CHAOS): REFUSED, also outside the zone (nothing forwarded).
    for name in ("api.default.mctl", "version.bind"):
        chaos = DNSRecord(q=DNSQuestion(name, QTYPE.TXT, CLASS.CH))
        assert rcode_of(dns.decide(bytes(chaos.pack()), NAMES)) == RCODE.REFUSED


def test_upstreams_come_from_resolv_conf_less_the_responder(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver 10.244.0.1\nnameserver 192.0.2.53\n"
                    "nameserver fe80::1%eth0\nnameserver 192.0.2.54\nnameserver 192.0.2.55\n")
    assert dns.upstreams(str(conf), exclude=["10.244.0.1"]) == [
        "192.0.2.53", "fe80::1", "192.0.2.54"]
    assert dns.upstreams(str(tmp_path / "missing")) == []


# -- a real responder on loopback --------------------------------------------------------


@pytest.fixture
def responder(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("")
    r = dns.Responder("127.0.0.1", port=0, resolv_conf=str(conf))
    r.set_names(NAMES)
    yield r
    r.close()


def query_udp(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def test_udp_and_tcp_answer(responder):
    q = DNSRecord.question("api.default.mctl", "A")
    assert addresses(DNSRecord.parse(query_udp(responder.port, bytes(q.pack())))) == [
        "10.96.0.10"]
    reply = DNSRecord.parse(q.send("127.0.0.1", responder.port, tcp=True, timeout=2))
    assert addresses(reply) == ["10.96.0.10"]
    # Two queries on one TCP connection.
    with socket.create_connection(("127.0.0.1", responder.port), timeout=2) as s:
        for name in ("api.default.mctl", "db.shop.mctl"):
            data = bytes(DNSRecord.question(name, "A").pack())
            s.sendall(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", s.recv(2))[0]
            answer = b""
            while len(answer) < size:
                answer += s.recv(size - len(answer))
            assert addresses(DNSRecord.parse(answer))


def test_no_upstream_is_servfail_at_once(responder):
    started = time.monotonic()
    out = query_udp(responder.port, bytes(DNSRecord.question("example.com", "A").pack()))
    assert rcode_of(out) == RCODE.SERVFAIL
    assert time.monotonic() - started < 1      # no wait on an upstream (FORWARD_TIMEOUT)


def fake_upstream(address: str, port: int = 0, answer: bool = True,
                  wrong_id_first: bool = False) -> socket.socket:
    """A resolver on loopback answering every query with 192.0.2.1, or saying nothing."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, port))

    def serve() -> None:
        while True:
            try:
                data, peer = s.recvfrom(4096)
                if answer:
                    answer_one(data, peer)
            except OSError:         # closed by the test
                return

    def answer_one(data: bytes, peer: tuple[str, int]) -> None:
        req = DNSRecord.parse(data)
        if wrong_id_first:
            other = DNSRecord.parse(data)
            other.header.id = (req.header.id + 1) % 65536
            bogus = other.reply()
            bogus.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.66"), ttl=60))
            s.sendto(bytes(bogus.pack()), peer)
        reply = req.reply()
        reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=60))
        s.sendto(bytes(reply.pack()), peer)

    threading.Thread(target=serve, daemon=True).start()
    return s


def test_other_names_go_to_the_node_resolvers_and_a_silent_one_is_servfail(tmp_path):
    silent = fake_upstream("127.0.0.3", answer=False)
    port = silent.getsockname()[1]
    good = fake_upstream("127.0.0.2", port)
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.2\n")
    r = dns.Responder("127.0.0.1", port=0, resolv_conf=str(conf), upstream_port=port)
    try:
        reply = DNSRecord.parse(query_udp(r.port, bytes(DNSRecord.question("example.com").pack())))
        assert addresses(reply) == ["192.0.2.1"]
        # Over TCP too (forwarded over UDP).
        reply = DNSRecord.parse(DNSRecord.question("example.com").send(
            "127.0.0.1", r.port, tcp=True, timeout=3))
        assert addresses(reply) == ["192.0.2.1"]
        conf.write_text("nameserver 127.0.0.3\nnameserver 127.0.0.1\n")   # itself: skipped
        os.utime(conf, (time.time() + 5, time.time() + 5))      # a new mtime, surely
        assert r.servers() == ["127.0.0.3"]
        started = time.monotonic()
        out = query_udp(r.port, bytes(DNSRecord.question("example.org").pack()), timeout=5)
        assert rcode_of(out) == RCODE.SERVFAIL
        assert time.monotonic() - started < dns.FORWARD_BUDGET + 0.5
    finally:
        r.close()
        good.close()
        silent.close()


def test_a_waiting_forward_does_not_hold_up_names_of_the_zone(tmp_path):
    silent = fake_upstream("127.0.0.3", answer=False)
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.3\n")
    r = dns.Responder("127.0.0.1", port=0, resolv_conf=str(conf),
                      upstream_port=silent.getsockname()[1])
    r.set_names(NAMES)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(dns.POOL_WORKERS):
                s.sendto(bytes(DNSRecord.question(f"x{i}.example.com").pack()),
                         ("127.0.0.1", r.port))
            started = time.monotonic()
            out = query_udp(r.port, bytes(DNSRecord.question("api.default.mctl").pack()),
                            timeout=1)
            assert addresses(DNSRecord.parse(out)) == ["10.96.0.10"]
            # Well before the forwards' FORWARD_BUDGET (2 s) runs out.
            assert time.monotonic() - started < 1
    finally:
        r.close()
        silent.close()


def test_forward_takes_only_the_answer_with_the_query_id():
    upstream = fake_upstream("127.0.0.2", wrong_id_first=True)
    port = upstream.getsockname()[1]
    try:
        query = DNSRecord.question("example.com")
        out = dns.forward(bytes(query.pack()), ["127.0.0.2"], port=port)
        reply = DNSRecord.parse(out)
        assert reply.header.id == query.header.id and addresses(reply) == ["192.0.2.1"]
    finally:
        upstream.close()
    # Nobody there any more (a refusal or silence): SERVFAIL within the budget.
    silent = fake_upstream("127.0.0.3", port, answer=False)
    try:
        started = time.monotonic()
        out = dns.forward(bytes(query.pack()), ["127.0.0.2", "127.0.0.3"], timeout=0.2,
                          budget=0.3, port=port)
    finally:
        silent.close()
    assert rcode_of(out) == RCODE.SERVFAIL
    assert time.monotonic() - started < 1


def mutations(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    data = bytearray(rng.choice(seeds))
    if kind == 1:                       # flip bytes
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:                     # cut
        data = data[:rng.randrange(len(data))]
    elif kind == 3:                     # grow
        data += rng.randbytes(rng.randrange(1, 700))
    else:                               # header counts and flags at random
        data[2:12] = rng.randbytes(10)
    return bytes(data)


def test_fuzz_random_and_mutated_packets_never_stop_it(responder):
    rng = random.Random(1414)
    seeds = [bytes(DNSRecord.question(n, t).pack()) for n, t in (
        ("api.default.mctl", "A"), ("api-abcde.api.default.mctl", "AAAA"),
        ("nope.default.mctl", "A"), ("db.shop.mctl", "ANY"))]
    # Packets that are not replies at once would be forwarded (SERVFAIL, no
    # upstream here) or dropped; either way nothing may crash the loop.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0)
        for i in range(2000):
            s.sendto(mutations(rng, seeds), ("127.0.0.1", responder.port))
            if i % 100 == 0:
                time.sleep(0.01)    # let it drain; a full buffer drops, which is fine
        # Also every decide() directly, so a crash shows with its input.
    for _ in range(2000):
        data = mutations(rng, seeds)
        out = dns.decide(data, NAMES)
        if isinstance(out, bytes):
            assert out[:2] == data[:2] and out[2] & 0x80
    # TCP: garbage, a length and nothing more, a length and garbage.
    for payload in (b"\xff", b"\x00\x40", b"\x00\x05hello", rng.randbytes(300)):
        with socket.create_connection(("127.0.0.1", responder.port), timeout=2) as c:
            c.sendall(payload)
    assert responder._thread.is_alive()
    reply = query_udp(responder.port, bytes(DNSRecord.question("api.default.mctl").pack()))
    assert addresses(DNSRecord.parse(reply)) == ["10.96.0.10"]
    reply = DNSRecord.parse(DNSRecord.question("db.shop.mctl").send(
        "127.0.0.1", responder.port, tcp=True, timeout=2))
    assert addresses(reply) == ["10.96.0.11"]


def test_close_leaves_no_socket():
    r = dns.Responder("127.0.0.1", port=0)
    port = r.port
    r.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))     # free again
    assert not r._thread.is_alive()
