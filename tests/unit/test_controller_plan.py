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
        snap.nodes[name].not_ready_since_unix_ms = opts.get("not_ready_since", 0)
        snap.mod_revisions[f"/t/nodes/{name}"] = 3
        if opts.get("ready", True):
            snap.heartbeats.add(name)
    return snap


def running_on(c: Controller, snap: Snapshot, now: int) -> list[types_pb2.Replica]:
    """Plans, then records the replicas as Running where they were placed."""
    reps = replicas_written(c.plan(snap, now=now))
    for i, r in enumerate(reps):
        r.status.phase = types_pb2.REPLICA_PHASE_RUNNING
        snap.replicas[("default", r.metadata.name)] = r
        snap.mod_revisions[f"/t/replicas/default/{r.metadata.name}"] = 40 + i
    return reps


def nodes_written(writes) -> dict[str, types_pb2.Node]:
    return {w.key.rsplit("/", 1)[1]: types_pb2.Node.FromString(w.value) for w in writes
            if "/nodes/" in w.key}


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
    assert all(r.status.phase == types_pb2.REPLICA_PHASE_PENDING and r.metadata.uid
               for r in reps)
    assert len({r.metadata.name for r in reps}) == 3
    assert all(r.metadata.name.startswith("web-") for r in reps)


def test_replicas_that_fit_nowhere_say_why_per_node():
    snap = snapshot({"n1": {"cordoned": True}, "n2": {"ready": False}, "n3": {"cpu": 100}})
    writes = make_controller().plan(snap, now=1000)
    reps = replicas_written(writes)
    assert len(reps) == 3 and all(not r.node for r in reps)
    assert nodes_written(writes)["n2"].not_ready_since_unix_ms == 1000
    assert {r.status.reason for r in reps} == {types_pb2.REPLICA_REASON_UNSCHEDULABLE}
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
    assert all(r.metadata.deletion_requested
               and r.status.phase == types_pb2.REPLICA_PHASE_TERMINATING for r in reps)
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


def test_a_node_whose_lease_lapsed_is_marked_not_ready_and_keeps_its_replicas():
    c = make_controller()
    snap = snapshot({"n1": {}, "n2": {}})
    reps = running_on(c, snap, now=1000)
    snap.heartbeats.discard("n2")
    writes = c.plan(snap, now=2000)
    assert list(nodes_written(writes)) == ["n2"]
    assert nodes_written(writes)["n2"].not_ready_since_unix_ms == 2000
    assert replicas_written(writes) == [] and all(w.value is not None for w in writes)
    # Within the grace period (10 s by default) nothing moves.
    snap.nodes["n2"].not_ready_since_unix_ms = 2000
    assert c.plan(snap, now=2000 + 9_999) == []
    assert len(reps) == 3


def test_past_the_grace_period_replicas_move_in_the_same_pass():
    c = make_controller()
    snap = snapshot({"n1": {}, "n2": {}, "n3": {}})
    reps = running_on(c, snap, now=1000)
    lost = [r for r in reps if r.node == "n2"]
    assert lost
    snap.heartbeats.discard("n2")
    snap.nodes["n2"].not_ready_since_unix_ms = 2000
    writes = c.plan(snap, now=12_000)
    deleted = {w.key for w in writes if w.value is None}
    assert deleted == {f"/t/replicas/default/{r.metadata.name}" for r in lost}
    replacements = replicas_written(writes)
    assert len(replacements) == len(lost)
    assert all(r.node in ("n1", "n3") and r.metadata.name not in deleted
               for r in replacements)


def test_a_finished_replica_on_a_lost_node_is_not_run_again():
    c = make_controller()
    snap = snapshot({"n1": {}, "n2": {}}, workloads=WEB.replace("replicas: 3", "replicas: 1"))
    (r,) = running_on(c, snap, now=1000)
    r.status.phase = types_pb2.REPLICA_PHASE_SUCCEEDED
    snap.heartbeats.discard(r.node)
    snap.nodes[r.node].not_ready_since_unix_ms = 1000
    assert c.plan(snap, now=60_000) == []


