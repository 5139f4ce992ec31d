"""Watch streams (scheduler/watchstream.py): the list, then the changes, bounded.

The hub runs on the real watch cache over the in-memory store; its RPC
handlers are driven as gRPC would drive them, with a context that records
what they abort with.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from fake_store import FakeStore

from mctl.common import reasons
from mctl.scheduler import objects, secretbox, watchstream
from mctl.scheduler.cache import StateCache
from mctl.scheduler.events import event
from mctl.scheduler.keys import Kind, ParsedKey
from mctl.scheduler.store import Snapshot, Write
from mctl.scheduler.watchstream import Filter, Stream, WatchHub
from mctl.v1 import control_pb2, types_pb2

ADDED = control_pb2.WATCH_CHANGE_TYPE_ADDED
MODIFIED = control_pb2.WATCH_CHANGE_TYPE_MODIFIED
DELETED = control_pb2.WATCH_CHANGE_TYPE_DELETED


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.active = True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)

    def add_callback(self, fn: Any) -> bool:
        self.callbacks.append(fn)
        return True

    def is_active(self) -> bool:
        return self.active

    def set_trailing_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        self.trailing = md

    def hang_up(self) -> None:
        self.active = False
        for fn in self.callbacks:
            fn()


class Reader:
    """Pulls a stream's messages on a thread, so a test can wait for one with a deadline."""

    def __init__(self, gen: Iterator[Any]) -> None:
        self.items: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(gen,), daemon=True)
        self.thread.start()

    def _run(self, gen: Iterator[Any]) -> None:
        try:
            for item in gen:
                self.items.put(item)
        except Exception as e:  # noqa: BLE001 - handed to the test
            self.items.put(e)
        self.items.put(None)

    def next(self, timeout: float = 5.0) -> Any:
        return self.items.get(timeout=timeout)


def replica(ns: str, name: str, workload: str = "web", node: str = "",
            phase: int = types_pb2.REPLICA_PHASE_PENDING) -> types_pb2.Replica:
    r = types_pb2.Replica(workload=workload, node=node)
    r.metadata.namespace, r.metadata.name = ns, name
    r.status.phase = phase  # type: ignore[assignment]
    return r


def put_replica(store: FakeStore, r: types_pb2.Replica) -> None:
    key = store.keys.replica(r.metadata.namespace, r.metadata.name)
    _, rev = store.get(key)
    store.commit([Write(key, r.SerializeToString(), rev)])


@pytest.fixture
def world(monkeypatch) -> Iterator[tuple[FakeStore, WatchHub]]:
    monkeypatch.setattr(watchstream, "IDLE_CHECK_SECONDS", 0.05)
    store = FakeStore()
    workload = types_pb2.Workload()
    workload.metadata.namespace, workload.metadata.name = "default", "web"
    workload.spec.replicas = 2
    store.commit([Write(store.keys.workload("default", "web"), workload.SerializeToString(), 0)])
    put_replica(store, replica("default", "web-a"))
    put_replica(store, replica("shop", "cart-a", workload="cart"))
    cache = StateCache(store)
    hub = WatchHub(cache, store.keys, events=store, max_streams=2, queue_limit=50)
    cache.on_change = hub.changed
    cache.on_history = hub.history
    cache.snapshot()           # loaded and watching, as a scheduler's is once ready
    yield store, hub
    hub.close()
    cache.close()


def test_replicas_list_then_each_change_in_the_namespace_only(world):
    store, hub = world
    ctx = Context()
    reader = Reader(hub.watch_objects(
        control_pb2.WatchObjectsRequest(kind="replicas", namespace="default"), ctx))
    first = reader.next()
    assert [(c.type, c.replica.metadata.name) for c in first.changes] == [(ADDED, "web-a")]
    assert reader.next().synced
    put_replica(store, replica("shop", "cart-b", workload="cart"))     # another namespace
    put_replica(store, replica("default", "web-b"))
    added = reader.next()
    assert [(c.type, c.replica.metadata.name) for c in added.changes] == [(ADDED, "web-b")]
    running = replica("default", "web-a", phase=types_pb2.REPLICA_PHASE_RUNNING)
    put_replica(store, running)
    modified = reader.next()
    assert [(c.type, c.replica.status.phase) for c in modified.changes] == [
        (MODIFIED, types_pb2.REPLICA_PHASE_RUNNING)]
    key = store.keys.replica("default", "web-b")
    store.commit([Write(key, None, store.get(key)[1])])
    gone = reader.next()
    assert [(c.type, c.replica.metadata.name) for c in gone.changes] == [(DELETED, "web-b")]
    ctx.hang_up()
    assert reader.next() is None
    assert hub.streams == 0


