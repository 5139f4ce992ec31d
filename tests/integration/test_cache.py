"""The watch-fed state cache against a real etcd: it matches a direct read."""

from __future__ import annotations

import threading
import uuid

import pytest

from mctl.scheduler.cache import StateCache
from mctl.scheduler.store import Store, Write
from mctl.v1 import types_pb2


@pytest.fixture
def store(etcd):
    s = Store(etcd.endpoint, prefix=f"/test-{uuid.uuid4().hex[:8]}/", timeout=2)
    yield s
    s.close()


def replica(name: str, node: str = "") -> types_pb2.Replica:
    r = types_pb2.Replica(workload="web", node=node)
    r.metadata.name = name
    r.metadata.namespace = "default"
    return r


def same(a, b) -> bool:
    return (a.workloads == b.workloads and a.replicas == b.replicas and a.nodes == b.nodes
            and a.heartbeats == b.heartbeats and a.mod_revisions == b.mod_revisions)


def test_the_cache_follows_puts_and_deletes_and_reads_its_own_writes(store):
    woken = threading.Event()
    cache = StateCache(store, on_change=woken.set)
    try:
        first = cache.snapshot()
        assert first.revision > 0 and not first.replicas
        revision = store.commit([
            Write(store.keys.replica("default", f"web-{i}"),
                  replica(f"web-{i}").SerializeToString(), 0)
            for i in range(5)] + [
            Write(store.keys.node("n1"), types_pb2.Node(name="n1").SerializeToString(), 0)])
        snap = cache.snapshot(min_revision=revision)
        assert snap.revision >= revision
        assert sorted(n for _, n in snap.replicas) == [f"web-{i}" for i in range(5)]
        assert woken.wait(2)
        assert same(snap, store.snapshot())

        key = store.keys.replica("default", "web-0")
        revision = store.commit([
            Write(key, replica("web-0", node="n1").SerializeToString(), snap.mod_revisions[key]),
            Write(store.keys.replica("default", "web-1"), None,
                  snap.mod_revisions[store.keys.replica("default", "web-1")])])
        snap = cache.snapshot(min_revision=revision)
        assert snap.replicas[("default", "web-0")].node == "n1"
        assert ("default", "web-1") not in snap.replicas
        assert same(snap, store.snapshot())
        on_n1 = cache.node_snapshot("n1")
        assert list(on_n1.replicas) == [("default", "web-0")]
        assert on_n1.mod_revisions == {key: snap.mod_revisions[key]}
    finally:
        cache.close()


def test_a_snapshot_is_a_copy_the_watch_does_not_change(store):
    cache = StateCache(store)
    try:
        snap = cache.snapshot()
        revision = store.commit([Write(store.keys.replica("default", "a"),
                                       replica("a").SerializeToString(), 0)])
        assert not snap.replicas
        assert ("default", "a") in cache.snapshot(min_revision=revision).replicas
    finally:
        cache.close()


def test_events_are_not_state_and_a_broken_watch_reloads(store):
    cache = StateCache(store)
    try:
        cache.snapshot()
        store.put_many([(store.keys.events_prefix("Node", "", "n1") + "1", b"x")])
        revision = store.commit([Write(store.keys.node("n2"),
                                       types_pb2.Node(name="n2").SerializeToString(), 0)])
        snap = cache.snapshot(min_revision=revision)
        assert list(snap.nodes) == ["n2"]
        assert not any("/events/" in k for k in snap.mod_revisions)
        # The watch ends with an error (etcd gone, history compacted): the
        # next read reloads everything and follows again.
        cache._on_watch(RuntimeError("stream reset"))
        revision = store.commit([Write(store.keys.node("n3"),
                                       types_pb2.Node(name="n3").SerializeToString(), 0)])
        assert sorted(cache.snapshot(min_revision=revision).nodes) == ["n2", "n3"]
        assert same(cache.snapshot(), store.snapshot())
    finally:
        cache.close()


def test_changes_since_a_revision_name_each_put_and_delete_once(store):
    """etcd's delete events carry the revision of the delete: none is missed or repeated."""
    cache = StateCache(store)
    try:
        start = cache.snapshot().revision
        keys = [store.keys.replica("default", f"web-{i}") for i in range(3)]
        store.commit([Write(k, replica(f"web-{i}").SerializeToString(), 0)
                      for i, k in enumerate(keys)])
        middle = cache.snapshot(min_revision=store.revision()).revision
        _, rev = store.get(keys[0])
        revision = store.commit([Write(keys[0], None, rev)])
        cache.snapshot(min_revision=revision)
        found = cache.changes_since(start)
        assert found is not None
        delta, changed = found
        assert sorted(p.name for p in changed) == ["web-0", "web-1", "web-2"]
        assert sorted(n for _, n in delta.replicas) == ["web-1", "web-2"]   # web-0 is gone
        later = cache.changes_since(middle)
        assert later is not None and [p.name for p in later[1]] == ["web-0"]
        assert later[0].revision == revision
    finally:
        cache.close()
