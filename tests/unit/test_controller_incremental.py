"""Incremental controller passes (changes.py): the same outcome as full passes, for less.

A controller fed by the watch cache decides again only the workloads whose
records or replicas changed, and rebuilds only the desired sets of the
nodes whose replicas changed. These tests drive one through a cluster's
life on the in-memory store (fake_store.py) and check, after every pass,
that a full pass on the same state has nothing left to do and that the
sets it sent are the ones a full pass makes.
"""

from __future__ import annotations

import random
import re

import pytest
from fake_store import FakeStore

from mctl.common.spec import parse_documents
from mctl.scheduler import controller as controller_mod
from mctl.scheduler import reconcile
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.nodes import registered_record
from mctl.scheduler.store import Conflict, Write
from mctl.v1 import node_pb2, types_pb2

WORKLOADS = """\
apiVersion: mctl/v1
kind: Workload
metadata: {name: a}
spec: {replicas: 6, image: busybox, resources: {cpu: 100m, memory: 16Mi}}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: b}
spec: {replicas: 4, image: busybox, resources: {cpu: 100m, memory: 16Mi}}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: c}
spec: {replicas: 2, image: busybox, resources: {cpu: 100m, memory: 16Mi}}
"""


class Cluster:
    """A store, its watch cache and a controller on it; pushes are kept, not sent."""

    def __init__(self, nodes: int = 4) -> None:
        self.store = FakeStore()
        self.cache = StateCache(self.store)
        self.controller = Controller(self.store, seed=3, cache=self.cache,
                                     node_grace_seconds=0)
        self.sent: dict[str, list[str]] = {}
        self.controller._pool.submit = self._sent    # type: ignore[method-assign]
        keys = self.store.keys
        for i in range(nodes):
            node = types_pb2.Node(name=f"n{i}", address="127.0.0.1:1",
                                  capacity=types_pb2.Resources(cpu_millis=4000,
                                                               memory_bytes=8 << 30,
                                                               pids=10000))
            node, _ = registered_record(node, None, 0)
            self.store.commit([Write(keys.node(node.name), node.SerializeToString(), 0),
                               Write(keys.heartbeat(node.name), b"1", 0)])
        self.cache.snapshot()

    def _sent(self, fn, node, desired) -> None:
        self.sent[node.name] = sorted(r.metadata.name for r in desired.replicas)

    def put_workloads(self, text: str) -> None:
        keys = self.store.keys
        for w in parse_documents(text, "t.yaml"):
            key = keys.workload(w.metadata.namespace, w.metadata.name)
            self.store.commit([Write(key, w.SerializeToString(), self.store.get(key)[1])])

    def report_running(self, node: str) -> None:
        report = node_pb2.StatusReport(node=node, complete=True)
        for r in self.cache.latest().replicas.values():
            if r.node == node and not r.metadata.deletion_requested:
                rep = report.replicas.add(namespace=r.metadata.namespace,
                                          name=r.metadata.name, uid=r.metadata.uid,
                                          spec_hash=r.spec_hash)
                rep.status.phase = types_pb2.REPLICA_PHASE_RUNNING
                rep.status.ip = f"10.244.0.{len(report.replicas) + 1}"
        self.controller.record_status(report)

    def settle(self, passes: int = 4) -> None:
        """Passes, each checked against what a full pass would do on its state."""
        for _ in range(passes):
            self.controller.reconcile_once()
            self.check()

    def check(self) -> None:
        snap = self.cache.latest()
        full = Controller(self.store, seed=3, node_grace_seconds=0)
        assert full.plan(snap, controller_mod.now_ms()) == [], \
            "a full pass on the same state would still write"
        expected = {n: sorted(r.metadata.name for r in found)
                    for n, found in full.desired_sets(snap).items() if n in snap.heartbeats}
        assert self.sent == expected

    def close(self) -> None:
        self.controller.close()
        self.cache.close()


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.close()