def test_a_workload_row_changes_when_its_replicas_do(world):
    store, hub = world
    reader = Reader(hub.watch_objects(control_pb2.WatchObjectsRequest(kind="workloads"),
                                      Context()))
    first = reader.next()
    assert [(c.summary.running, c.summary.desired) for c in first.changes] == [(0, 2)]
    assert reader.next().synced
    put_replica(store, replica("default", "web-a", phase=types_pb2.REPLICA_PHASE_RUNNING))
    change = reader.next().changes
    assert [(c.type, c.summary.running) for c in change] == [(MODIFIED, 1)]


def test_an_unchanged_row_is_not_sent_again(world):
    store, hub = world
    reader = Reader(hub.watch_objects(control_pb2.WatchObjectsRequest(kind="nodes"), Context()))
    assert reader.next().synced                       # no nodes: just the end of the list
    put_replica(store, replica("default", "web-c"))   # no node row changes
    node = types_pb2.Node(name="n1")
    store.commit([Write(store.keys.node("n1"), node.SerializeToString(), 0)])
    change = reader.next().changes
    assert [(c.type, c.node.name, c.node.ready) for c in change] == [(ADDED, "n1", False)]
    with pytest.raises(queue.Empty):
        reader.next(timeout=0.3)


def test_a_slow_client_is_cut_off_with_a_reason_and_memory_stays_bounded(world):
    store, hub = world
    hub.queue_limit = 3
    ctx = Context()
    gen = hub.watch_objects(control_pb2.WatchObjectsRequest(kind="replicas"), ctx)
    next(gen)
    assert next(gen).synced
    # The client reads nothing while many changes come, one publish at a time.
    for i in range(10):
        put_replica(store, replica("default", f"web-{i}"))
        hub.publish()                          # as the hub's thread does on each change
    with pytest.raises(Aborted) as cut:
        for _ in range(10):
            next(gen)
    assert cut.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "slower than the changes came" in str(cut.value)
    assert ctx.trailing == ((reasons.KEY, reasons.WATCH_FELL_BEHIND),)


def test_streams_are_capped_per_scheduler(world):
    _, hub = world
    readers = [Reader(hub.watch_objects(control_pb2.WatchObjectsRequest(kind="nodes"),
                                        Context())) for _ in range(2)]
    for r in readers:
        assert r.next().synced
    with pytest.raises(Aborted) as refused:
        next(hub.watch_objects(control_pb2.WatchObjectsRequest(kind="nodes"), Context()))
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 watch streams already" in str(refused.value)


@pytest.mark.parametrize("request_, problem", [
    (control_pb2.WatchObjectsRequest(kind="pods"), "kind: want one of"),
    (control_pb2.WatchObjectsRequest(kind="replicas", namespace="Bad_NS"), "namespace:"),
    (control_pb2.WatchObjectsRequest(kind="replicas", name="x" * 64), "name:"),
])
def test_bad_requests_are_refused_with_the_field(world, request_, problem):
    _, hub = world
    with pytest.raises(Aborted) as bad:
        next(hub.watch_objects(request_, Context()))
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(bad.value).startswith(problem)


def store_event(store: FakeStore, e: types_pb2.Event, seq: int) -> None:
    e.unix_ms = e.unix_ms or 1000 + seq
    prefix = store.keys.events_prefix(e.kind, e.namespace, e.name)
    store.put(f"{prefix}{e.unix_ms:013d}-{seq:06d}", e.SerializeToString())


