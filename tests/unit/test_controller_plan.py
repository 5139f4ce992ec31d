"""The controller's plan: what one pass writes, computed from a snapshot alone."""

from __future__ import annotations

from collections import Counter

from mctl.common.spec import parse_documents, spec_hash
from mctl.scheduler.controller import Controller
from mctl.scheduler.store import Snapshot, Store
from mctl.v1 import types_pb2

WEB = """
apiVersion: mctl/v1
kind: Workload
metadata: {name: web}
spec: {replicas: 3, image: busybox, resources: {cpu: 500m, memory: 64Mi}}
"""


def make_controller() -> Controller:
    # The store is never dialled here: plan() only reads the snapshot.
    return Controller(Store("127.0.0.1:1", prefix="/t/"), seed=7)


def snapshot(nodes: dict[str, dict], workloads: str = WEB) -> Snapshot:
    snap = Snapshot(revision=10)
    for w in parse_documents(workloads, "test.yaml"):
        snap.workloads[(w.metadata.namespace, w.metadata.name)] = w
        snap.mod_revisions[f"/t/workloads/default/{w.metadata.name}"] = 5
    for name, opts in nodes.items():
        snap.nodes[name] = types_pb2.Node(
            name=name, address="127.0.0.1:1", cordoned=opts.get("cordoned", False),
            capacity=types_pb2.Resources(cpu_millis=opts.get("cpu", 2000),
                                         memory_bytes=1 << 30, pids=10000))
        if opts.get("ready", True):
            snap.heartbeats.add(name)
    return snap


def replicas_written(writes) -> list[types_pb2.Replica]:
    return [types_pb2.Replica.FromString(w.value) for w in writes
            if "/replicas/" in w.key and w.value is not None]


def test_new_replicas_are_created_placed_and_spread():
    writes = make_controller().plan(snapshot({"n1": {}, "n2": {}}), now=1000)
    reps = replicas_written(writes)
    assert len(reps) == 3
    assert all(w.expect == 0 for w in writes)           # creates: must not exist yet
    assert sorted(Counter(r.node for r in reps).values()) == [1, 2]
    w = snapshot({}).workloads[("default", "web")]
    assert {r.spec_hash for r in reps} == {spec_hash(w.spec)}
    assert all(r.status.phase == "Pending" and r.metadata.uid for r in reps)
    assert len({r.metadata.name for r in reps}) == 3
    assert all(r.metadata.name.startswith("web-") for r in reps)


def test_replicas_that_fit_nowhere_say_why_per_node():
    snap = snapshot({"n1": {"cordoned": True}, "n2": {"ready": False}, "n3": {"cpu": 100}})
    reps = replicas_written(make_controller().plan(snap, now=1000))
    assert len(reps) == 3 and all(not r.node for r in reps)
    assert {r.status.reason for r in reps} == {"Unschedulable"}
    assert {r.status.message for r in reps} == {
        "0/3 nodes fit: 1 cordoned, 1 insufficient cpu, 1 node not ready"}


def test_no_nodes_at_all():
    reps = replicas_written(make_controller().plan(snapshot({}), now=1000))
    assert {r.status.message for r in reps} == {"0/0 nodes fit: no nodes registered"}


def test_deleting_a_workload_asks_nodes_to_stop_then_removes_it():
    c = make_controller()
    snap = snapshot({"n1": {}})
    for i, r in enumerate(replicas_written(c.plan(snap, now=1000))):
        key = f"/t/replicas/default/{r.metadata.name}"
        snap.replicas[("default", r.metadata.name)] = r
        snap.mod_revisions[key] = 20 + i
    snap.workloads[("default", "web")].metadata.deletion_requested = True
    writes = c.plan(snap, now=2000)
    reps = replicas_written(writes)
    assert len(reps) == 3
    assert all(r.metadata.deletion_requested and r.status.phase == "Terminating" for r in reps)
    assert all(w.expect >= 20 for w in writes)          # CAS on what was read
    # Nothing is sent to the node for them any more.
    assert c.desired_sets(Snapshot(nodes=snap.nodes, replicas={
        ("default", r.metadata.name): r for r in reps})) == {"n1": []}
    # Once the node reported them gone (their keys deleted), the workload goes.
    snap.replicas.clear()
    writes = c.plan(snap, now=3000)
    assert [(w.key, w.value) for w in writes] == [("/t/workloads/default/web", None)]


def test_in_sync_means_no_writes():
    c = make_controller()
    snap = snapshot({"n1": {}, "n2": {}})
    for i, r in enumerate(replicas_written(c.plan(snap, now=1000))):
        snap.replicas[("default", r.metadata.name)] = r
        snap.mod_revisions[f"/t/replicas/default/{r.metadata.name}"] = 30 + i
    assert c.plan(snap, now=2000) == []
