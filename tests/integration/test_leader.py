"""Leader election, fencing and events against a real etcd."""

from __future__ import annotations

import time
import uuid

import pytest

from mctl.scheduler import events as events_mod
from mctl.scheduler.events import EventRecorder, event
from mctl.scheduler.leader import LeaderElector
from mctl.scheduler.store import Fence, NotLeader, Store, Write
from mctl.v1 import types_pb2


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def stores(etcd, prefix):
    made: list[Store] = []

    def make() -> Store:
        s = Store(etcd.endpoint, prefix=prefix, timeout=2)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_one_leader_at_a_time_and_a_clean_stop_hands_over_at_once(stores):
    a = LeaderElector(stores(), "a", ttl=2)
    b = LeaderElector(stores(), "b", ttl=2)
    a.start()
    wait_for(lambda: a.fence)
    b.start()
    time.sleep(1.0)
    assert a.fence is not None and b.fence is None
    started = time.monotonic()
    a.close()                      # revokes the lease
    wait_for(lambda: b.fence)
    assert time.monotonic() - started < 1.5
    assert b.fence.revision != 0
    b.close()


def test_a_dead_leader_is_replaced_within_its_ttl(stores):
    a_store = stores()
    a = LeaderElector(a_store, "a", ttl=2)
    a.start()
    wait_for(lambda: a.fence)
    b = LeaderElector(stores(), "b", ttl=2)
    b.start()
    # "Kill" a without letting it revoke: stop its thread, keep its lease unrefreshed.
    a._stop.set()
    a._thread.join()
    started = time.monotonic()
    wait_for(lambda: b.fence, timeout=8)
    assert time.monotonic() - started < 2 + 1.5
    b.close()


def test_a_deposed_leaders_late_write_is_refused(stores):
    store = stores()
    a = LeaderElector(store, "a", ttl=2)
    a.start()
    old = wait_for(lambda: a.fence)
    key = store.keys.workload("default", "web")
    store.commit([Write(key, b"one", 0)], fence=old)
    a.close()
    b = LeaderElector(stores(), "b", ttl=2)
    b.start()
    new = wait_for(lambda: b.fence)
    _, rev = store.get(key)
    # The old leader still believes its snapshot: the write would pass the
    # key's own compare, but the fence refuses it.
    with pytest.raises(NotLeader):
        store.commit([Write(key, b"two", rev)], fence=old)
    assert store.get(key)[0] == b"one"
    store.commit([Write(key, b"three", rev)], fence=new)
    assert store.get(key)[0] == b"three"
    b.close()


def test_a_fence_with_no_leader_at_all_refuses(stores):
    store = stores()
    with pytest.raises(NotLeader):
        store.commit([Write(store.keys.workload("d", "w"), b"x", 0)],
                     fence=Fence(store.keys.leader, 12345))


def test_snapshots_do_not_read_events(stores):
    store = stores()
    recorder = EventRecorder(store, "test")
    recorder.record(event("Replica", "default", "web-abcde", "Scheduled", "placed on node n1"))
    recorder.close()
    assert store.keys_with_prefix(store.keys.events_prefix())
    snap = store.snapshot()
    assert not snap.replicas and not snap.workloads and snap.revision > 0
    node = types_pb2.Node(name="n1")
    store.commit([Write(store.keys.node("n1"), node.SerializeToString(), 0)])
    assert list(store.snapshot().nodes) == ["n1"]


def test_events_are_listed_oldest_first_and_bounded_per_object(stores, monkeypatch):
    monkeypatch.setattr(events_mod, "MAX_PER_OBJECT", 5)
    store = stores()
    recorder = EventRecorder(store, "test")
    for i in range(12):
        recorder.record(event("Node", "", "n1", "Test", f"event {i}"))
        time.sleep(0.002)
    recorder.record(event("Node", "", "n2", "Test", "other node"))
    recorder.close()
    listed = recorder.list("Node", "", "n1")
    assert [e.message for e in listed] == [f"event {i}" for i in range(7, 12)]
    assert [e.message for e in recorder.list("Node", "", "n2")] == ["other node"]
    assert len(recorder.list("Node", "", "")) == 6


def test_many_leases_refresh_over_one_stream_concurrently(stores):
    from concurrent.futures import ThreadPoolExecutor
    store = stores()
    leases = [store.grant_lease(5) for _ in range(50)]
    with ThreadPoolExecutor(16) as pool:
        ttls = list(pool.map(store.refresh_lease, leases * 4))
    assert all(3 <= t <= 5 for t in ttls)
    store.revoke_lease(leases[0])
    assert store.refresh_lease(leases[0]) == 0          # gone: etcd says TTL 0
    assert store.refresh_lease(leases[1]) >= 3          # the stream still serves the rest


def test_refreshes_that_wait_for_nothing_are_answered_on_the_stream(stores):
    import threading
    store = stores()
    leases = [store.grant_lease(5) for _ in range(20)]
    store.revoke_lease(leases[0])
    answers: dict[int, list[int]] = {lease: [] for lease in leases}
    done = threading.Event()

    def answered(lease: int, ttl: int) -> None:
        answers[lease].append(ttl)
        if all(len(a) == 3 for a in answers.values()):
            done.set()
    for _ in range(3):
        for lease in leases:
            store.refresh_lease_nowait(lease, lambda ttl, lease=lease: answered(lease, ttl))
    assert done.wait(10)
    assert answers[leases[0]] == [0, 0, 0]               # revoked: etcd says TTL 0
    assert all(len(a) == 3 and all(3 <= t <= 5 for t in a)
               for lease, a in answers.items() if lease != leases[0])
    assert store.refresh_lease(leases[1]) >= 3          # waiting refreshes share the stream


class _Context:
    def abort(self, code, details):
        raise AssertionError(f"aborted {code}: {details}")


def test_a_lapsed_heartbeat_lease_is_renewed_without_re_registering(stores):
    from mctl.scheduler.api import NodeService
    from mctl.scheduler.controller import Controller
    from mctl.scheduler.nodes import NodeLeases
    from mctl.scheduler.usage import UsageCache
    from mctl.v1 import node_pb2
    store = stores()
    service = NodeService(NodeLeases(store), Controller(store), UsageCache())
    node = types_pb2.Node(name="n1", address="127.0.0.1:1")
    service.Register(node_pb2.RegisterRequest(node=node), _Context())
    first = int(store.get(store.keys.heartbeat("n1"))[0])
    store.revoke_lease(first)                 # as if the scheduler had stalled past the TTL
    assert store.get(store.keys.heartbeat("n1"))[0] is None
    reply = service.Heartbeat(node_pb2.HeartbeatRequest(node="n1"), _Context())
    assert not reply.reregister
    renewed = int(store.get(store.keys.heartbeat("n1"))[0])
    assert renewed != first and store.refresh_lease(renewed) > 0
    # A node the store does not know is told to register.
    assert service.Heartbeat(node_pb2.HeartbeatRequest(node="ghost"), _Context()).reregister