def test_events_stored_then_live_each_once_with_node_events_in_every_namespace(world):
    store, hub = world
    store_event(store, event("Replica", "default", "web-a", "Started", "up"), 1)
    store_event(store, event("Replica", "shop", "cart-a", "Started", "up"), 2)
    store_event(store, event("Node", "", "n1", "Registered", "hello"), 3)
    reader = Reader(hub.watch_events(
        control_pb2.WatchEventsRequest(namespace="default", follow=True), Context()))
    listed = reader.next()
    assert [e.reason for e in listed.items] == ["Started", "Registered"]
    assert len(set(listed.ids)) == 2
    assert reader.next().synced
    store_event(store, event("Replica", "shop", "cart-a", "Killed", "x"), 4)
    store_event(store, event("Replica", "default", "web-a", "Killed", "oom"), 5)
    live = reader.next()
    assert [(e.name, e.reason) for e in live.items] == [("web-a", "Killed")]


def test_events_without_follow_end_after_the_stored_ones_and_take_no_stream_slot(world):
    store, hub = world
    store_event(store, event("Workload", "default", "web", "Scaled", "2"), 1)
    out = list(hub.watch_events(control_pb2.WatchEventsRequest(kind="Workload", name="web"),
                                Context()))
    assert [e.reason for m in out for e in m.items] == ["Scaled"]
    assert out[-1].synced
    assert hub.streams == 0


def test_an_event_both_read_and_heard_is_sent_once(world):
    store, hub = world
    e = event("Replica", "default", "web-a", "Started", "up")
    e.unix_ms = 5
    raw = e.SerializeToString()
    store_event(store, e, 1)
    reader = Reader(hub.watch_events(control_pb2.WatchEventsRequest(follow=True), Context()))
    assert [x.reason for x in reader.next().items] == ["Started"]
    assert reader.next().synced
    hub.history(raw)                   # the watch delivering what the read already saw
    store_event(store, event("Replica", "default", "web-a", "Killed", "x"), 2)
    assert [x.reason for x in reader.next().items] == ["Killed"]


def test_stream_queue_is_bounded():
    s: Stream[int] = Stream(Filter("replicas", "", ""), limit=2)
    s.offer(1)
    s.offer(2)
    assert not s.fell_behind
    s.offer(3)
    assert s.fell_behind
    assert s.take(0) == []        # what waited is dropped, not kept for a client that lags
    s.offer(4)
    assert s.take(0) == []


def test_versions_follow_what_rows_derive():
    store = FakeStore()
    put_replica(store, replica("default", "web-a", node="n1",
                               phase=types_pb2.REPLICA_PHASE_RUNNING))
    store.commit([Write(store.keys.node("n1"), types_pb2.Node(name="n1").SerializeToString(),
                        0)])
    tracker = watchstream.Tracker(store.keys)
    tracker.load(store.snapshot())
    before = {k: tracker.version(k, key) for k, key in KEYS}
    # The node heartbeats: its row and the replica's change, and nothing else is read.
    beat = store.snapshot()
    beat.heartbeats.add("n1")
    touched = tracker.apply(beat, [ParsedKey(Kind.HEARTBEAT, "", "n1")])
    assert touched == {"nodes": {("", "n1")}, "replicas": {("default", "web-a")},
                       "workloads": set()}
    after = {k: tracker.version(k, key) for k, key in KEYS}
    assert before["nodes"] != after["nodes"]
    assert before["replicas"] == f"{store.get(store.keys.replica('default', 'web-a'))[1]}-lost"
    assert after["replicas"] != before["replicas"]


KEYS = [("nodes", ("", "n1")), ("replicas", ("default", "web-a"))]


def set_key(store: FakeStore, key: str, value: bytes | None) -> None:
    store.commit([Write(key, value, store.get(key)[1])])


