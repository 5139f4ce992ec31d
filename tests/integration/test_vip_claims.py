"""Virtual IPs claimed in a real etcd: kept across restarts and updates, never shared, freed.

The scheduler's API and controller (not started: passes are run by hand)
over a real etcd and the watch-fed cache, as mctl-scheduler runs them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from mctl.common.spec import parse_documents
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.store import Conflict, Store
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2


def workload_yaml(name: str, image: str = "busybox", ports: bool = True) -> str:
    return (f"apiVersion: mctl/v1\nkind: Workload\nmetadata: {{name: {name}, namespace: shop}}\n"
            f"spec:\n  replicas: 1\n  image: {image}\n"
            + ("  ports: [{name: http, containerPort: 8080}]\n" if ports else ""))


class Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"{code}: {details}")


class Scheduler:
    """One mctl-scheduler's store, cache, controller and API."""

    def __init__(self, endpoint: str, prefix: str, seed: int) -> None:
        self.store = Store(endpoint, prefix=prefix, timeout=2)
        self.cache = StateCache(self.store)
        self.controller = Controller(self.store, seed=seed, cache=self.cache)
        self.api = ControlPlane(self.store, self.cache, self.controller, UsageCache(),
                                self.controller.dial)

    def apply(self, *texts: str) -> None:
        workloads = [w for t in texts for w in parse_documents(t, "t.yaml")]
        self.api.Apply(control_pb2.ApplyRequest(workloads=workloads), Context())

    def delete(self, name: str) -> None:
        self.api.Delete(control_pb2.DeleteRequest(
            workloads=[control_pb2.ObjectRef(namespace="shop", name=name)]), Context())

    def passes(self, n: int = 3) -> None:
        for _ in range(n):
            # The running loop is woken by the cache when a change arrives;
            # here each pass waits for the cache to hold every write made.
            self.cache.latest()
            try:
                self.controller.reconcile_once()
            except Conflict:
                self.controller._fresh_read = True     # as the loop does

    def close(self) -> None:
        self.controller.close()
        self.cache.close()
        self.store.close()


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def looker(etcd, prefix) -> Iterator[Store]:
    s = Store(etcd.endpoint, prefix=prefix, timeout=2)
    yield s
    s.close()


def vips_of(store: Store) -> dict[str, str]:
    snap = store.snapshot()
    return {name: w.status.virtual_ip for (_, name), w in snap.workloads.items()}


def test_the_address_is_kept_across_updates_and_a_restart_and_freed_on_delete(
        etcd, prefix, looker):
    first = Scheduler(etcd.endpoint, prefix, seed=1)
    try:
        first.apply(workload_yaml("api"))
        first.passes()
        vip = vips_of(looker)["api"]
        assert vip.startswith("10.96.")
        assert looker.snapshot().vip_claims == {vip: "shop/api"}
        first.apply(workload_yaml("api", image="busybox:2"))      # a rolling update
        first.passes()
        assert vips_of(looker)["api"] == vip
    finally:
        first.close()
    # Another scheduler process (another seed, an empty cache) takes over.
    second = Scheduler(etcd.endpoint, prefix, seed=2)
    try:
        revision = looker.revision()
        second.passes()
        assert vips_of(looker)["api"] == vip
        assert looker.revision() == revision            # nothing to write
        second.delete("api")
        second.passes()
        snap = looker.snapshot()
        assert snap.workloads == {} and snap.vip_claims == {}
        assert looker.get(looker.keys.vip(vip)) == (None, 0)
    finally:
        second.close()


def test_two_schedulers_deciding_at_once_never_share_an_address(etcd, prefix, looker):
    # Only a leader decides; should two ever pass at once (a leader paused
    # past its lease), the claims' compare-and-swap still keeps them apart.
    names = [f"svc{i}" for i in range(24)]
    a, b = Scheduler(etcd.endpoint, prefix, seed=1), Scheduler(etcd.endpoint, prefix, seed=1)
    try:
        a.apply(*(workload_yaml(n) for n in names))
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(s: Scheduler) -> None:
            start.wait()
            try:
                s.passes(6)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        a.passes(2)
        got = vips_of(looker)
        assert set(got) == set(names) and all(got.values())
        assert len(set(got.values())) == len(names)
        claims = looker.snapshot().vip_claims
        assert claims == {ip: f"shop/{name}" for name, ip in got.items()}
    finally:
        a.close()
        b.close()


def test_losing_its_ports_gives_the_address_back(etcd, prefix, looker):
    s = Scheduler(etcd.endpoint, prefix, seed=3)
    try:
        s.apply(workload_yaml("api"))
        s.passes()
        assert vips_of(looker)["api"]
        s.apply(workload_yaml("api", ports=False))
        s.passes()
        assert vips_of(looker)["api"] == ""
        assert looker.snapshot().vip_claims == {}
    finally:
        s.close()
