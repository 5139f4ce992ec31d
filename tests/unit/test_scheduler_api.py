"""The scheduler's gRPC services on an in-memory store (fake_store.py).

The services are called directly, as gRPC would call them, with a context
whose abort raises; the store underneath keeps etcd's compare-and-swap
semantics, so lost races, a store that is away and the controller's part
(drain, status reports) are all exercised without etcd. tests/integration
covers the same store code against a real etcd.
"""

from __future__ import annotations

import threading

import grpc
import pytest
from fake_store import FakeStore

from mctl.common.spec import parse_documents
from mctl.scheduler.api import ControlPlane, NodeService
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.nodes import NodeLeases
from mctl.scheduler.store import Write
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2, node_pb2, types_pb2


def phase(name: str) -> int:
    """The stored phase called `name` (as users see it) in the API."""
    return types_pb2.ReplicaPhase.Value("REPLICA_PHASE_" + name.upper())


RUNNING, STARTING, TERMINATING = phase("Running"), phase("Starting"), phase("Terminating")


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Context:
    def abort(self, code, details):
        raise Aborted(code, details)

    def add_callback(self, fn):
        pass

    def set_trailing_metadata(self, metadata):
        self.trailing = metadata


class Events:
    """The event log, in a list."""

    def __init__(self) -> None:
        self.items: list[types_pb2.Event] = []

    def record(self, e: types_pb2.Event) -> None:
        self.items.append(e)

    def list(self, kind, namespace, name):
        return [e for e in self.items if e.kind == kind and
                (not name or (e.namespace, e.name) == (namespace, name))]

    def reasons(self, name: str | None = None) -> list[str]:
        return [e.reason for e in self.items if name is None or e.name == name]


class DirectReads:
    """Reads straight from the store: every read sees every write."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def latest(self):
        return self.store.snapshot()


class Leadership:
    identity = "sched-a"
    leading_since_ms = 1234


class Cluster:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.events = Events()
        self.usage = UsageCache()
        self.controller = Controller(self.store, seed=1, events=self.events)
        self.dialled: list[str] = []
        self.api = ControlPlane(self.store, DirectReads(self.store), self.controller,
                                self.usage, self._dial, events=self.events,
                                leadership=Leadership())
        self.leases = NodeLeases(self.store, lease_ttl=3)
        self.nodes = NodeService(self.leases, self.controller, self.usage, events=self.events)

    def _dial(self, node):
        self.dialled.append(node.name)
        raise AssertionError("no agent in these tests")

    def close(self) -> None:
        self.controller.close()

    def register(self, name: str, cpu: int = 2000) -> None:
        node = types_pb2.Node(name=name, address=f"127.0.0.1:{len(name)}",
                              capacity=types_pb2.Resources(cpu_millis=cpu,
                                                           memory_bytes=1 << 30, pids=100))
        self.nodes.Register(node_pb2.RegisterRequest(node=node), Context())

    def apply(self, *workloads: types_pb2.Workload) -> control_pb2.ApplyResponse:
        return self.api.Apply(control_pb2.ApplyRequest(workloads=list(workloads)), Context())

    def put_replica(self, name: str, node: str, state: str = "Running",
                    deleting: bool = False, workload: str = "web") -> types_pb2.Replica:
        r = types_pb2.Replica(workload=workload, node=node, spec_hash="h")
        r.metadata.namespace, r.metadata.name, r.metadata.uid = "default", name, f"uid-{name}"
        r.metadata.deletion_requested = deleting
        r.spec.resources.cpu_millis = 100
        r.spec.resources.memory_bytes = 1 << 20
        r.spec.resources.pids = 10
        r.status.phase = phase(state)
        key = self.store.keys.replica("default", name)
        self.store.commit([Write(key, r.SerializeToString(), self.store.get(key)[1])])
        return r

    def lease_of(self, node: str) -> int:
        """The node's heartbeat lease, which its heartbeat key holds."""
        return int(self.store.get(self.store.keys.heartbeat(node))[0])

    def replica(self, name: str) -> types_pb2.Replica | None:
        raw, _ = self.store.get(self.store.keys.replica("default", name))
        return types_pb2.Replica.FromString(raw) if raw is not None else None


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.close()


def workload(name: str = "web", replicas: int = 2) -> types_pb2.Workload:
    """A valid workload, as the CLI would send it."""
    text = f"""
apiVersion: mctl/v1
kind: Workload
metadata: {{name: {name}}}
spec: {{replicas: {replicas}, image: busybox, resources: {{cpu: 100m, memory: 16Mi}}}}
"""
    return parse_documents(text, "test.yaml")[0]