def random_step(rng: random.Random, store: FakeStore) -> None:
    """One write of a small cluster where every derived count can move."""
    keys, what = store.keys, rng.choices(range(6), weights=[1, 1, 1, 1, 1, 8])[0]
    ns = rng.choice(["default", "shop"])
    gone = rng.random() < 0.2
    if what == 0:
        w = types_pb2.Workload()
        w.metadata.namespace, w.metadata.name = ns, rng.choice(["web", "api"])
        w.spec.replicas, w.spec.image = rng.randrange(4), f"busybox:{rng.randrange(3)}"
        for i, source in enumerate(rng.sample(["config", "secret", ""], 2)):
            if source:
                var = w.spec.env.add(name=f"V{i}")
                setattr(var.value_from, source, rng.choice(["c1", "c2"]))
                var.value_from.key = "k"
        set_key(store, keys.workload(ns, w.metadata.name),
                None if gone else w.SerializeToString())
    elif what == 1:
        c = types_pb2.Config()
        c.metadata.namespace, c.metadata.name = ns, rng.choice(["c1", "c2"])
        c.data["k"] = str(rng.randrange(3))
        set_key(store, keys.config(ns, c.metadata.name), None if gone else c.SerializeToString())
    elif what == 2:
        sealed = secretbox.MAGIC + bytes(secretbox.KEY_ID_BYTES) + bytes([rng.randrange(3)]) * 40
        set_key(store, keys.secret(ns, rng.choice(["c1", "c2"])), None if gone else sealed)
    elif what == 3:
        name = rng.choice(["n1", "n2", "n3"])
        set_key(store, keys.node(name),
                None if gone else types_pb2.Node(name=name, address=str(rng.random()))
                .SerializeToString())
    elif what == 4:
        name = rng.choice(["n1", "n2", "n3"])
        set_key(store, keys.heartbeat(name), None if rng.random() < 0.5 else b"")
    else:
        r = replica(ns, f"r{rng.randrange(12)}", workload=rng.choice(["web", "api"]),
                    node=rng.choice(["", "n1", "n2", "n3"]),
                    phase=rng.choice([types_pb2.REPLICA_PHASE_PENDING,
                                      types_pb2.REPLICA_PHASE_RUNNING,
                                      types_pb2.REPLICA_PHASE_FAILED]))
        r.status.ready = rng.random() < 0.5
        r.metadata.deletion_requested = rng.random() < 0.2
        r.spec.resources.cpu_millis = rng.randrange(1, 4) * 100
        snap = store.snapshot()
        w = snap.workloads.get((ns, r.workload))
        r.spec_hash = objects.workload_hash(w, snap) if w is not None and rng.random() < 0.7 \
            else "old"
        set_key(store, keys.replica(ns, r.metadata.name),
                None if gone else r.SerializeToString())


@pytest.mark.parametrize("seed", range(6))
def test_following_changes_gives_what_a_whole_snapshot_gives(seed):
    """Rows kept change by change (only the touched ones rebuilt) agree, row by row,
    with rows built from scratch from a whole snapshot, after every change."""
    rng = random.Random(seed)
    store = FakeStore()
    cache = StateCache(store)
    tracker = watchstream.Tracker(store.keys)
    tracker.load(cache.snapshot())
    rows: dict[str, watchstream.Rows] = {kind: {} for kind in watchstream.KINDS}
    revision = cache.revision
    for _ in range(200):
        random_step(rng, store)
        found = cache.changes_since(revision)
        assert found is not None
        delta, changed = found
        touched = tracker.apply(delta, changed)
        revision = delta.revision
        whole = watchstream.Tracker(store.keys)
        everything = whole.load(cache.snapshot())
        for kind in watchstream.KINDS:
            watchstream.update(rows[kind], touched[kind],
                               lambda key, kind=kind: tracker.version(kind, key),
                               lambda key, v, kind=kind: watchstream.row(tracker, kind, key, v,
                                                                         None))
            expected: watchstream.Rows = {}
            watchstream.update(expected, everything[kind],
                               lambda key, kind=kind, t=whole: t.version(kind, key),
                               lambda key, v, kind=kind, t=whole: watchstream.row(t, kind, key,
                                                                                  v, None))
            assert rows[kind].keys() == expected.keys(), kind
            for key, (version, change) in expected.items():
                assert rows[kind][key][0] == version, (kind, key)
                mine = control_pb2.WatchChange()
                mine.CopyFrom(rows[kind][key][1])
                mine.ClearField("type")
                change.ClearField("type")
                assert mine == change, (kind, key)
    cache.close()


