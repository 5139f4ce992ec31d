"""IPAM: container addresses from the node subnet, one file per address (agent/ipam.py)."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.agent.ipam import AddressPool, IpamError, gateway_of, next_free, parse_subnet

NET = IPv4Network("10.244.3.0/24")


def test_gateway_is_the_first_host():
    assert gateway_of(NET) == IPv4Address("10.244.3.1")


def test_next_free_skips_network_gateway_broadcast():
    assert next_free(NET, set()) == IPv4Address("10.244.3.2")
    small = IPv4Network("10.0.0.0/30")          # .0 network, .1 gateway, .2 free, .3 broadcast
    assert next_free(small, set()) == IPv4Address("10.0.0.2")
    assert next_free(small, {IPv4Address("10.0.0.2")}) is None


def test_next_free_goes_round_robin_and_wraps():
    assert next_free(NET, set(), IPv4Address("10.244.3.9")) == IPv4Address("10.244.3.10")
    last = IPv4Address("10.244.3.254")
    assert next_free(NET, set(), last) == IPv4Address("10.244.3.2")
    assert next_free(NET, {IPv4Address("10.244.3.2")}, last) == IPv4Address("10.244.3.3")
    # A `last` outside the subnet (an old subnet) starts from the beginning.
    assert next_free(NET, set(), IPv4Address("10.1.1.1")) == IPv4Address("10.244.3.2")


@given(st.sets(st.integers(min_value=0, max_value=15)), st.integers(0, 15))
def test_next_free_is_free_usable_or_none(taken_idx, last_idx):
    net = IPv4Network("10.9.0.0/28")            # 16 addresses, 13 usable
    taken = {net.network_address + i for i in taken_idx}
    got = next_free(net, taken, net.network_address + last_idx)
    usable = {net.network_address + i for i in range(2, 15)}
    if usable <= taken:
        assert got is None
    else:
        assert got in usable and got not in taken


@pytest.mark.parametrize(("text", "words"), [
    ("10.244.3.1/24", "host bits set"),
    ("fd00::/64", "only IPv4"),
    ("10.0.0.0/31", "too small"),
    ("banana", "does not appear"),
])
def test_parse_subnet_errors(text, words):
    with pytest.raises(IpamError, match=words):
        parse_subnet(text)


def test_pool_allocates_distinct_and_persists(tmp_path):
    pool = AddressPool(str(tmp_path / "a"))
    a = pool.allocate(NET, "ns_a")
    b = pool.allocate(NET, "ns_b")
    assert (a, b) == ("10.244.3.2", "10.244.3.3")
    assert pool.allocate(NET, "ns_a") == a          # an owner keeps its address
    again = AddressPool(str(tmp_path / "a"))        # a restarted agent
    assert again.held() == {a: "ns_a", b: "ns_b"}
    assert again.owned_by("ns_b") == b
    assert again.allocate(NET, "ns_c") == "10.244.3.4"


def test_pool_release_only_by_owner(tmp_path):
    pool = AddressPool(str(tmp_path))
    a = pool.allocate(NET, "ns_a")
    assert not pool.release(a, "ns_other")
    assert pool.release(a, "ns_a")
    assert not pool.release(a, "ns_a")
    # Round-robin: the freed address is not the next one handed out.
    assert pool.allocate(NET, "ns_b") != a


def test_pool_release_all_but(tmp_path):
    pool = AddressPool(str(tmp_path))
    ips = {name: pool.allocate(NET, name) for name in ("ns_a", "ns_b", "ns_c")}
    assert sorted(pool.release_all_but({"ns_b"})) == sorted([ips["ns_a"], ips["ns_c"]])
    assert pool.held() == {ips["ns_b"]: "ns_b"}


def test_pool_full(tmp_path):
    pool = AddressPool(str(tmp_path))
    net = IPv4Network("10.0.0.0/29")            # 5 usable
    got = {pool.allocate(net, f"c{i}") for i in range(5)}
    assert len(got) == 5
    with pytest.raises(IpamError, match="no free address left in 10.0.0.0/29"):
        pool.allocate(net, "c5")


def test_pool_skips_a_file_made_behind_its_back(tmp_path):
    pool = AddressPool(str(tmp_path))
    pool.allocate(NET, "ns_a")                  # makes the directory, last = .2
    (tmp_path / "10.244.3.3").write_text("someone")
    assert pool.allocate(NET, "ns_b") == "10.244.3.4"


@settings(deadline=None, max_examples=examples(20))
@given(st.integers(min_value=2, max_value=12))
def test_concurrent_allocations_never_share(tmp_path_factory, threads):
    pool = AddressPool(str(tmp_path_factory.mktemp("pool")))
    got: list[str] = []
    lock = threading.Lock()

    def take(i: int) -> None:
        ip = pool.allocate(NET, f"c{i}")
        with lock:
            got.append(ip)

    workers = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(set(got)) == threads