# -- Apply and Delete ---------------------------------------------------------------


def test_apply_creates_then_leaves_alone_then_configures(cluster):
    assert [r.action for r in cluster.apply(workload()).results] == ["created"]
    stored = cluster.api.ListWorkloads(control_pb2.ListRequest(), Context()).items[0]
    assert stored.metadata.generation == 1 and stored.metadata.uid
    assert [r.action for r in cluster.apply(workload()).results] == ["unchanged"]
    assert [r.action for r in cluster.apply(workload(replicas=3)).results] == ["configured"]
    again = cluster.api.ListWorkloads(control_pb2.ListRequest(), Context()).items[0]
    assert (again.metadata.generation, again.metadata.uid) == (2, stored.metadata.uid)
    assert again.spec.replicas == 3


def test_apply_retries_a_lost_race_and_gives_up_on_endless_ones(cluster):
    races = {"left": 1}

    def concurrent_writer():
        if races["left"]:
            races["left"] -= 1
            cluster.store.put(cluster.store.keys.workload("default", "web"), b"")

    cluster.store.before_commit.append(concurrent_writer)
    # The rival's empty record reads back as a workload with no name: the
    # second attempt sees it and configures over it.
    assert [r.action for r in cluster.apply(workload()).results] == ["configured"]
    assert races["left"] == 0

    # A rival that always writes first: every attempt loses.
    cluster.store.before_commit[:] = [
        lambda: cluster.store.put(cluster.store.keys.workload("default", "web2"), b"")]
    with pytest.raises(Aborted) as e:
        cluster.apply(workload("web2"))
    assert e.value.code == grpc.StatusCode.ABORTED


def test_a_store_that_is_away_is_unavailable_not_an_error(cluster):
    cluster.store.unavailable = True
    for call in (lambda: cluster.apply(workload()),
                 lambda: cluster.api.ListReplicas(control_pb2.ListRequest(), Context()),
                 lambda: cluster.api.Cordon(control_pb2.CordonRequest(node="n1"), Context())):
        with pytest.raises(Aborted) as e:
            call()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        assert "store is unavailable" in e.value.details


def test_delete_asks_for_deletion_once_and_says_what_it_found(cluster):
    cluster.apply(workload())
    request = control_pb2.DeleteRequest(workloads=[
        control_pb2.ObjectRef(namespace="default", name="web"),
        control_pb2.ObjectRef(namespace="default", name="ghost")])
    found = [r.found for r in cluster.api.Delete(request, Context()).results]
    assert found == [True, False]
    w = cluster.api.ListWorkloads(control_pb2.ListRequest(), Context()).items[0]
    assert w.metadata.deletion_requested
    commits = cluster.store.commits
    cluster.api.Delete(request, Context())
    assert cluster.store.commits == commits      # already on its way: nothing written


# -- reads ------------------------------------------------------------------------


def test_lists_summarise_replicas_nodes_and_usage(cluster):
    cluster.register("n1")
    cluster.register("n2")
    cluster.apply(workload())
    cluster.put_replica("web-a", "n1")
    cluster.put_replica("web-b", "n1", state="Starting")
    cluster.put_replica("web-c", "n2", state="Succeeded")
    cluster.put_replica("web-d", "n2", deleting=True)
    cluster.usage.set_replica(("default", "web-a"), types_pb2.Usage(cpu_cores=0.5))
    cluster.usage.set_node("n1", types_pb2.Usage(memory_bytes=99))

    workloads = cluster.api.ListWorkloads(control_pb2.ListRequest(), Context())
    summary = workloads.summaries[0]
    assert (summary.desired, summary.running) == (2, 1)   # the leaving one is not counted

    replicas = cluster.api.ListReplicas(control_pb2.ListRequest(workload="web"), Context())
    assert [r.metadata.name for r in replicas.items] == ["web-a", "web-b", "web-c", "web-d"]
    assert [u.cpu_cores for u in replicas.usage] == [0.5, 0, 0, 0]

    nodes = cluster.api.ListNodes(control_pb2.ListRequest(), Context())
    assert [n.name for n in nodes.items] == ["n1", "n2"]
    assert all(n.ready for n in nodes.items)
    assert list(nodes.replicas) == [2, 1]          # a finished replica holds nothing
    assert nodes.allocated[0].cpu_millis == 200 and nodes.allocated[1].pids == 10
    assert nodes.usage[0].memory_bytes == 99
    only = cluster.api.ListNodes(control_pb2.ListRequest(name="n2"), Context())
    assert [n.name for n in only.items] == ["n2"]


