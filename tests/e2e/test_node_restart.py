"""Restarting a node is a first-class operation, and etcd trusts the schedulers only.

On one 3-node cluster: `cluster stop-node` / `restart-node` keep every
replica (same names, uids, nodes, restart counts, container processes);
`cluster up` after a kill -9 restarts exactly the dead processes and keeps
the data; etcd speaks mutual TLS with a CA of its own, on loopback only.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import grpc
import pyetcd
import pyetcd.exceptions
import pytest
from conftest import Cluster  # noqa: I001 - the e2e fixtures module

from mctl.common.procfs import start_time

WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: steady
spec:
  replicas: 3
  image: busybox
  command: ["/bin/sh", "-c", "exec sleep 100000"]
  resources: {memory: 16Mi}
"""


@pytest.fixture(scope="module")
def three(cluster_factory, tmp_path_factory) -> Cluster:
    # A long grace: a stopped node's replicas must stay where they are.
    c = cluster_factory(3, "--node-grace", "600")
    path = tmp_path_factory.mktemp("steady") / "steady.yaml"
    path.write_text(WORKLOAD)
    c.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    return c


def replicas(cluster: Cluster) -> dict[str, tuple[str, str, int, str]]:
    """name -> (uid, node, restarts, phase) of every replica of the workload."""
    return {r["metadata"]["name"]: (r["metadata"]["uid"], r["node"],
                                    r.get("status", {}).get("restarts", 0),
                                    r.get("status", {}).get("phase", ""))
            for r in cluster.replicas("steady")}


def container_pids(cluster: Cluster, reps: dict) -> dict[str, int]:
    """name -> the container's first process, from its bundle on its node."""
    out = {}
    for name, (_, node, _, _) in reps.items():
        state = json.loads((cluster.bundle(node, name) / "state.json").read_text())
        out[name] = state["init_pid"]
    return out


def ready(cluster: Cluster) -> dict[str, bool]:
    return {n["name"]: bool(n.get("ready"))
            for n in json.loads(cluster.mctl("get", "nodes", "-o", "json").stdout)["items"]}


def pids(cluster: Cluster) -> dict[str, tuple[int, int]]:
    return {p["name"]: (p["pid"], p["start_time"]) for p in cluster.state()["processes"]}


def steady(cluster: Cluster) -> dict[str, tuple[str, str, int, str]]:
    reps = cluster.wait_for("3 Running replicas on 3 nodes", lambda: (
        r if len(r := replicas(cluster)) == 3
        and all(v[3] == "Running" for v in r.values())
        and {v[1] for v in r.values()} == {"node1", "node2", "node3"} else None), timeout=60)
    assert isinstance(reps, dict)
    return reps


def etcd_client(cluster: Cluster, **tls: str) -> pyetcd.Etcd3Client:
    port = int(cluster.state()["etcd"].rsplit(":", 1)[1])
    return pyetcd.client(host="127.0.0.1", port=port, timeout=3, **tls)


def etcd_refuses(cluster: Cluster, **tls: str) -> bool:
    client = etcd_client(cluster, **tls)
    try:
        client.get_prefix("/mctl/")
    except (pyetcd.exceptions.Etcd3Exception, grpc.RpcError):
        return True
    finally:
        client.close()
    return False


def test_etcd_admits_the_schedulers_certificate_only(three: Cluster):
    pki_dir = three.dir / "pki"
    etcd_pki = pki_dir / "etcd"
    ca = str(etcd_pki / "ca.crt")
    scheduler = {"ca_cert": ca, "cert_cert": str(etcd_pki / "scheduler.crt"),
                 "cert_key": str(etcd_pki / "scheduler.key")}
    client = etcd_client(three, **scheduler)
    try:
        assert any(meta.key.startswith(b"/mctl/") for _, meta in client.get_prefix("/mctl/"))
    finally:
        client.close()
    assert etcd_refuses(three)                          # plain text
    assert etcd_refuses(three, ca_cert=ca)              # TLS, no client certificate
    # Certificates of the cluster CA (an agent's, the admin's) open the
    # scheduler and the agents, not etcd.
    for name in ("node1", "admin"):
        assert etcd_refuses(three, ca_cert=ca, cert_cert=str(pki_dir / f"{name}.crt"),
                            cert_key=str(pki_dir / f"{name}.key")), name


