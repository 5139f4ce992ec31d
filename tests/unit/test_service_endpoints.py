"""Services as nodes get them: endpoint selection (common/endpoints.py, scheduler/services.py).

Which replicas are endpoints, which of them take traffic, the ports a
service answers on, the bound per service, and the DNS names' lengths.
"""

from __future__ import annotations

import random

from mctl.common.endpoints import is_endpoint, is_ready
from mctl.common.names import DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX
from mctl.scheduler import services
from mctl.scheduler.reconcile import new_replica_name
from mctl.scheduler.store import Snapshot
from mctl.v1 import types_pb2

RUNNING = types_pb2.REPLICA_PHASE_RUNNING


def workload(name: str = "api", ports: list[tuple[int, str, str]] | None = None,
             vip: str = "10.96.0.10", deleting: bool = False) -> types_pb2.Workload:
    w = types_pb2.Workload()
    w.metadata.namespace, w.metadata.name = "shop", name
    w.metadata.deletion_requested = deleting
    for port, protocol, port_name in [(8080, "TCP", "http")] if ports is None else ports:
        w.spec.ports.add(container_port=port, protocol=protocol, name=port_name)
    if vip:
        w.status.virtual_ip = vip
    return w


def replica(name: str, ip: str = "10.244.1.2", phase: int = RUNNING, ready: bool = False,
            readiness: bool = False, deleting: bool = False, node: str = "n1",
            workload_name: str = "api") -> types_pb2.Replica:
    r = types_pb2.Replica(workload=workload_name, node=node)
    r.metadata.namespace, r.metadata.name = "shop", name
    r.metadata.deletion_requested = deleting
    r.status.phase, r.status.ip, r.status.ready = phase, ip, ready
    if readiness:
        r.spec.readiness.tcp_port = 8080
    return r


# -- the rule -------------------------------------------------------------------------------


def test_endpoints_are_running_replicas_with_an_address_that_are_not_leaving():
    assert is_endpoint(replica("a"))
    assert not is_endpoint(replica("a", ip=""))
    assert not is_endpoint(replica("a", deleting=True))
    for phase in ("PENDING", "STARTING", "TERMINATING", "SUCCEEDED", "FAILED"):
        assert not is_endpoint(replica("a", phase=types_pb2.ReplicaPhase.Value(
            "REPLICA_PHASE_" + phase))), phase


def test_ready_follows_the_readiness_check_of_the_replicas_own_spec():
    assert is_ready(replica("a"))                               # no check: Running is enough
    assert is_ready(replica("a", ready=True))
    assert not is_ready(replica("a", readiness=True))           # a check, not passing yet
    assert is_ready(replica("a", readiness=True, ready=True))
    assert not is_ready(replica("a", ip="", ready=True))        # no endpoint, never ready


# -- one service --------------------------------------------------------------------------


def test_a_workload_without_ports_or_address_or_being_deleted_is_no_service():
    assert services.service_of(workload(ports=[]), [replica("a")]) is None
    assert services.service_of(workload(vip=""), [replica("a")]) is None
    assert services.service_of(workload(deleting=True), [replica("a")]) is None


def test_a_service_has_its_address_ports_and_endpoints():
    reps = [
        replica("api-b", ip="10.244.2.3"),
        replica("api-a", ip="10.244.1.2", readiness=True),          # failing its check
        replica("api-c", ip="10.244.3.4", node="lost"),             # its node is silent
        replica("api-d", ip="", phase=types_pb2.REPLICA_PHASE_STARTING),
        replica("api-e", ip="10.244.1.9", deleting=True),
    ]
    s = services.service_of(workload(), reps, live_nodes={"n1"})
    assert s is not None
    assert (s.namespace, s.workload, s.virtual_ip) == ("shop", "api", "10.96.0.10")
    assert [(p.name, p.port, p.protocol) for p in s.ports] == [("http", 8080, "TCP")]
    assert [(e.replica, e.ip, e.ready) for e in s.endpoints] == [
        ("api-a", "10.244.1.2", False), ("api-b", "10.244.2.3", True),
        ("api-c", "10.244.3.4", False)]


def test_ports_are_one_per_port_and_protocol_named_by_the_entry_that_names_it():
    w = workload(ports=[(80, "TCP", ""), (80, "TCP", "web"), (53, "UDP", "dns"),
                        (53, "TCP", "")])
    ports = services.service_ports(w.spec)
    assert [(p.name, p.port, p.protocol) for p in ports] == [
        ("web", 80, "TCP"), ("dns", 53, "UDP"), ("", 53, "TCP")]


def test_the_bound_keeps_ready_endpoints_first_then_by_name():
    reps = [replica(f"api-{i:02d}", ip=f"10.244.0.{i + 2}", readiness=True, ready=i % 2 == 0)
            for i in range(10)]
    s = services.service_of(workload(), reps, limit=4)
    assert s is not None
    assert [(e.replica, e.ready) for e in s.endpoints] == [
        ("api-00", True), ("api-02", True), ("api-04", True), ("api-06", True)]
    s = services.service_of(workload(), reps, limit=7)
    assert s is not None
    # All five ready ones, then the first not-ready ones by name; listed by name.
    assert [e.replica for e in s.endpoints] == [
        "api-00", "api-01", "api-02", "api-03", "api-04", "api-06", "api-08"]
    assert services.MAX_ENDPOINTS_PER_SERVICE >= 1000


def test_every_service_of_the_cluster_in_order_with_its_own_replicas():
    snap = Snapshot()
    for w in (workload("web", vip="10.96.0.20"), workload("api"), workload("batch", ports=[])):
        snap.workloads[("shop", w.metadata.name)] = w
    snap.replicas[("shop", "api-x")] = replica("api-x")
    snap.replicas[("shop", "web-y")] = replica("web-y", ip="10.244.5.5", workload_name="web")
    snap.heartbeats.add("n1")
    out = services.services(snap)
    assert [(s.workload, s.virtual_ip, [e.replica for e in s.endpoints]) for s in out] == [
        ("api", "10.96.0.10", ["api-x"]), ("web", "10.96.0.20", ["web-y"])]


def test_the_longest_names_fit_dns():
    # Each of replica, workload and namespace is a DNS label; the replica's
    # name cuts its workload part to stay one (reconcile.py).
    workload_name = namespace = "a" * DNS_LABEL_MAX
    replica_name = new_replica_name(workload_name, set(), random.Random(1))
    assert len(replica_name) <= DNS_LABEL_MAX
    fqdn = f"{replica_name}.{workload_name}.{namespace}.mctl"
    assert len(fqdn) <= DNS_SUBDOMAIN_MAX
    # On the wire: a length byte per label and the root's: at most 255.
    assert sum(len(label) + 1 for label in fqdn.split(".")) + 1 <= 255