def test_a_replica_leaving_a_lost_node_is_forgotten_without_replacement():
    c = make_controller()
    snap = snapshot({"n1": {}, "n2": {}})
    reps = running_on(c, snap, now=1000)
    snap.workloads[("default", "web")].metadata.deletion_requested = True
    for r in reps:
        r.metadata.deletion_requested = True
    snap.heartbeats.discard("n2")
    snap.nodes["n2"].not_ready_since_unix_ms = 1000
    writes = c.plan(snap, now=20_000)
    assert {w.key for w in writes if w.value is None} == {
        f"/t/replicas/default/{r.metadata.name}" for r in reps if r.node == "n2"}
    assert replicas_written(writes) == []


def test_a_node_back_within_the_grace_period_is_ready_and_nothing_moves():
    c = make_controller()
    snap = snapshot({"n1": {}, "n2": {"not_ready_since": 5000}})
    running_on(c, snap, now=1000)
    writes = c.plan(snap, now=9000)
    assert nodes_written(writes)["n2"].not_ready_since_unix_ms == 0
    assert len(writes) == 1


def test_the_grace_period_is_configurable():
    c = Controller(Store("127.0.0.1:1", prefix="/t/"), seed=7, node_grace_seconds=2)
    snap = snapshot({"n1": {}, "n2": {}})
    reps = running_on(c, snap, now=1000)
    snap.heartbeats.discard("n2")
    snap.nodes["n2"].not_ready_since_unix_ms = 2000
    on_n2 = sum(r.node == "n2" for r in reps)
    assert len(replicas_written(c.plan(snap, now=4000))) == on_n2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pushing(monkeypatch) -> tuple[Controller, list, Clock]:
    from mctl.scheduler import controller as controller_mod
    clock = Clock()
    monkeypatch.setattr(controller_mod.time, "monotonic", clock)
    c = make_controller()
    sent: list = []
    c._pool.submit = lambda fn, node, desired: sent.append((node.name, desired))
    return c, sent, clock


def test_push_sends_changed_sets_at_once_and_address_changes_at_most_once_a_second(
        monkeypatch):
    c, sent, clock = pushing(monkeypatch)
    snap = snapshot({"n1": {}, "n2": {}})
    reps = running_on(c, snap, now=1000)
    for i, r in enumerate(reps):
        r.status.ip = f"10.244.0.{i + 2}"
    c.push(snap)
    assert sorted(n for n, _ in sent) == ["n1", "n2"]
    sent.clear()
    c.push(snap)
    assert sent == []                                   # nothing changed: nothing sent
    reps[0].status.ip = "10.244.9.9"                    # only an address moved
    clock.now += 0.5
    c.push(snap)
    assert sent == []                                   # told half a second ago: wait
    clock.now += 0.6
    c.push(snap)
    assert sorted(n for n, _ in sent) == ["n1", "n2"]
    assert "10.244.9.9" in {p.ip for _, d in sent for p in d.peers}
    sent.clear()
    clock.now += 0.1
    gone = reps[-1]
    del snap.replicas[("default", gone.metadata.name)]  # its set changed: sent at once
    c.push(snap)
    assert [n for n, _ in sent] == [gone.node]


def test_push_lists_at_most_the_cap_of_peers_per_workload(monkeypatch):
    from mctl.scheduler import controller as controller_mod
    monkeypatch.setattr(controller_mod, "MAX_PEERS_PER_WORKLOAD", 2)
    c, sent, _ = pushing(monkeypatch)
    snap = snapshot({"n1": {}})
    for i, r in enumerate(running_on(c, snap, now=1000)):
        r.status.ip = f"10.244.0.{i + 2}"
    c.push(snap)
    (_, desired), = sent
    assert len(desired.replicas) == 3 and len(desired.peers) == 2
