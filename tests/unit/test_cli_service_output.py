"""What the CLI shows of services: the VIP column and `describe workload`'s lines."""

from __future__ import annotations

from mctl.cli import describe, output
from mctl.common.spec import parse_documents
from mctl.v1 import control_pb2, types_pb2

API = """
apiVersion: mctl/v1
kind: Workload
metadata: {name: api}
spec:
  replicas: 3
  image: busybox
  ports: [{name: http, containerPort: 8080}]
  readiness: {tcpPort: 8080, periodSeconds: 2}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: batch}
spec: {image: busybox}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: web}
spec: {image: busybox, ports: [{containerPort: 80}]}
"""


def workloads() -> list[types_pb2.Workload]:
    ws = parse_documents(API, "t.yaml")
    ws[0].status.virtual_ip = "10.96.4.2"
    return ws


def replica(name: str, ip: str, phase: int, ready: bool = False,
            reason: int = types_pb2.REPLICA_REASON_UNSPECIFIED) -> types_pb2.Replica:
    r = types_pb2.Replica(workload="api", node="n1")
    r.metadata.namespace, r.metadata.name = "default", name
    r.status.phase, r.status.ip, r.status.ready, r.status.reason = phase, ip, ready, reason
    r.spec.readiness.tcp_port = 8080
    return r


def test_get_workloads_wide_has_a_vip_column():
    resp = control_pb2.WorkloadList(items=workloads(),
                                    summaries=[control_pb2.WorkloadSummary()] * 3)
    lines = output.workloads(resp, wide=True, all_ns=False).splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AGE", "VIP", "IMAGE", "CPU",
                                "MEMORY"]
    vip_column = {line.split()[0]: line.split()[4] for line in lines[1:]}
    # One with ports but no address yet is waiting for the scheduler's next pass.
    assert vip_column == {"api": "10.96.4.2", "batch": "<none>", "web": "<pending>"}
    assert "VIP" not in output.workloads(resp, wide=False, all_ns=False)


def test_describe_workload_shows_the_virtual_ip_and_its_endpoints():
    running = types_pb2.REPLICA_PHASE_RUNNING
    reps = control_pb2.ReplicaList(items=[
        replica("api-b", "10.244.1.3", running, ready=True),
        replica("api-a", "10.244.1.2", running),                      # failing readiness
        replica("api-c", "10.244.2.2", running, ready=True,
                reason=types_pb2.REPLICA_REASON_NODE_NOT_READY),      # node silent
        replica("api-d", "", types_pb2.REPLICA_PHASE_PENDING),
    ], usage=[types_pb2.Usage()] * 4)
    text = describe.describe_workload(workloads()[0], control_pb2.WorkloadSummary(), reps)
    lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    assert lines["Ports"].strip() == "http 8080/TCP"
    assert lines["Virtual IP"].strip() == "10.96.4.2"
    assert lines["Endpoints"].strip() == (
        "10.244.1.2 (api-a, not ready), 10.244.1.3 (api-b, ready), "
        "10.244.2.2 (api-c, not ready)")
    assert lines["Readiness"].strip() == "tcp port 8080 every 2s, not ready after 3 failures"


def test_describe_a_workload_without_ports_has_no_virtual_ip_line():
    text = describe.describe_workload(workloads()[1], control_pb2.WorkloadSummary(),
                                      control_pb2.ReplicaList())
    assert "Virtual IP" not in text and "Endpoints" not in text


def test_many_endpoints_are_cut_to_one_line():
    reps = control_pb2.ReplicaList(items=[
        replica(f"api-{i:02d}", f"10.244.0.{i + 2}", types_pb2.REPLICA_PHASE_RUNNING, True)
        for i in range(20)])
    shown = describe.endpoints(reps)
    assert shown.endswith(f"and {20 - describe.MAX_ENDPOINTS_SHOWN} more")
    assert shown.count("(api-") == describe.MAX_ENDPOINTS_SHOWN