def test_etcd_keeps_its_files_private_and_listens_on_loopback_only(three: Cluster):
    assert stat.S_IMODE(os.stat(three.dir / "etcd").st_mode) == 0o700
    for key in (three.dir / "pki" / "etcd").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    etcd_pid = pids(three)["etcd"][0]
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    mine = [line.split()[3] for line in listening if f"pid={etcd_pid}," in line]
    assert len(mine) == 2, listening                    # clients and peers
    assert all(addr.startswith("127.0.0.1:") for addr in mine), mine


def test_stop_node_then_restart_node_keeps_every_replica(three: Cluster):
    before = steady(three)
    containers = container_pids(three, before)
    agent_before = pids(three)["node2"]

    out = three.mctl("cluster", "stop-node", "node2")
    assert "containers keep running" in out.stdout
    three.wait_for("node2 NotReady", lambda: ready(three).get("node2") is False, timeout=30)
    assert ready(three)["node1"] and ready(three)["node3"]
    for pid in containers.values():
        os.kill(pid, 0)      # node2's container too: only its agent died
    assert three.mctl("cluster", "stop-node", "node2").stdout.startswith(
        "node2: agent already stopped")

    three.mctl("cluster", "restart-node", "node2")
    assert pids(three)["node2"] != agent_before
    three.wait_for("node2 Ready", lambda: ready(three).get("node2") is True, timeout=30)
    after = steady(three)
    assert after == before                 # same names, uids, nodes, restart counts
    assert container_pids(three, after) == containers
    for pid in containers.values():
        os.kill(pid, 0)


def test_restart_node_of_a_running_agent_restarts_it(three: Cluster):
    before = steady(three)
    containers = container_pids(three, before)
    agent_before = pids(three)["node1"]
    three.mctl("cluster", "restart-node", "node1")
    assert pids(three)["node1"] != agent_before
    three.wait_for("node1 Ready", lambda: ready(three).get("node1") is True, timeout=30)
    assert steady(three) == before
    assert container_pids(three, before) == containers


def test_up_after_an_agent_kill_restarts_exactly_that_agent(three: Cluster):
    before = steady(three)
    containers = container_pids(three, before)
    procs = pids(three)
    pid = three.kill("node3")
    three.wait_for("node3's agent to die", lambda: start_time(pid) != procs["node3"][1])

    out = three.mctl("cluster", "up", "--nodes", "3")
    assert "restarted node3;" in out.stdout
    assert "node3 is not running" in out.stderr
    after_procs = pids(three)
    assert after_procs["node3"] != procs["node3"]
    assert {k: v for k, v in after_procs.items() if k != "node3"} == \
        {k: v for k, v in procs.items() if k != "node3"}
    three.wait_for("node3 Ready", lambda: ready(three).get("node3") is True, timeout=30)
    assert steady(three) == before
    assert container_pids(three, before) == containers

    # Nothing is dead now: `up` says so and changes nothing.
    out = three.mctl("cluster", "up", "--nodes", "3")
    assert out.stdout.startswith("cluster already running: 3 nodes")
    assert pids(three) == after_procs


def test_up_after_etcd_and_the_scheduler_die_restarts_both_and_keeps_the_data(three: Cluster):
    before = steady(three)
    procs = pids(three)
    for name in ("scheduler", "etcd"):
        pid = three.kill(name)
        three.wait_for(f"{name} to die", lambda pid=pid, name=name:
                       start_time(pid) != procs[name][1])

    out = three.mctl("cluster", "up", "--nodes", "3")
    assert "restarted etcd, scheduler;" in out.stdout, out.stdout
    after_procs = pids(three)
    assert {k for k in procs if after_procs[k] != procs[k]} == {"etcd", "scheduler"}
    three.wait_for("every node Ready", lambda: all(ready(three).values()), timeout=30)
    assert steady(three) == before


def test_node_verbs_refuse_what_is_not_a_node_in_one_line(three: Cluster):
    for args in (("stop-node",), ("restart-node", "node9"), ("stop-node", "etcd")):
        out = three.mctl("cluster", *args, check=False)
        assert out.returncode != 0
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr
