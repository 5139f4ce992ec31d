"""The scheduler at a thousand nodes: status reports stored in batches
(scheduler/statuswriter.py), heartbeats that wait for nothing and leases that
stretch with the cluster (scheduler/nodes.py)."""

from __future__ import annotations

import threading

from fake_store import FakeStore

from mctl.scheduler.nodes import NodeLeases
from mctl.scheduler.status import combine_reports
from mctl.scheduler.statuswriter import StatusWriter
from mctl.scheduler.store import MAX_TXN_OPS, Conflict, Write
from mctl.v1 import node_pb2, types_pb2


def put_replica(store: FakeStore, name: str, node: str) -> None:
    r = types_pb2.Replica(workload="web", node=node, spec_hash="h")
    r.metadata.namespace, r.metadata.name, r.metadata.uid = "default", name, f"uid-{name}"
    r.status.phase = types_pb2.REPLICA_PHASE_STARTING
    store.commit([Write(store.keys.replica("default", name), r.SerializeToString(), 0)])


def phase_of(store: FakeStore, name: str) -> int:
    raw, _ = store.get(store.keys.replica("default", name))
    assert raw is not None
    return types_pb2.Replica.FromString(raw).status.phase


def running(node: str, *names: str, complete: bool = True) -> node_pb2.StatusReport:
    out = node_pb2.StatusReport(node=node, complete=complete)
    for name in names:
        r = out.replicas.add(namespace="default", name=name, uid=f"uid-{name}")
        r.status.phase = types_pb2.REPLICA_PHASE_RUNNING
    return out


class Recorder:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.events: list[types_pb2.Event] = []
        self.commits: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def commit(self, writes: list[Write]) -> None:
        self.gate.wait(5)
        self.commits.append(len(writes))
        self.store.commit(writes)

    def record(self, events: list[types_pb2.Event]) -> None:
        self.events += events


def test_reports_arriving_together_are_stored_in_few_transactions():
    store = FakeStore()
    nodes = [f"n{i}" for i in range(40)]
    for node in nodes:
        for j in range(5):
            put_replica(store, f"{node}-r{j}", node)
    rec = Recorder(store)
    writer = StatusWriter(store, None, rec.commit, rec.record)
    # The first report holds the writer in its commit while the other 39 queue up.
    rec.gate.clear()
    merges = {}

    def send(node: str) -> None:
        merges[node] = writer.write(running(node, *(f"{node}-r{j}" for j in range(5))))
    first = threading.Thread(target=send, args=(nodes[0],))
    first.start()
    while not rec.commits and writer._writing is False:
        pass
    others = [threading.Thread(target=send, args=(n,)) for n in nodes[1:]]
    for t in others:
        t.start()
    while len(writer._queued) < len(others):
        threading.Event().wait(0.01)
    rec.gate.set()
    for t in [first, *others]:
        t.join(10)
    assert writer.batches == 2
    # 39 nodes x 5 writes in transactions of whole nodes: 120 / 5 = 24 per transaction.
    assert rec.commits == [5, 120, 75]
    assert all(phase_of(store, f"{n}-r{j}") == types_pb2.REPLICA_PHASE_RUNNING
               for n in nodes for j in range(5))
    assert sorted(merges) == sorted(nodes)
    assert all(len(m.updated) == 5 for m in merges.values())
    assert len([e for e in rec.events if e.reason == "Started"]) == 200


def test_a_lost_race_merges_again_only_the_nodes_of_that_transaction():
    store = FakeStore()
    for node in ("n1", "n2"):
        for j in range(70):           # 70 + 70 > MAX_TXN_OPS: one transaction each
            put_replica(store, f"{node}-{j}", node)
    rec = Recorder(store)
    raced = []

    def commit(writes: list[Write]) -> None:
        if not raced and writes[0].key == store.keys.replica("default", "n2-0"):
            # Someone else writes n2-0 between our read and our write.
            raw, rev = store.get(writes[0].key)
            store.commit([Write(writes[0].key, raw, rev)])
            raced.append(True)
        rec.commit(writes)
    writer = StatusWriter(store, None, commit, rec.record)
    merges = writer._merge_and_commit({
        node: running(node, *(f"{node}-{j}" for j in range(70))) for node in ("n1", "n2")})
    assert raced and rec.commits == [70, 70, 70]     # n1 once; n2 lost once, then again
    assert all(len(m.updated) == 70 for m in merges.values())   # type: ignore[union-attr]
    assert phase_of(store, "n2-0") == types_pb2.REPLICA_PHASE_RUNNING
    started = [e.name for e in rec.events if e.reason == "Started"]
    assert len(started) == len(set(started)) == 140


def test_a_node_with_more_changes_than_a_transaction_holds_is_split():
    store = FakeStore()
    names = [f"r{i}" for i in range(MAX_TXN_OPS + 10)]
    for name in names:
        put_replica(store, name, "n1")
    rec = Recorder(store)
    merge = StatusWriter(store, None, rec.commit, rec.record).write(running("n1", *names))
    assert rec.commits == [MAX_TXN_OPS, 10] and len(merge.updated) == len(names)