def test_incremental_passes_match_full_ones_through_a_workloads_life(cluster):
    cluster.put_workloads(WORKLOADS)
    cluster.settle()
    assert sum(len(v) for v in cluster.sent.values()) == 12
    for node in sorted(cluster.sent):
        cluster.report_running(node)
        cluster.settle(2)
    # Scale one down, another up, delete the third.
    cluster.put_workloads(WORKLOADS.replace("replicas: 6", "replicas: 3")
                          .replace("replicas: 4", "replicas: 7"))
    key = cluster.store.keys.workload("default", "c")
    raw, rev = cluster.store.get(key)
    w = types_pb2.Workload.FromString(raw)
    w.metadata.deletion_requested = True
    cluster.store.commit([Write(key, w.SerializeToString(), rev)])
    cluster.settle()
    for node in sorted(cluster.sent):
        cluster.report_running(node)   # the scaled-down ones are gone from the report
        cluster.settle(2)
    snap = cluster.cache.latest()
    assert sorted(snap.workloads) == [("default", "a"), ("default", "b")]
    assert sum(1 for r in snap.replicas.values() if not r.metadata.deletion_requested) == 10


def test_a_lost_node_s_replicas_are_replaced_by_an_incremental_pass(cluster):
    cluster.put_workloads(WORKLOADS)
    cluster.settle()
    for node in sorted(cluster.sent):
        cluster.report_running(node)
    cluster.settle()
    on_n0 = [k for k, r in cluster.cache.latest().replicas.items() if r.node == "n0"]
    assert on_n0
    keys = cluster.store.keys
    cluster.store.commit([Write(keys.heartbeat("n0"), None,
                                cluster.store.get(keys.heartbeat("n0"))[1])])
    cluster.sent.pop("n0")    # NotReady: no longer pushed to
    # NotReady (unchecked: a full pass a moment later finds it lost, with a
    # grace of 0), then lost: its replicas replaced elsewhere.
    cluster.controller.reconcile_once()
    cluster.settle()
    snap = cluster.cache.latest()
    assert not any(r.node == "n0" for r in snap.replicas.values())
    assert len(snap.replicas) == 12


def test_a_pass_decides_only_the_workloads_that_changed(cluster, monkeypatch):
    cluster.put_workloads(WORKLOADS)
    cluster.settle()
    decided: list[str] = []
    real = reconcile.decide

    def counting(workload, replicas, now):
        decided.append(workload.name if workload is not None else "?")
        return real(workload, replicas, now)
    monkeypatch.setattr(reconcile, "decide", counting)
    # A report about replicas of "c" alone.
    node = next(r.node for r in cluster.cache.latest().replicas.values() if r.workload == "c")
    report = node_pb2.StatusReport(node=node, complete=False)
    for r in cluster.cache.latest().replicas.values():
        if r.workload == "c" and r.node == node:
            rep = report.replicas.add(namespace="default", name=r.metadata.name,
                                      uid=r.metadata.uid, spec_hash=r.spec_hash)
            rep.status.phase = types_pb2.REPLICA_PHASE_RUNNING
    cluster.controller.record_status(report)
    cluster.controller.reconcile_once()
    # Pending -> Running changes nothing reconcile would decide for a
    # workload with all its replicas of its spec: none is decided again.
    assert decided == []
    cluster.check()
    decided.clear()      # the check's full pass decides every workload
    # A change of "c"'s record: "c" alone is decided again.
    cluster.put_workloads(WORKLOADS.split("---\n")[2].replace("replicas: 2", "replicas: 3"))
    cluster.controller.reconcile_once()
    assert decided == ["c"]
    cluster.check()
    decided.clear()
    # The safety net: after FULL_PASS_SECONDS every workload is decided again.
    cluster.controller._last_full -= controller_mod.FULL_PASS_SECONDS
    cluster.controller.reconcile_once()
    assert sorted(decided) == ["a", "b", "c"]