def test_replicas_on_a_silent_node_say_so_without_a_write(cluster):
    cluster.register("n1")
    cluster.put_replica("web-a", "n1")
    cluster.put_replica("web-b", "n1", state="Failed")
    cluster.store.expire_lease(cluster.lease_of("n1"))
    commits = cluster.store.commits
    items = cluster.api.ListReplicas(control_pb2.ListRequest(), Context()).items
    assert items[0].status.reason == types_pb2.REPLICA_REASON_NODE_NOT_READY
    assert "not heartbeating" in items[0].status.message
    assert not items[1].status.reason              # finished: nothing to doubt
    assert not cluster.replica("web-a").status.reason
    assert cluster.store.commits == commits
    assert not cluster.api.ListNodes(control_pb2.ListRequest(), Context()).items[0].ready


def test_logs_name_what_is_missing(cluster):
    with pytest.raises(Aborted) as e:
        list(cluster.api.Logs(control_pb2.LogsRequest(replica="web-x"), Context()))
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    cluster.put_replica("web-a", "")
    with pytest.raises(Aborted) as e:
        list(cluster.api.Logs(control_pb2.LogsRequest(replica="web-a"), Context()))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert cluster.dialled == []


def test_cluster_info_names_the_leader_and_this_scheduler(cluster):
    cluster.store.put(cluster.store.keys.leader, b"sched-b")
    info = cluster.api.ClusterInfo(control_pb2.ClusterInfoRequest(), Context())
    assert (info.leader, info.served_by, info.leader_since_unix_ms) == (
        "sched-b", "sched-a", 1234)


def test_a_list_through_the_cache_waits_for_writes_made_before_it():
    """Read-your-writes: the watch is late, the list still shows the apply."""
    store = FakeStore()
    cache = StateCache(store)
    controller = Controller(store, seed=1, cache=cache)
    api = ControlPlane(store, cache, controller, UsageCache(), lambda n: None)
    try:
        cache.snapshot()                        # loaded and watching
        store.hold_watch = True
        api.Apply(control_pb2.ApplyRequest(workloads=[workload()]), Context())
        assert cache.snapshot().workloads == {}  # the watch has not delivered it yet
        threading.Timer(0.2, store.release_watch).start()
        listed = api.ListWorkloads(control_pb2.ListRequest(), Context())
        assert [w.metadata.name for w in listed.items] == ["web"]
    finally:
        controller.close()
        cache.close()


# -- nodes: cordon and drain ---------------------------------------------------------


def test_cordon_changes_once_and_knows_unknown_nodes(cluster):
    cluster.register("n1")
    request = control_pb2.CordonRequest(node="n1", cordoned=True)
    assert cluster.api.Cordon(request, Context()).changed
    assert not cluster.api.Cordon(request, Context()).changed
    assert cluster.events.reasons("n1").count("Cordoned") == 1
    with pytest.raises(Aborted) as e:
        cluster.api.Cordon(control_pb2.CordonRequest(node="ghost", cordoned=True), Context())
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_drain_cordons_and_evicts_only_live_replicas_of_that_node(cluster):
    cluster.register("n1")
    cluster.register("n2")
    cluster.put_replica("web-a", "n1")
    cluster.put_replica("web-b", "n1", state="Succeeded")
    cluster.put_replica("web-c", "n1", deleting=True)
    cluster.put_replica("web-d", "n2")
    reply = cluster.api.Drain(control_pb2.DrainRequest(node="n1"), Context())
    assert [(r.namespace, r.name) for r in reply.evicted] == [("default", "web-a")]
    a = cluster.replica("web-a")
    assert a.metadata.deletion_requested
    assert (a.status.phase, a.status.reason) == (TERMINATING, types_pb2.REPLICA_REASON_DRAINED)
    assert not cluster.replica("web-d").metadata.deletion_requested
    assert cluster.replica("web-b").status.phase == phase("Succeeded")
    node = cluster.api.ListNodes(control_pb2.ListRequest(name="n1"), Context()).items[0]
    assert node.cordoned
    assert "Evicted" in cluster.events.reasons("web-a")
    assert "Drained" in cluster.events.reasons("n1")


# -- the node API ----------------------------------------------------------------------


def test_register_keeps_the_cordon_and_says_how_long_it_was_away(cluster):
    cluster.register("n1")
    cluster.api.Cordon(control_pb2.CordonRequest(node="n1", cordoned=True), Context())
    key = cluster.store.keys.node("n1")
    raw, rev = cluster.store.get(key)
    away = types_pb2.Node.FromString(raw)
    away.not_ready_since_unix_ms = 1                    # NotReady since long ago
    cluster.store.commit([Write(key, away.SerializeToString(), rev)])
    cluster.register("n1")
    node = types_pb2.Node.FromString(cluster.store.get(key)[0])
    assert node.cordoned and node.not_ready_since_unix_ms == 0 and not node.ready
    registered = [e for e in cluster.events.items if e.reason == "Registered"]
    assert "NotReady" not in registered[0].message
    assert "s NotReady" in registered[1].message
    assert cluster.store.refresh_lease(cluster.lease_of("n1")) == 3


