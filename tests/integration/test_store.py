"""The scheduler's store against a real etcd: snapshots, compare-and-swap, outages."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from mctl.scheduler.store import Conflict, Store, StoreUnavailable, Write
from mctl.v1 import types_pb2


@pytest.fixture
def store(etcd):
    s = Store(etcd.endpoint, prefix=f"/test-{uuid.uuid4().hex[:8]}/", timeout=2)
    yield s
    s.close()


def workload(name: str, replicas: int = 1) -> types_pb2.Workload:
    w = types_pb2.Workload()
    w.metadata.name = name
    w.metadata.namespace = "default"
    w.spec.replicas = replicas
    return w


def test_snapshot_sees_what_was_committed(store):
    key = store.keys.workload("default", "web")
    store.commit([Write(key, workload("web", 3).SerializeToString(), 0)])
    snap = store.snapshot()
    assert snap.workloads[("default", "web")].spec.replicas == 3
    assert snap.mod_revisions[key] > 0
    assert snap.revision >= snap.mod_revisions[key]


def test_a_write_based_on_a_stale_read_fails_and_changes_nothing(store):
    key = store.keys.workload("default", "web")
    store.commit([Write(key, workload("web", 1).SerializeToString(), 0)])
    seen = store.snapshot().mod_revisions[key]
    store.commit([Write(key, workload("web", 2).SerializeToString(), seen)])
    with pytest.raises(Conflict):
        store.commit([Write(key, workload("web", 5).SerializeToString(), seen)])
    with pytest.raises(Conflict):   # creating what exists fails too
        store.commit([Write(key, workload("web", 7).SerializeToString(), 0)])
    assert store.snapshot().workloads[("default", "web")].spec.replicas == 2


def test_writes_in_one_transaction_are_all_or_nothing(store):
    a, b = store.keys.workload("default", "a"), store.keys.workload("default", "b")
    store.commit([Write(b, workload("b").SerializeToString(), 0)])
    with pytest.raises(Conflict):
        store.commit([Write(a, workload("a").SerializeToString(), 0),
                      Write(b, workload("b", 9).SerializeToString(), 0)])
    snap = store.snapshot()
    assert ("default", "a") not in snap.workloads
    assert snap.workloads[("default", "b")].spec.replicas == 1


def test_a_stalled_etcd_is_a_clear_error_and_the_store_recovers(store, etcd):
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable, match="etcd"):
            store.snapshot()
        with pytest.raises(StoreUnavailable):
            store.snapshot()
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
    # No five-minute shunning of the endpoint after the failure.
    assert store.snapshot().revision > 0


def test_heartbeat_key_lives_with_its_lease(store):
    lease = store.grant_lease(5)
    store.put(store.keys.heartbeat("n1"), b"x", lease=lease)
    assert "n1" in store.snapshot().heartbeats
    assert store.refresh_lease(lease) > 0
    store.client.revoke_lease(lease)
    assert "n1" not in store.snapshot().heartbeats