def test_a_pass_that_loses_a_race_keeps_its_changes_for_the_next(cluster, monkeypatch):
    cluster.put_workloads(WORKLOADS)
    cluster.settle()
    cluster.put_workloads(WORKLOADS.replace("replicas: 2", "replicas: 5"))
    real = cluster.store.commit
    calls = [0]

    def losing(writes, fence=None):
        calls[0] += 1
        if calls[0] == 1:
            raise Conflict("lost to someone else")
        return real(writes, fence)
    monkeypatch.setattr(cluster.store, "commit", losing)
    with pytest.raises(Conflict):
        cluster.controller.reconcile_once()
    cluster.settle()
    snap = cluster.cache.latest()
    assert sum(1 for r in snap.replicas.values() if r.workload == "c") == 5


def test_random_changes_keep_incremental_and_full_passes_in_agreement(cluster):
    rng = random.Random(11)
    cluster.put_workloads(WORKLOADS)
    cluster.settle()
    keys = cluster.store.keys
    for _ in range(25):
        action = rng.choice(["scale", "report", "report", "cordon", "restart", "drain"])
        if action == "scale":
            name = rng.choice("abc")
            text = [d for d in WORKLOADS.split("---\n") if f"name: {name}" in d][0]
            cluster.put_workloads(re.sub(r"replicas: \d+", f"replicas: {rng.randint(0, 9)}",
                                         text))
        elif action == "report" and cluster.sent:
            cluster.report_running(rng.choice(sorted(cluster.sent)))
        elif action == "cordon":
            node = f"n{rng.randrange(4)}"
            raw, rev = cluster.store.get(keys.node(node))
            n = types_pb2.Node.FromString(raw)
            n.cordoned = not n.cordoned
            cluster.store.commit([Write(keys.node(node), n.SerializeToString(), rev)])
        elif action == "drain":
            # Its replicas asked to leave (a signature change): replaced elsewhere.
            cluster.controller.evict(f"n{rng.randrange(4)}")
        elif action == "restart":
            # A replica's container ended: Failed, replaced by nothing (no replaceFailed).
            snap = cluster.cache.latest()
            live = sorted(k for k, r in snap.replicas.items() if r.node
                          and not r.metadata.deletion_requested)
            if live:
                key = rng.choice(live)
                r = types_pb2.Replica()
                r.CopyFrom(snap.replicas[key])
                r.status.phase = types_pb2.REPLICA_PHASE_FAILED
                store_key = keys.replica(*key)
                cluster.store.commit([Write(store_key, r.SerializeToString(),
                                            snap.mod_revisions[store_key])])
        cluster.settle(2)


def test_a_node_is_sent_its_set_once_per_registration(cluster):
    sends: list[str] = []
    cluster.controller._pool.submit = lambda fn, node, desired: sends.append(node.name)
    cluster.controller.reconcile_once()
    assert sorted(sends) == ["n0", "n1", "n2", "n3"]       # the first pass: every node
    keys = cluster.store.keys

    def rewrite(name: str, change) -> None:
        raw, rev = cluster.store.get(keys.node(name))
        n = types_pb2.Node.FromString(raw)
        change(n)
        cluster.store.commit([Write(keys.node(name), n.SerializeToString(), rev)])
    # NotReady and back, cordoned: the record changes, the node's set does not.
    sends.clear()
    rewrite("n1", lambda n: setattr(n, "not_ready_since_unix_ms", 5))
    rewrite("n1", lambda n: setattr(n, "not_ready_since_unix_ms", 0))
    rewrite("n2", lambda n: setattr(n, "cordoned", True))
    for _ in range(3):
        cluster.controller.reconcile_once()
    assert sends == []
    # Registered again (an agent restarted): sent once, however many passes
    # run and whether or not the API's forget_pushed comes before the pass.
    raw, rev = cluster.store.get(keys.node("n3"))
    record, _ = registered_record(types_pb2.Node.FromString(raw),
                                  types_pb2.Node.FromString(raw), 0)
    cluster.store.commit([Write(keys.node("n3"), record.SerializeToString(), rev)])
    cluster.controller.reconcile_once()
    cluster.controller.forget_pushed("n3")
    for _ in range(3):
        cluster.controller.reconcile_once()
    assert sends == ["n3"]
