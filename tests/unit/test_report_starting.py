"""What a node reports for a replica whose first start is in flight: plain Starting,
its address only once it runs (agent/node.py, build_report)."""

from __future__ import annotations

import types

from mctl.agent.containers import container_id
from mctl.agent.node import NodeLoop
from mctl.agent.volumes import Sources
from mctl.v1 import types_pb2


def replica() -> types_pb2.Replica:
    r = types_pb2.Replica(spec_hash="h", workload="web")
    r.metadata.namespace, r.metadata.name, r.metadata.uid = "default", "web-1", "u1"
    r.spec.image = "busybox"
    return r


def container(r: types_pb2.Replica, **kw: object) -> types.SimpleNamespace:
    fields: dict[str, object] = dict(
        id=container_id("default", "web-1"), replica=r, ip="10.244.0.7", busy=False,
        unhealthy="", disk_limit="", exit=None, monitor_pid=0, restarts=0, last_exit="",
        started_ms=0)
    fields.update(kw)
    return types.SimpleNamespace(**fields)


def loop_with(c: types.SimpleNamespace) -> NodeLoop:
    images = types.SimpleNamespace(pinned_digests=lambda limit: [])
    manager = types.SimpleNamespace(sources=Sources.of([], []), images=images,
                                    snapshot=lambda: [c],
                                    volumes=types.SimpleNamespace(latest_usage=lambda: {}))
    sampler = types.SimpleNamespace(latest=lambda cid: None)
    return NodeLoop(manager, sampler, lambda report: None, "n1", 1.0)  # type: ignore[arg-type]


def status(loop: NodeLoop) -> types_pb2.ReplicaStatus:
    report = loop.build_report()
    assert len(report.replicas) == 1
    return report.replicas[0].status


def test_a_first_start_in_flight_is_plain_starting_and_its_address_comes_with_running():
    r = replica()
    c = container(r)
    loop = loop_with(c)
    loop._in_flight[c.id] = r
    st = status(loop)
    assert st.phase == types_pb2.REPLICA_PHASE_STARTING and st.ip == ""
    # The start has ended: the container runs, with its address.
    del loop._in_flight[c.id]
    c.monitor_pid, c.started_ms = 42, 1
    st = status(loop)
    assert st.phase == types_pb2.REPLICA_PHASE_RUNNING and st.ip == "10.244.0.7"


def test_a_restart_in_flight_keeps_its_full_status():
    r = replica()
    c = container(r, restarts=3, last_exit="Error: exit code 1", started_ms=5)
    loop = loop_with(c)
    loop._in_flight[c.id] = r
    st = status(loop)
    assert st.restarts == 3 and st.ip == "10.244.0.7" and st.last_exit == "Error: exit code 1"
