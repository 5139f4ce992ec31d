"""The controller's part in services: virtual IPs claimed in the store, services pushed.

On the in-memory store (fake_store.py, etcd's compare-and-swap kept) with
the real API in front: apply, update, restart, lose ports, delete; then the
push of services to every node, prompt but throttled.
"""

from __future__ import annotations

import grpc
import pytest
from fake_store import FakeStore

from mctl.common.spec import parse_documents
from mctl.scheduler import controller as controller_mod
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.controller import SERVICE_PUSH_SECONDS, Controller
from mctl.scheduler.store import Snapshot
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2, types_pb2

API = """
apiVersion: mctl/v1
kind: Workload
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  image: busybox
  ports: [{name: http, containerPort: 8080}]
"""


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


class Context:
    def abort(self, code, details):
        raise Aborted(code, details)


class DirectReads:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def latest(self) -> Snapshot:
        return self.store.snapshot()


class Scheduler:
    """The API and a controller on a store; passes run by hand, nothing is pushed."""

    def __init__(self, store: FakeStore, seed: int = 1) -> None:
        self.store = store
        self.controller = Controller(store, seed=seed)
        self.controller._pool.submit = lambda *a: None
        self.api = ControlPlane(store, DirectReads(store), self.controller, UsageCache(),
                                lambda node: None)

    def apply(self, text: str = API) -> control_pb2.ApplyResponse:
        return self.api.Apply(control_pb2.ApplyRequest(
            workloads=parse_documents(text, "t.yaml")), Context())

    def passes(self, n: int = 3) -> None:
        for _ in range(n):
            self.controller.reconcile_once()

    def close(self) -> None:
        self.controller.close()


@pytest.fixture
def sched():
    s = Scheduler(FakeStore())
    yield s
    s.close()


def vip_of(store: FakeStore, name: str = "api") -> str:
    return store.snapshot().workloads[("shop", name)].status.virtual_ip


def test_a_workload_with_ports_gets_a_claimed_address_kept_across_updates_and_restarts(sched):
    sched.apply()
    sched.passes()
    vip = vip_of(sched.store)
    assert vip.startswith("10.96.")
    assert sched.store.snapshot().vip_claims == {vip: "shop/api"}
    # A rolling update (a new image): Apply keeps the status, the pass keeps the claim.
    sched.apply(API.replace("busybox", "busybox:2"))
    assert vip_of(sched.store) == vip
    sched.passes()
    assert vip_of(sched.store) == vip
    # A new scheduler (another seed: another random offset) writes nothing for it.
    commits = sched.store.commits
    other = Scheduler(sched.store, seed=99)
    try:
        other.passes()
        assert vip_of(sched.store) == vip and sched.store.commits == commits
    finally:
        other.close()


def test_apply_refuses_a_status_from_the_client(sched):
    w = parse_documents(API, "t.yaml")[0]
    w.status.virtual_ip = "10.96.0.7"
    with pytest.raises(Aborted) as e:
        sched.api.Apply(control_pb2.ApplyRequest(workloads=[w]), Context())
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "status: is written by the scheduler" in str(e.value)
    assert sched.store.snapshot().workloads == {}


def test_losing_all_ports_gives_the_address_back_and_gaining_them_gets_one(sched):
    sched.apply()
    sched.passes()
    sched.apply(API.replace("  ports: [{name: http, containerPort: 8080}]\n", ""))
    sched.passes()
    snap = sched.store.snapshot()
    assert snap.workloads[("shop", "api")].status.virtual_ip == ""
    assert snap.vip_claims == {}
    sched.apply()
    sched.passes()
    assert sched.store.snapshot().vip_claims == {vip_of(sched.store): "shop/api"}


def test_delete_frees_the_claim_with_the_record(sched):
    sched.apply()
    sched.passes()
    vip = vip_of(sched.store)
    sched.api.Delete(control_pb2.DeleteRequest(
        workloads=[control_pb2.ObjectRef(namespace="shop", name="api")]), Context())
    # No node ran its replicas: they go at once, the record in the next pass.
    sched.passes()
    snap = sched.store.snapshot()
    assert snap.workloads == {} and snap.vip_claims == {}
    assert sched.store.get(sched.store.keys.vip(vip)) == (None, 0)


def test_a_claim_is_written_before_the_status_and_released_after_the_record_goes(sched):
    sched.apply()
    writes = sched.controller.plan(sched.store.snapshot(), now=1000)
    keys = [w.key for w in writes]
    claim = next(k for k in keys if "/vips/" in k)
    status = sched.store.keys.workload("shop", "api")
    assert keys.index(claim) < keys.index(status)
    sched.store.commit(writes)
    sched.api.Delete(control_pb2.DeleteRequest(
        workloads=[control_pb2.ObjectRef(namespace="shop", name="api")]), Context())
    sched.passes(1)                  # its replicas, never placed, are removed
    writes = sched.controller.plan(sched.store.snapshot(), now=2000)
    keys = [w.key for w in writes]
    assert keys.index(status) < keys.index(claim)
    assert [w.value for w in writes if w.key in (status, claim)] == [None, None]


def test_a_scheduler_without_a_service_cidr_claims_nothing():
    store = FakeStore()
    s = Scheduler(store)
    s.controller.service_cidr = None
    try:
        s.apply()
        s.passes()
        assert store.snapshot().vip_claims == {} and vip_of(store) == ""
    finally:
        s.close()


# -- pushing services -----------------------------------------------------------------


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_services_go_to_every_node_at_once_then_at_most_every_tenth_of_a_second(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(controller_mod.time, "monotonic", clock)
    store = FakeStore()
    c = Controller(store, seed=1)
    sent: list = []
    c._pool.submit = lambda fn, node, desired: sent.append((node.name, desired))
    snap = Snapshot(revision=10)
    w = parse_documents(API, "t.yaml")[0]
    w.status.virtual_ip = "10.96.0.9"
    snap.workloads[("shop", "api")] = w
    for name in ("n1", "n2"):
        snap.nodes[name] = types_pb2.Node(name=name, address="127.0.0.1:1")
        snap.heartbeats.add(name)
    r = types_pb2.Replica(workload="api", node="n1")
    r.metadata.namespace, r.metadata.name = "shop", "api-x"
    r.status.phase, r.status.ip = types_pb2.REPLICA_PHASE_RUNNING, "10.244.0.2"
    snap.replicas[("shop", "api-x")] = r
    c.push(snap)
    # Both nodes balance the service, also n2 that runs none of it.
    assert sorted(n for n, _ in sent) == ["n1", "n2"]
    for _, desired in sent:
        (service,) = desired.services
        assert service.virtual_ip == "10.96.0.9"
        assert [(e.replica, e.ready) for e in service.endpoints] == [("api-x", True)]
    sent.clear()
    # The replica leaves the rotation 50 ms later: held back, and the loop
    # is told when to send it.
    clock.now += 0.05
    r2 = types_pb2.Replica()
    r2.CopyFrom(r)
    r2.status.phase = types_pb2.REPLICA_PHASE_FAILED
    snap.replicas[("shop", "api-x")] = r2
    c.push(snap)
    assert sent == []
    assert c._push_due == pytest.approx(1000.0 + SERVICE_PUSH_SECONDS)
    clock.now = 1000.0 + SERVICE_PUSH_SECONDS
    c.push(snap)
    assert sorted(n for n, _ in sent) == ["n1", "n2"]
    assert all(not d.services[0].endpoints for _, d in sent)
    assert c._push_due is None
    sent.clear()
    c.push(snap)
    assert sent == []                                  # nothing changed since
    # A deleted workload leaves every node's services with the next push.
    deleting = types_pb2.Workload()
    deleting.CopyFrom(w)
    deleting.metadata.deletion_requested = True
    snap.workloads[("shop", "api")] = deleting
    clock.now += 1
    c.push(snap)
    assert sorted(n for n, _ in sent) == ["n1", "n2"]
    assert all(not d.services for _, d in sent)


def test_the_loop_wakes_for_a_held_back_push(monkeypatch):
    # _run waits until _push_due rather than the whole resync period.
    store = FakeStore()
    c = Controller(store, seed=1)
    waits: list[float] = []

    class Wake:
        def wait(self, timeout):
            waits.append(timeout)
            c._stop.set()

        def clear(self):
            pass

        def set(self):
            pass

    c._wake = Wake()
    c._push_due = controller_mod.time.monotonic() + 0.05
    monkeypatch.setattr(c, "reconcile_once", lambda: None)
    c._unwatch = lambda: None
    c._run()
    assert 0 <= waits[0] <= 0.05