def test_the_cache_tells_changes_since_a_revision_while_it_can():
    store = FakeStore()
    cache = StateCache(store)
    assert cache.changes_since(0) is None                   # not loaded
    cache.snapshot()
    start = cache.revision
    put_replica(store, replica("default", "web-a"))
    put_replica(store, replica("default", "web-b"))
    key = store.keys.replica("default", "web-a")
    store.commit([Write(key, None, store.get(key)[1])])
    found = cache.changes_since(start)
    assert found is not None
    delta, changed = found
    assert sorted(p.name for p in changed) == ["web-a", "web-b"]
    assert list(delta.replicas) == [("default", "web-b")]   # web-a: deleted, no record
    assert delta.revision == cache.revision
    assert cache.changes_since(cache.revision) == (Snapshot(revision=cache.revision), [])
    keys_only = cache.changes_since(start, records=False)      # the controller's call
    assert keys_only is not None
    assert sorted(p.name for p in keys_only[1]) == ["web-a", "web-b"]
    assert keys_only[0] == Snapshot(revision=cache.revision)   # no records copied


def test_the_cache_says_so_when_it_cannot_tell(monkeypatch):
    from mctl.scheduler import cache as cache_module

    monkeypatch.setattr(cache_module, "JOURNAL_LIMIT", 2)
    store = FakeStore()
    cache = StateCache(store)
    cache.snapshot()
    start = cache.revision
    for name in ("a", "b"):
        put_replica(store, replica("default", name))
    assert cache.changes_since(start) is not None
    put_replica(store, replica("default", "c"))             # the first change forgotten
    assert cache.changes_since(start) is None
    assert cache.changes_since(start + 1) is not None
    at = cache.revision
    cache._on_watch(ConnectionError("etcd restarted"))      # the watch breaks: a reload
    cache.snapshot()
    assert cache.changes_since(at - 1) is None


def test_a_burst_beyond_what_the_cache_keeps_is_sent_by_comparing_everything(world,
                                                                             monkeypatch):
    from mctl.scheduler import cache as cache_module

    monkeypatch.setattr(cache_module, "JOURNAL_LIMIT", 3)
    store, hub = world
    reader = Reader(hub.watch_objects(control_pb2.WatchObjectsRequest(kind="replicas"),
                                      Context()))
    assert len(reader.next().changes) == 2
    assert reader.next().synced
    with hub._lock:                 # the hub's thread waits while the burst comes
        for i in range(5):
            put_replica(store, replica("default", f"burst-{i}"))
        assert hub.state.changes_since(hub._revision) is None
    sent = []
    while len(sent) < 5:
        sent += [(c.type, c.replica.metadata.name) for c in reader.next().changes]
    assert sent == [(ADDED, f"burst-{i}") for i in range(5)]
    put_replica(store, replica("default", "burst-0", phase=types_pb2.REPLICA_PHASE_RUNNING))
    assert [(c.type, c.replica.metadata.name) for c in reader.next().changes] == [
        (MODIFIED, "burst-0")]
    with pytest.raises(queue.Empty):
        reader.next(timeout=0.3)


def test_the_scheduler_chains_the_hub_after_the_cache_listeners_it_had():
    from mctl.scheduler.main import follow_cache

    calls: list[str] = []

    class Hub:
        def changed(self) -> None:
            calls.append("hub changed")

        def history(self, stored: bytes) -> None:
            calls.append(f"hub {stored!r}")

    cache = StateCache(FakeStore())
    cache.on_change = lambda: calls.append("controller")
    cache.on_history = lambda stored: calls.append(f"feed {stored!r}")
    follow_cache(cache, Hub())  # type: ignore[arg-type]
    assert cache.on_change is not None and cache.on_history is not None
    cache.on_change()
    cache.on_history(b"e")
    assert calls == ["controller", "hub changed", "feed b'e'", "hub b'e'"]


def labelled(name: str, **labels: str) -> types_pb2.Replica:
    r = replica("default", name)
    r.metadata.labels.update(labels)
    return r


