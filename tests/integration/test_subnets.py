"""Node subnets claimed in a real etcd: never shared, kept across re-registration."""

from __future__ import annotations

import threading
import uuid

import pytest

from mctl.scheduler.store import Store
from mctl.scheduler.subnets import SubnetAllocator, SubnetError


@pytest.fixture
def store(etcd):
    s = Store(etcd.endpoint, prefix=f"/test-{uuid.uuid4().hex[:8]}/", timeout=2)
    yield s
    s.close()


def test_each_node_gets_its_own_subnet_and_keeps_it(store):
    alloc = SubnetAllocator(store, "10.244.0.0/16", 24)
    assert alloc.subnet_for("node1") == "10.244.0.0/24"
    assert alloc.subnet_for("node2") == "10.244.1.0/24"
    assert alloc.subnet_for("node1") == "10.244.0.0/24"      # re-registration
    # A restarted scheduler (a new allocator) reads the claims from etcd.
    assert SubnetAllocator(store, "10.244.0.0/16", 24).subnet_for("node2") == "10.244.1.0/24"
    assert store.subnet_claims().keys() == {"10.244.0.0/24", "10.244.1.0/24"}


def test_concurrent_registrations_never_share(store):
    got: dict[str, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def register(name: str) -> None:
        alloc = SubnetAllocator(store, "10.244.0.0/16", 24)   # one scheduler each
        start.wait()
        try:
            got[name] = alloc.subnet_for(name, attempts=50)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=register, args=(f"node{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(got.values())) == 12
    claims = store.subnet_claims()
    assert {s: owner for s, (owner, _) in claims.items()} == {s: n for n, s in got.items()}


def test_full_cluster_cidr_is_an_error(store):
    alloc = SubnetAllocator(store, "10.9.0.0/23", 24)
    alloc.subnet_for("a")
    alloc.subnet_for("b")
    with pytest.raises(SubnetError, match="no free /24 left in cluster CIDR 10.9.0.0/23"):
        alloc.subnet_for("c")


def test_a_changed_cluster_cidr_moves_the_claim(store):
    SubnetAllocator(store, "10.244.0.0/16", 24).subnet_for("node1")
    moved = SubnetAllocator(store, "10.50.0.0/16", 24).subnet_for("node1")
    assert moved == "10.50.0.0/24"
    assert store.subnet_claims().keys() == {"10.50.0.0/24"}
