"""Spec revisions in a real etcd: read in order, bounded, and kept out of every snapshot.

Snapshots read the prefix less the history ranges (events/, revisions/);
keys on both sides of revisions/ (replicas/ before it, secrets/, vips/ and
volumes/ after) must still be read.
"""

from __future__ import annotations

import uuid

import pytest

from mctl.scheduler import revisions
from mctl.scheduler.store import Store, Write
from mctl.v1 import types_pb2


@pytest.fixture
def store(etcd):
    s = Store(etcd.endpoint, prefix=f"/test-{uuid.uuid4().hex[:8]}/", timeout=2)
    yield s
    s.close()


def test_revisions_are_read_in_order_bounded_and_never_in_a_snapshot(store):
    k = store.keys
    for i in range(13):
        spec = types_pb2.WorkloadSpec(image=f"busybox:{i}")
        writes, number = revisions.record(revisions.read(store, "ns", "w"), spec, "apply", i,
                                          lambda n: k.revision("ns", "w", n), limit=10)
        store.commit(writes)
        assert number == i + 1
    # Another workload whose name extends this one's is not in its history.
    store.commit(revisions.record([], types_pb2.WorkloadSpec(image="x"), "apply", 0,
                                  lambda n: k.revision("ns", "w-2", n))[0])
    kept = revisions.read(store, "ns", "w")
    assert [s.revision.number for s in kept] == list(range(4, 14))
    assert kept[-1].revision.spec.image == "busybox:12"

    r = types_pb2.Replica(workload="w")
    store.commit([Write(k.replica("ns", "w-abcde"), r.SerializeToString(), 0),
                  Write(k.secret("ns", "s"), b"sealed", 0),
                  Write(k.vip("10.96.0.1"), b"ns/w", 0)])
    snap = store.snapshot()
    assert set(snap.replicas) == {("ns", "w-abcde")}
    assert set(snap.secrets) == {("ns", "s")} and snap.vip_claims == {"10.96.0.1": "ns/w"}
    assert not [key for key in snap.mod_revisions if "/revisions/" in key]

    store.commit(revisions.deletes(kept))
    assert revisions.read(store, "ns", "w") == []
    assert len(revisions.read(store, "ns", "w-2")) == 1