def test_a_label_selector_sends_objects_entering_and_leaving_it(world):
    store, hub = world
    put_replica(store, labelled("web-a", app="web"))
    reader = Reader(hub.watch_objects(control_pb2.WatchObjectsRequest(
        kind="replicas", label_selector="app=web"), Context()))
    assert [c.replica.metadata.name for c in reader.next().changes] == ["web-a"]
    assert reader.next().synced
    put_replica(store, labelled("cart-z", app="cart"))          # never matches: not sent
    put_replica(store, labelled("web-b", app="web"))
    assert [(c.type, c.replica.metadata.name) for c in reader.next().changes] == [
        (ADDED, "web-b")]
    put_replica(store, labelled("web-a", app="old"))            # leaves the selection
    assert [(c.type, c.replica.metadata.name) for c in reader.next().changes] == [
        (DELETED, "web-a")]
    put_replica(store, labelled("cart-z", app="web"))           # enters it
    assert [(c.type, c.replica.metadata.name) for c in reader.next().changes] == [
        (ADDED, "cart-z")]
    put_replica(store, labelled("cart-z", app="web", tier="x"))  # changes within it
    assert [(c.type, c.replica.metadata.name) for c in reader.next().changes] == [
        (MODIFIED, "cart-z")]


def test_a_bad_selector_is_refused_with_the_field(world):
    _, hub = world
    with pytest.raises(Aborted) as bad:
        next(hub.watch_objects(control_pb2.WatchObjectsRequest(
            kind="replicas", label_selector="a in (b"), Context()))
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(bad.value).startswith("label_selector: ")


def test_one_nodes_events_are_found_whatever_namespace_is_asked(world):
    store, hub = world
    store_event(store, event("Node", "", "n1", "Registered", "hello"), 1)
    store_event(store, event("Node", "", "n2", "Registered", "hello"), 2)
    out = list(hub.watch_events(control_pb2.WatchEventsRequest(
        kind="Node", namespace="shop", name="n1"), Context()))
    assert [(e.name, e.reason) for m in out for e in m.items] == [("n1", "Registered")]


def test_a_stream_starts_with_the_newest_stored_events_only(world, monkeypatch):
    store, hub = world
    monkeypatch.setattr(watchstream, "MAX_STORED_SENT", 2)
    for i in range(4):
        store_event(store, event("Replica", "default", "web-a", f"R{i}", "x"), i)
    out = list(hub.watch_events(control_pb2.WatchEventsRequest(), Context()))
    assert [e.reason for m in out for e in m.items] == ["R2", "R3"]


def first_list(hub: WatchHub, kind: str) -> list[control_pb2.WatchChange]:
    gen = hub.watch_objects(control_pb2.WatchObjectsRequest(kind=kind), Context())
    changes: list[control_pb2.WatchChange] = []
    for m in gen:
        if m.synced:
            gen.close()
            return changes
        changes += m.changes
    raise AssertionError("the stream ended before its list did")


def test_watch_rows_are_what_the_lists_say(world):
    """Each kind's first list equals its List reply: the two cannot drift apart."""
    from mctl.scheduler.api import ControlPlane
    from mctl.scheduler.controller import Controller
    from mctl.scheduler.usage import UsageCache

    store, hub = world
    node = types_pb2.Node(name="n1", address="127.0.0.1:1")
    node.capacity.cpu_millis = 2000
    node.labels["zone"] = "a"
    store.commit([Write(store.keys.node("n1"), node.SerializeToString(), 0)])
    r = replica("default", "web-a", node="n1", phase=types_pb2.REPLICA_PHASE_RUNNING)
    r.status.ready = True
    r.spec.resources.cpu_millis = 250
    snap = store.snapshot()
    r.spec_hash = objects.workload_hash(snap.workloads[("default", "web")], snap)  # up to date
    put_replica(store, r)
    api = ControlPlane(store, hub.state, Controller(store, seed=1),  # type: ignore[arg-type]
                       UsageCache(), lambda n: None)  # type: ignore[arg-type,return-value]
    lists = {"workloads": api.ListWorkloads, "replicas": api.ListReplicas,
             "nodes": api.ListNodes}
    for kind, fetch in lists.items():
        listed = fetch(control_pb2.ListRequest(), Context())
        changes = first_list(hub, kind)
        if kind == "workloads":
            assert [c.workload for c in changes] == list(listed.items)
            assert [c.summary for c in changes] == list(listed.summaries)
        elif kind == "replicas":
            assert [c.replica for c in changes] == list(listed.items)
        else:
            assert [c.node for c in changes] == list(listed.items)
            assert [c.allocated for c in changes] == list(listed.allocated)
            assert [c.replicas for c in changes] == list(listed.replicas)