def test_a_report_that_keeps_losing_fails_and_says_so():
    store = FakeStore()
    put_replica(store, "a", "n1")

    def commit(writes: list[Write]) -> None:
        raise Conflict("always")
    writer = StatusWriter(store, None, commit, lambda events: None)
    try:
        writer.write(running("n1", "a"))
    except Conflict as e:
        assert "status report of node n1" in str(e)
    else:
        raise AssertionError("a report that never got stored was acknowledged")


def test_reports_of_one_node_fold_into_one():
    complete = running("n1", "a", "b")
    partial = running("n1", "b", "c", complete=False)
    partial.replicas[0].status.phase = types_pb2.REPLICA_PHASE_FAILED
    folded = combine_reports(complete, partial)
    assert folded.complete
    assert [(r.name, r.status.phase) for r in folded.replicas] == [
        ("a", types_pb2.REPLICA_PHASE_RUNNING), ("b", types_pb2.REPLICA_PHASE_FAILED),
        ("c", types_pb2.REPLICA_PHASE_RUNNING)]
    assert combine_reports(partial, complete) is complete


def test_heartbeats_of_a_live_lease_wait_for_nothing_and_an_expiry_revives():
    store = FakeStore()
    leases = NodeLeases(store, lease_ttl=3, live=lambda node: True)
    leases.register(types_pb2.Node(name="n1", address="127.0.0.1:1"))
    first = int(store.get(store.keys.heartbeat("n1"))[0])
    assert leases.heartbeat("n1") and store.refreshes_sent == 1
    # etcd answers that the lease expired: the next heartbeat revives it.
    store.expire_lease(first)
    assert leases.heartbeat("n1") and store.refreshes_sent == 2
    assert leases.heartbeat("n1")
    renewed = int(store.get(store.keys.heartbeat("n1"))[0])
    assert renewed != first and store.refresh_lease(renewed) == 3


def test_one_refresh_per_lease_is_on_the_way_at_a_time():
    store = FakeStore()
    store.hold_refreshes = True
    leases = NodeLeases(store, lease_ttl=3, live=lambda node: True)
    leases.register(types_pb2.Node(name="n1", address="127.0.0.1:1"))
    for _ in range(50):
        assert leases.heartbeat("n1")
    assert store.refreshes_sent == 1


def test_a_node_whose_key_the_cache_does_not_show_waits_for_etcd():
    store = FakeStore()
    leases = NodeLeases(store, lease_ttl=3, live=lambda node: False)
    leases.register(types_pb2.Node(name="n1", address="127.0.0.1:1"))
    assert leases.heartbeat("n1") and store.refreshes_sent == 0


def test_leases_stretch_with_the_cluster_so_heartbeats_stay_within_budget():
    store = FakeStore()
    nodes = [1]
    leases = NodeLeases(store, lease_ttl=3, live=lambda node: True, count=lambda: nodes[0],
                        max_heartbeats_per_second=1000)
    leases.register(types_pb2.Node(name="n1", address="127.0.0.1:1"))
    first = int(store.get(store.keys.heartbeat("n1"))[0])
    assert store.refresh_lease(first) == 3 and leases.interval_ms("n1") == 1000
    nodes[0] = 1500          # 1,500 nodes x 1/s > 1,000/s; a 5 s lease is within twice 3 s
    assert leases.heartbeat("n1") and store.refresh_lease(first) == 3
    nodes[0] = 5000          # 15 s leases: 5,000 nodes heartbeat 1,000 times a second
    assert leases.heartbeat("n1")
    relet = int(store.get(store.keys.heartbeat("n1"))[0])
    assert relet != first and store.refresh_lease(relet) == 15
    assert leases.interval_ms("n1") == 5000
    leases.register(types_pb2.Node(name="n2", address="127.0.0.1:2"))
    assert store.refresh_lease(int(store.get(store.keys.heartbeat("n2"))[0])) == 15
    nodes[0] = 10            # shrunk: back to the configured TTL
    assert leases.heartbeat("n1") and leases.interval_ms("n1") == 1000


def test_heartbeats_that_need_etcd_are_bounded():
    from mctl.scheduler.nodes import MAX_SLOW_HEARTBEATS, NodesBusy
    store = FakeStore()
    leases = NodeLeases(store, lease_ttl=3)          # no cache: every heartbeat waits
    leases.register(types_pb2.Node(name="n1", address="127.0.0.1:1"))
    for _ in range(MAX_SLOW_HEARTBEATS):
        assert leases._slow.acquire(blocking=False)   # others waiting on etcd
    try:
        leases.heartbeat("n1")
    except NodesBusy:
        pass
    else:
        raise AssertionError("a heartbeat took a thread beyond the bound")
    leases._slow.release()
    assert leases.heartbeat("n1")
