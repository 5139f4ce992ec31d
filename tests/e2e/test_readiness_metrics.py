"""Health, readiness and metrics of a real local cluster's daemons.

`mctl cluster status` shows each daemon's grpc.health.v1 state. The
scheduler, restarted with --metrics-listen, counts placements (placed and
unschedulable), pending replicas by reason, nodes by state, the leader flag,
reconcile passes and etcd requests. An agent restarted while the
scheduler is frozen (SIGSTOP) serves its port but says NOT_SERVING until it
has registered; then SERVING. Restarted with --metrics-listen (on its
node's address, in the node's namespace), it serves per-replica gauges
labelled by workload and replica, container starts and their latency,
restarts by reason and OOM kills, read with Prometheus' own text parser.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.request

from conftest import Cluster  # noqa: I001 - the e2e fixtures module
from prometheus_client.parser import text_string_to_metric_families

WORKLOADS = """\
apiVersion: mctl/v1
kind: Workload
metadata: {name: steady}
spec:
  replicas: 2
  image: busybox
  command: ["sleep", "3600"]
  resources: {cpu: 100m, memory: 32Mi, pids: 16}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: crashy}
spec:
  replicas: 1
  image: busybox
  command: ["sh", "-c", "sleep 1; exit 3"]
  resources: {cpu: 100m, memory: 32Mi, pids: 16}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: hungry}
spec:
  replicas: 1
  image: busybox
  # Holds 64 MiB in a shell variable under a 24 MiB limit: the kernel kills it.
  command: ["sh", "-c", "sleep 1; x=$(head -c 67108864 /dev/zero | tr '\\\\0' a); sleep 60"]
  resources: {cpu: 100m, memory: 24Mi, pids: 16}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: huge}
spec:
  replicas: 1
  image: busybox
  command: ["sleep", "3600"]
  resources: {cpu: "512", memory: 32Mi, pids: 16}
"""
PORT = 19100


def health_of(cluster: Cluster, name: str) -> str:
    status = cluster.mctl("cluster", "status", check=False, timeout=60).stdout
    line = next(ln for ln in status.splitlines() if ln.split()[:1] == [name])
    m = re.search(r"health (\S+?)(,|$)", line)
    return m.group(1) if m else line


def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    return sum(v for ls, v in samples.get(name, [])
               if all(ls.get(k) == want for k, want in labels.items()))


def add_flags(cluster: Cluster, name: str, *flags: str) -> None:
    """Records extra flags in `name`'s argv, for cluster.restart and `cluster down`."""
    state = cluster.state()
    proc = next(p for p in state["processes"] if p["name"] == name)
    proc["argv"] += list(flags)
    (cluster.dir / "cluster.json").write_text(json.dumps(state))


def test_health_states_and_agent_metrics(cluster_factory, tmp_path):
    cluster: Cluster = cluster_factory(1)
    status = cluster.mctl("cluster", "status").stdout
    assert re.search(r"scheduler\s.*running\s+health SERVING, leader", status), status
    assert re.search(r"node1\s.*running\s+health SERVING", status), status

    # The scheduler again, with metrics (on loopback: it runs on the host).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        scheduler_metrics = f"127.0.0.1:{s.getsockname()[1]}"
    pid = cluster.kill("scheduler", signal.SIGTERM)
    cluster.wait_for("the scheduler to exit", lambda: not os.path.exists(f"/proc/{pid}")
                     or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    add_flags(cluster, "scheduler", "--metrics-listen", scheduler_metrics)
    cluster.restart("scheduler")
    cluster.wait_for("the scheduler leading", lambda: re.search(
        r"scheduler\s.*health SERVING, leader",
        cluster.mctl("cluster", "status", check=False).stdout), timeout=60)

    app = tmp_path / "app.yaml"
    app.write_text(WORKLOADS)
    cluster.mctl("apply", "-f", str(app))
    cluster.wait_for("steady replicas running", lambda: len(
        [r for r in cluster.replicas("steady") if r["status"].get("phase") == "Running"]) == 2,
        timeout=60)
    got = scrape(scheduler_metrics)
    assert total(got, "mctl_placements_total", result="placed") >= 4
    assert total(got, "mctl_placements_total", result="unschedulable") >= 1
    assert total(got, "mctl_placement_seconds_count") >= 1
    assert total(got, "mctl_pending_replicas", reason="Unschedulable") == 1
    assert total(got, "mctl_nodes", state="Ready") == 1
    assert total(got, "mctl_leader") == 1
    assert total(got, "mctl_reconcile_pass_seconds_count") >= 1
    assert total(got, "mctl_etcd_request_seconds_count", op="commit") >= 1

    # Freeze the scheduler, kill the agent (its containers keep running) and
    # start it again with metrics: it cannot register, so it is not ready.
    cluster.kill("node1", signal.SIGKILL)
    address = f"{cluster.node_ip('node1')}:{PORT}"
    add_flags(cluster, "node1", "--metrics-listen", address)
    cluster.kill("scheduler", signal.SIGSTOP)
    try:
        cluster.restart("node1")
        cluster.wait_for("node1's health port", lambda: health_of(cluster, "node1") not in (
            "UNREACHABLE", "STOPPED"), timeout=30)
        assert health_of(cluster, "node1") == "NOT_SERVING"
    finally:
        cluster.kill("scheduler", signal.SIGCONT)
    cluster.wait_for("node1 serving", lambda: health_of(cluster, "node1") == "SERVING",
                     timeout=60)

    steady = {r["metadata"]["name"] for r in cluster.replicas("steady")}

    def replica_gauges() -> dict[str, float] | None:
        got = scrape(address)
        memory = {ls["replica"]: v for ls, v in got.get("mctl_replica_memory_bytes", [])
                  if ls["workload"] == "default/steady"}
        return memory if set(memory) == {f"default/{n}" for n in steady} else None
    memory = cluster.wait_for("per-replica gauges", replica_gauges, timeout=30)
    assert all(v > 0 for v in memory.values()), memory

    def counted() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        got = scrape(address)
        ok = (total(got, "mctl_container_restarts_total", reason="Error") >= 1
              and total(got, "mctl_oom_kills_total") >= 1
              and total(got, "mctl_container_restarts_total", reason="OOMKilled") >= 1
              and total(got, "mctl_container_starts_total", result="started") >= 2)
        return got if ok else None
    got = cluster.wait_for("restarts, OOM kills and starts counted", counted, timeout=90)
    assert total(got, "mctl_container_start_seconds_count") == total(
        got, "mctl_container_starts_total", result="started")
    pids = {ls["replica"]: v for ls, v in got["mctl_replica_pids"]}
    assert all(pids[f"default/{n}"] >= 1 for n in steady), pids
    # Bounded by the node's replicas: one series per replica, no more.
    assert len(got["mctl_replica_cpu_millis"]) <= len(cluster.replicas())
    cluster.mctl("delete", "-f", str(app))
