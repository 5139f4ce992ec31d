"""The scheduler is the gate: Apply refuses invalid workloads from any client.

A real etcd and the scheduler's control plane served on loopback, called
through a raw gRPC stub (not the CLI, which checks files itself): every
invalid request is INVALID_ARGUMENT with the field path, is refused before
the store is read at all, and leaves nothing in etcd.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from mctl.common import reasons, rpc, validation
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.store import Store
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2, control_pb2_grpc, types_pb2

MAX_REPLICAS = 10


class CountingStore:
    """The real store, noting each method called on it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)
        return counted


@dataclass
class Scheduler:
    stub: control_pb2_grpc.ControlPlaneStub
    store: Store          # a second client of the same etcd, to look
    served: CountingStore

    def stored(self) -> dict[tuple[str, str], types_pb2.Workload]:
        return self.store.snapshot().workloads


@pytest.fixture
def scheduler(etcd) -> Iterator[Scheduler]:
    prefix = f"/test-{uuid.uuid4().hex[:8]}/"
    store = Store(etcd.endpoint, prefix=prefix, timeout=2)
    served = CountingStore(store)
    cache = StateCache(store)
    controller = Controller(store, cache=cache)     # not started: Apply only wakes it
    plane = ControlPlane(served, cache, controller, UsageCache(),
                         controller.dial,
                         limits=validation.Limits(max_replicas=MAX_REPLICAS))
    server = rpc.make_server(max_workers=4)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(plane, server)
    port = rpc.bind(server, "127.0.0.1:0")
    server.start()
    channel = rpc.make_channel(f"127.0.0.1:{port}")
    looker = Store(etcd.endpoint, prefix=prefix, timeout=2)
    try:
        yield Scheduler(control_pb2_grpc.ControlPlaneStub(channel), looker, served)
    finally:
        channel.close()
        server.stop(grace=None)
        controller.close()
        cache.close()
        looker.close()
        store.close()


def workload(name: str = "api", namespace: str = "shop",
             change: Callable[[types_pb2.Workload], object] = lambda w: None
             ) -> types_pb2.Workload:
    """A valid workload, as the CLI would send it, then `change`d."""
    w = types_pb2.Workload()
    w.metadata.name, w.metadata.namespace = name, namespace
    s = w.spec
    s.replicas, s.image, s.restart_policy, s.spread = 1, "busybox", "Always", True
    s.resources.cpu_millis, s.resources.memory_bytes, s.resources.pids = 250, 64 << 20, 256
    s.update.max_unavailable, s.update.max_surge = 1, 1
    change(w)
    return w


def refusal(scheduler: Scheduler, *workloads: types_pb2.Workload) -> str:
    """Applies `workloads`, which must be refused as invalid; returns the message."""
    with pytest.raises(grpc.RpcError) as e:
        scheduler.stub.Apply(control_pb2.ApplyRequest(workloads=workloads), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert scheduler.served.calls == []      # refused before any read
    assert scheduler.stored() == {}
    return e.value.details()


def test_a_valid_apply_is_stored(scheduler):
    # The control for everything below: the same path does store.
    answer = scheduler.stub.Apply(control_pb2.ApplyRequest(workloads=[workload()]), timeout=10)
    assert [(r.namespace, r.name, r.action) for r in answer.results] == \
        [("shop", "api", "created")]
    assert scheduler.stored()[("shop", "api")].spec.replicas == 1
    assert scheduler.served.calls


def test_negative_replicas(scheduler):
    bad = workload(change=lambda w: setattr(w.spec, "replicas", -1))
    assert refusal(scheduler, bad) == "workload shop/api: spec.replicas: must be at least 0, not -1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: setattr(w.spec, "image", "../../etc"),
         'workload shop/api: spec.image: "../../etc" is not an image reference'),
        (lambda w: w.spec.command.append(""),
         "workload shop/api: spec.command[0]: must not be empty"),
        (lambda w: setattr(w.spec.resources, "cpu_millis", 0),
         "workload shop/api: spec.resources.cpu: must be more than 0, not 0m"),
        (lambda w: setattr(w.spec, "restart_policy", "Sometimes"),
         'workload shop/api: spec.restartPolicy: must be one of Always, OnFailure, Never,'
         ' not "Sometimes"'),
        (lambda w: [w.spec.ports.add(container_port=80, host_port=p, protocol="TCP")
                    for p in (8080, 70000)],
         "workload shop/api: spec.ports[1].hostPort: must be at most 65535, not 70000"),
        (lambda w: w.spec.ports.add(container_port=80, protocol="SCTP"),
         'workload shop/api: spec.ports[0].protocol: must be one of TCP, UDP, not "SCTP"'),
        (lambda w: [w.spec.env.add(name="A"), w.spec.env.add(name="A")],
         'workload shop/api: spec.env[1].name: "A" is set twice'),
        (lambda w: w.spec.node_selector.update({"a b": "c"}),
         'workload shop/api: spec.nodeSelector: label key "a b" is not valid'),
        (lambda w: setattr(w.metadata, "name", "API"),
         'workloads[0]: metadata.name: "API" is not a DNS label'),
        (lambda w: setattr(w.spec, "replicas", MAX_REPLICAS + 1),
         f"workload shop/api: spec.replicas: must be at most {MAX_REPLICAS}, not"
         f" {MAX_REPLICAS + 1} (the scheduler's --max-replicas)"),
    ],
)
def test_what_a_raw_client_gets_wrong(scheduler, change, message):
    assert refusal(scheduler, workload(change=change)).startswith(message)


def test_one_bad_workload_stores_none_of_the_request(scheduler):
    assert refusal(scheduler, workload("a"), workload("b", change=lambda w: setattr(
        w.spec.update, "max_surge", -1))) == \
        "workload shop/b: spec.update.maxSurge: must be at least 0, not -1"


def test_the_same_workload_twice(scheduler):
    assert refusal(scheduler, workload("a"), workload("a")) == \
        "workload shop/a: listed twice in one apply (workloads[0] and workloads[1])"


def test_too_many_workloads_in_one_apply(scheduler):
    many = [workload(f"w{i}") for i in range(validation.MAX_WORKLOADS_PER_APPLY + 1)]
    assert refusal(scheduler, *many) == (
        f"at most {validation.MAX_WORKLOADS_PER_APPLY} workloads in one apply, not"
        f" {validation.MAX_WORKLOADS_PER_APPLY + 1}: apply them in parts")
    # At the limit, all of them are stored in one transaction.
    answer = scheduler.stub.Apply(control_pb2.ApplyRequest(workloads=many[:-1]), timeout=30)
    assert len(answer.results) == validation.MAX_WORKLOADS_PER_APPLY
    assert len(scheduler.stored()) == validation.MAX_WORKLOADS_PER_APPLY


def test_a_store_outage_is_unavailable_with_its_reason(scheduler, etcd):
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.RpcError) as e:
            scheduler.stub.Apply(control_pb2.ApplyRequest(workloads=[workload()]), timeout=20)
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert e.value.details().startswith("the cluster store is unavailable: ")
    # Not "no scheduler there": the CLI tells the two apart by this, not by words.
    assert reasons.of(e.value) == reasons.STORE_UNAVAILABLE