def test_register_refuses_a_bad_name(cluster):
    with pytest.raises(Aborted) as e:
        cluster.nodes.Register(node_pb2.RegisterRequest(node=types_pb2.Node(name="No_Way")),
                               Context())
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert cluster.store.data == {}


def test_heartbeats_revive_a_lapsed_lease_and_send_strangers_to_register(cluster):
    cluster.register("n1")
    first = cluster.lease_of("n1")
    assert not cluster.nodes.Heartbeat(node_pb2.HeartbeatRequest(node="n1"), Context()).reregister
    cluster.store.expire_lease(first)
    assert cluster.store.get(cluster.store.keys.heartbeat("n1"))[0] is None
    reply = cluster.nodes.Heartbeat(node_pb2.HeartbeatRequest(
        node="n1", usage=types_pb2.Usage(pids=5)), Context())
    assert not reply.reregister
    renewed = cluster.lease_of("n1")
    assert renewed != first and cluster.store.refresh_lease(renewed) > 0
    assert cluster.usage.node("n1").pids == 5
    assert cluster.nodes.Heartbeat(node_pb2.HeartbeatRequest(node="ghost"), Context()).reregister
    # Another scheduler's registration: the lease is found in the heartbeat key.
    other = NodeService(NodeLeases(cluster.store), cluster.controller, UsageCache())
    assert not other.Heartbeat(node_pb2.HeartbeatRequest(node="n1"), Context()).reregister


def report(node: str, *replicas: tuple[str, str], complete: bool = True) -> node_pb2.StatusReport:
    out = node_pb2.StatusReport(node=node, complete=complete)
    for name, state in replicas:
        r = out.replicas.add(namespace="default", name=name, uid=f"uid-{name}")
        r.status.phase = phase(state)
        r.usage.pids = 3
    return out


def test_status_reports_update_records_and_remove_the_departed(cluster):
    cluster.register("n1")
    cluster.put_replica("web-a", "n1", state="Starting")
    cluster.put_replica("web-b", "n1", deleting=True)
    cluster.put_replica("web-c", "n1", deleting=True)
    cluster.put_replica("web-d", "n2", state="Starting")     # another node's: untouched
    cluster.nodes.ReportStatus(report("n1", ("web-a", "Running"), ("web-b", "Running"),
                                      ("web-d", "Running")), Context())
    assert cluster.replica("web-a").status.phase == RUNNING
    assert cluster.replica("web-b").status.phase == TERMINATING  # leaving stays leaving
    assert cluster.replica("web-c") is None                         # gone from the node
    assert cluster.replica("web-d").status.phase == STARTING
    assert cluster.usage.replica(("default", "web-a")).pids == 3
    assert "Started" in cluster.events.reasons("web-a")
    assert "Removed" in cluster.events.reasons("web-c")

    # An unchanged report writes nothing; an incomplete one removes nothing.
    commits = cluster.store.commits
    cluster.nodes.ReportStatus(report("n1", ("web-a", "Running"), ("web-b", "Running")),
                               Context())
    assert cluster.store.commits == commits
    cluster.nodes.ReportStatus(report("n1", ("web-a", "Running"), complete=False), Context())
    assert cluster.replica("web-b") is not None


def test_a_status_report_that_loses_a_race_is_merged_again(cluster):
    cluster.register("n1")
    cluster.put_replica("web-a", "n1", state="Starting")
    cluster.put_replica("web-b", "n1", state="Starting")
    raced = {"done": False}

    def controller_writes_first():
        if not raced["done"]:
            raced["done"] = True
            r = cluster.replica("web-b")
            r.spec_hash = "newer"
            key = cluster.store.keys.replica("default", "web-b")
            cluster.store.commit([Write(key, r.SerializeToString(), cluster.store.get(key)[1])])

    cluster.store.before_commit.append(controller_writes_first)
    cluster.nodes.ReportStatus(report("n1", ("web-a", "Running"), ("web-b", "Running")),
                               Context())
    b = cluster.replica("web-b")
    assert (b.status.phase, b.spec_hash) == (RUNNING, "newer")   # neither write lost
    assert cluster.replica("web-a").status.phase == RUNNING
