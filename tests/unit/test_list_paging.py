"""Lists in pages (scheduler/paging.py), and the cluster's replica cap at Apply.

The control plane runs on an in-memory store (fake_store.py) read through
the real watch cache. With 20,000 replicas, whose one-piece list would be
far over any sane message limit, every page stays under the page bounds,
the pages together hold every replica once in key order, and `mctl get
replicas` (the CLI in-process, over gRPC on loopback) prints them all.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from fake_store import FakeStore

from mctl.cli import main as cli
from mctl.common import rpc
from mctl.scheduler import paging
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.store import MAX_TXN_OPS, Write
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2, control_pb2_grpc, types_pb2


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


class Context:
    def abort(self, code, details):
        raise Aborted(code, details)

    def add_callback(self, fn):
        pass

    def set_trailing_metadata(self, metadata):
        pass


class Events:
    def __init__(self, items: list[types_pb2.Event]) -> None:
        self.items = items

    def record(self, e: types_pb2.Event) -> None:
        self.items.append(e)

    def list(self, kind, namespace, name):
        return list(self.items)


def replica(namespace: str, name: str, payload: int) -> types_pb2.Replica:
    r = types_pb2.Replica(workload="big", spec_hash="h")
    r.metadata.namespace, r.metadata.name, r.metadata.uid = namespace, name, f"uid-{name}"
    r.spec.image = "busybox"
    # A spec as users write them: an environment makes each record bigger.
    r.spec.env.add(name="CONFIG", value="x" * payload)
    r.status.phase = types_pb2.REPLICA_PHASE_PENDING
    return r


def fill(store: FakeStore, replicas: list[types_pb2.Replica]) -> None:
    writes = [Write(store.keys.replica(r.metadata.namespace, r.metadata.name),
                    r.SerializeToString(), 0) for r in replicas]
    for i in range(0, len(writes), MAX_TXN_OPS):
        store.commit(writes[i:i + MAX_TXN_OPS])


class Plane:
    def __init__(self, max_cluster_replicas: int = 10_000) -> None:
        self.store = FakeStore()
        self.cache = StateCache(self.store)
        self.controller = Controller(self.store, seed=1)
        self.api = ControlPlane(self.store, self.cache, self.controller, UsageCache(),
                                self._dial, max_cluster_replicas=max_cluster_replicas)

    def _dial(self, node):
        raise AssertionError("no agent in these tests")

    def close(self) -> None:
        self.controller.close()
        self.cache.close()


@pytest.fixture
def plane() -> Iterator[Plane]:
    p = Plane()
    yield p
    p.close()


def all_pages(fn, request) -> list:
    pages = []
    while True:
        page = fn(request, Context())
        pages.append(page)
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


# -- the pure part ---------------------------------------------------------------------


def test_a_full_page_fits_a_message_with_room_to_spare():
    # A page may overshoot its byte budget by its last item (a replica: at
    # most a 64 KiB spec and its status), and the reply has a few more fields.
    assert paging.MAX_PAGE_BYTES + (1 << 20) < rpc.MAX_MESSAGE_BYTES


def test_page_sizes_are_capped_and_zero_means_the_most():
    assert paging.page_size(0) == paging.page_size(-5) == paging.MAX_PAGE_ITEMS
    assert paging.page_size(10**9) == paging.MAX_PAGE_ITEMS
    assert paging.page_size(7) == 7


def test_a_token_names_the_last_key_and_only_fits_its_own_list():
    token = paging.encode(("shop", "web-1"))
    assert paging.decode(token, (str, str)) == ("shop", "web-1")
    assert paging.decode("", (str, str)) is None
    for bad, shape in [("not base64!", (str, str)), (paging.encode(("a",)), (str, str)),
                       (token, (int, int)), (paging.encode((True, 1)), (int, int)),
                       ("bm90IGpzb24=", (str,))]:
        with pytest.raises(paging.BadPageToken):
            paging.decode(bad, shape)


def test_a_page_ends_at_its_byte_budget_but_never_empty():
    big = paging.MAX_PAGE_BYTES // 2 + 1
    entries = [((i,), b"x" * big) for i in range(5)]
    page, token = paging.take(iter(entries), 0, len)
    assert len(page) == 1 and paging.decode(token, (int,)) == (0,)
    # One item over the whole budget still goes out, alone.
    page, token = paging.take(iter([((0,), b"x" * (paging.MAX_PAGE_BYTES + 1))]), 0, len)
    assert len(page) == 1 and token == ""


# -- the service -------------------------------------------------------------------------


def test_twenty_thousand_replicas_come_in_pages_that_fit(plane):
    count = 20_000
    fill(plane.store, [replica(f"ns{i % 3}", f"big-{i:05d}", 1024) for i in range(count)])
    pages = all_pages(plane.api.ListReplicas, control_pb2.ListRequest())
    whole = sum(p.ByteSize() for p in pages)
    assert whole > 16 << 20         # more than one message could carry
    names = [(r.metadata.namespace, r.metadata.name) for p in pages for r in p.items]
    assert len(names) == count and names == sorted(set(names))
    for p in pages:
        assert len(p.items) <= paging.MAX_PAGE_ITEMS and len(p.usage) == len(p.items)
        assert p.ByteSize() <= paging.MAX_PAGE_BYTES + (64 << 10)
    # A smaller page size is honoured, with a filter applied before counting.
    pages = all_pages(plane.api.ListReplicas,
                      control_pb2.ListRequest(namespace="ns1", page_size=700))
    assert [len(p.items) for p in pages] == [700] * 9 + [6667 - 6300]
    assert {r.metadata.namespace for p in pages for r in p.items} == {"ns1"}


def test_big_records_split_pages_by_bytes(plane):
    fill(plane.store, [replica("default", f"r{i:03d}", 40_000) for i in range(300)])
    pages = all_pages(plane.api.ListReplicas, control_pb2.ListRequest())
    assert len(pages) >= 3
    assert sum(len(p.items) for p in pages) == 300
    assert all(p.ByteSize() <= paging.MAX_PAGE_BYTES + (64 << 10) for p in pages)


def test_changes_between_pages_never_repeat_an_item(plane):
    fill(plane.store, [replica("default", f"r{i:02d}", 10) for i in range(30)])
    first = plane.api.ListReplicas(control_pb2.ListRequest(page_size=10), Context())
    # One before the token (already passed: not seen), one after (seen), one deleted.
    fill(plane.store, [replica("default", "r00a", 10), replica("default", "r25a", 10)])
    gone = plane.store.keys.replica("default", "r20")
    plane.store.commit([Write(gone, None, plane.store.get(gone)[1])])
    rest = all_pages(plane.api.ListReplicas,
                     control_pb2.ListRequest(page_size=10, page_token=first.next_page_token))
    names = [r.metadata.name for p in [first, *rest] for r in p.items]
    assert len(names) == len(set(names)) == 30
    assert "r00a" not in names and "r25a" in names and "r20" not in names


def test_a_forged_token_is_invalid_argument(plane):
    for token in ("garbage", paging.encode((1, 2))):
        with pytest.raises(Aborted) as e:
            plane.api.ListReplicas(control_pb2.ListRequest(page_token=token), Context())
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_workloads_and_nodes_page_too(plane):
    writes = []
    for i in range(25):
        w = types_pb2.Workload()
        w.metadata.namespace, w.metadata.name = "default", f"w{i:02d}"
        w.spec.replicas = 1
        writes.append(Write(plane.store.keys.workload("default", w.metadata.name),
                            w.SerializeToString(), 0))
        n = types_pb2.Node(name=f"n{i:02d}")
        writes.append(Write(plane.store.keys.node(n.name), n.SerializeToString(), 0))
    plane.store.commit(writes)
    pages = all_pages(plane.api.ListWorkloads, control_pb2.ListRequest(page_size=10))
    assert [len(p.items) for p in pages] == [10, 10, 5]
    assert all(len(p.summaries) == len(p.items) for p in pages)
    pages = all_pages(plane.api.ListNodes, control_pb2.ListRequest(page_size=10))
    assert [n.name for p in pages for n in p.items] == [f"n{i:02d}" for i in range(25)]


def test_events_page_by_time_with_ties_kept_apart():
    items = [types_pb2.Event(kind="Replica", name=f"e{i}", unix_ms=1000 + i // 4)
             for i in range(23)]
    store = FakeStore()
    api = ControlPlane(store, StateCache(store), Controller(store, seed=1), UsageCache(),
                       lambda n: None, events=Events(items))  # type: ignore[arg-type]
    request = control_pb2.EventsRequest(kind="Replica", page_size=5)
    pages = all_pages(api.ListEvents, request)
    assert [e.name for p in pages for e in p.items] == [f"e{i}" for i in range(23)]
    api.replicas.close()  # type: ignore[attr-defined]


# -- the cluster's replica cap -----------------------------------------------------------


def workload(name: str, replicas: int) -> types_pb2.Workload:
    w = types_pb2.Workload()
    w.metadata.namespace, w.metadata.name = "default", name
    s = w.spec
    s.replicas, s.image, s.restart_policy = replicas, "busybox", "Always"
    s.resources.cpu_millis, s.resources.memory_bytes, s.resources.pids = 100, 1 << 24, 64
    s.update.max_unavailable = s.update.max_surge = 1
    return w


def test_the_cluster_cap_refuses_an_apply_that_would_pass_it():
    p = Plane(max_cluster_replicas=5)
    try:
        def apply(*ws):
            return p.api.Apply(control_pb2.ApplyRequest(workloads=list(ws)), Context())
        apply(workload("a", 3))
        with pytest.raises(Aborted) as e:
            apply(workload("b", 3))
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "at most 5 replicas" in str(e.value) and "would make it 6" in str(e.value)
        apply(workload("b", 2))
        apply(workload("a", 1))      # shrinking is always fine
    finally:
        p.close()


# -- the CLI over gRPC -------------------------------------------------------------------


def test_get_prints_twenty_thousand_replicas(plane, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MCTL_HOME", str(tmp_path))
    count = 20_000
    fill(plane.store, [replica("default", f"big-{i:05d}", 1024) for i in range(count)])
    server = rpc.make_server(max_workers=2)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(plane.api, server)
    port = rpc.bind(server, "127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(["--server", f"127.0.0.1:{port}", "--insecure", "get", "replicas"])
    finally:
        server.stop(grace=None)
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    lines = out.out.splitlines()
    assert len(lines) == count + 1 and lines[1].startswith("big-00000")
    assert lines[-1].startswith(f"big-{count - 1:05d}")
