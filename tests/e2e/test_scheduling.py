"""The control plane on a 2-node, 2-scheduler local cluster: node loss, blips,
cordon and drain, leader failover. Real etcd, schedulers, agents and containers."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from conftest import Cluster  # the e2e fixtures module

# NotReady comes after the heartbeat lease (3 s) lapses; replicas move GRACE
# seconds later. A blip must be shorter than lease + grace, and longer than
# the lease so that the node really was seen NotReady.
GRACE = 6

WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: {replicas}
  image: busybox
  command: ["sleep", "3600"]
  resources: {{cpu: 100m, memory: 16Mi}}
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(2, "--schedulers", "2", "--node-grace", str(GRACE))


def apply(cluster: Cluster, tmp_path, name: str, replicas: int) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(WORKLOAD.format(name=name, replicas=replicas))
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    return str(path)


def running(cluster: Cluster, workload: str) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in cluster.replicas(workload)
            if r.get("status", {}).get("phase") == "Running"
            and not r["metadata"].get("deletionRequested")}


def nodes(cluster: Cluster) -> dict[str, dict]:
    return {n["name"]: n for n in json.loads(cluster.mctl("get", "nodes", "-o", "json").stdout)
            ["items"]}


def events(cluster: Cluster, kind: str, name: str) -> str:
    return cluster.mctl("describe", kind, name).stdout.split("Events:", 1)[1]


def containers_on(cluster: Cluster, node: str) -> set[str]:
    d = cluster.dir / "nodes" / node / "containers"
    return {p.name.split("_", 1)[1] for p in d.iterdir()} if d.is_dir() else set()


def test_replicas_of_a_dead_node_move_and_its_containers_stop_when_it_returns(
        cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "lost", 4)
    before = running(cluster, "lost")
    on_node2 = {n for n, r in before.items() if r["node"] == "node2"}
    assert len(before) == 4 and on_node2 and len(on_node2) < 4    # spread over both

    cluster.kill("node2")
    moved = cluster.wait_for("the replicas of node2 Running on node1", lambda: (
        r if len(r := running(cluster, "lost")) == 4
        and all(x["node"] == "node1" for x in r.values()) else None), timeout=3 + GRACE + 20)
    assert not on_node2 & set(moved)                    # replaced, under new names
    assert len(cluster.replicas("lost")) == 4           # nothing doubled
    assert nodes(cluster)["node2"].get("ready") is not True
    assert "Rescheduled" in events(cluster, "workload", "lost")
    assert "NodeNotReady" in events(cluster, "node", "node2")
    # The old containers still run on the dead node (its monitors outlive
    # the agent) until the node comes back and hears they moved.
    assert on_node2 <= containers_on(cluster, "node2")

    cluster.restart("node2")
    cluster.wait_for("node2 to stop the moved replicas", lambda: not (
        on_node2 & containers_on(cluster, "node2")), timeout=30)
    assert set(running(cluster, "lost")) == set(moved)
    cluster.mctl("delete", "-f", path, "--timeout", "30")


def test_a_blip_shorter_than_the_grace_period_restarts_nothing(cluster: Cluster, tmp_path):
    cluster.wait_for("node2 Ready", lambda: nodes(cluster)["node2"].get("ready"), timeout=20)
    path = apply(cluster, tmp_path, "steady", 4)
    before = {n: (r["metadata"]["uid"], r["node"]) for n, r in running(cluster, "steady").items()}
    assert "node2" in {node for _, node in before.values()}

    cluster.kill("node2", signal.SIGSTOP)
    try:
        cluster.wait_for("node2 NotReady", lambda: not nodes(cluster)["node2"].get("ready"),
                         timeout=GRACE)
    finally:
        cluster.kill("node2", signal.SIGCONT)
    cluster.wait_for("node2 Ready again", lambda: nodes(cluster)["node2"].get("ready"),
                     timeout=10)
    time.sleep(GRACE / 2)
    after = {n: (r["metadata"]["uid"], r["node"]) for n, r in running(cluster, "steady").items()}
    assert after == before
    assert all(r["status"].get("restarts", 0) == 0 for r in cluster.replicas("steady"))
    assert "NodeNotReady" in events(cluster, "node", "node2")
    cluster.mctl("delete", "-f", path, "--timeout", "30")


def test_cordon_keeps_new_replicas_off_and_drain_moves_them(cluster: Cluster, tmp_path):
    cluster.wait_for("node2 Ready", lambda: nodes(cluster)["node2"].get("ready"), timeout=20)
    assert cluster.mctl("cordon", "node1").stdout.strip() == "node/node1 cordoned"
    assert "SchedulingDisabled" in cluster.mctl("get", "nodes").stdout
    path = apply(cluster, tmp_path, "fenced", 3)
    assert Counter(r["node"] for r in running(cluster, "fenced").values()) == {"node2": 3}

    cluster.mctl("uncordon", "node1")
    out = cluster.mctl("drain", "node2", "--timeout", "60").stdout
    assert "node/node2 drained" in out and out.count("evicted") == 3
    assert Counter(r["node"] for r in running(cluster, "fenced").values()) == {"node1": 3}
    assert len(cluster.replicas("fenced")) == 3
    assert nodes(cluster)["node2"].get("cordoned") is True
    assert "Drained" in events(cluster, "node", "node2")
    cluster.mctl("uncordon", "node2")
    assert nodes(cluster)["node2"].get("cordoned") is not True
    bad = cluster.mctl("cordon", "node9", check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == "mctl: node node9 not found"
    cluster.mctl("delete", "-f", path, "--timeout", "30")


def leader(cluster: Cluster) -> str:
    out = cluster.mctl("cluster", "status", check=False).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("leader:"))


def test_killing_the_leader_hands_over_with_nothing_lost_or_doubled(cluster: Cluster, tmp_path):
    apply(cluster, tmp_path, "kept", 3)
    kept = running(cluster, "kept")
    old = leader(cluster)
    assert old in ("scheduler", "scheduler2")
    cluster.kill(old)
    new = cluster.wait_for("a new leader", lambda: (
        x if (x := leader(cluster)) not in (old, "<none yet>") else None), timeout=15)
    assert new != old
    # The survivor serves the CLI and the agents, and places new work.
    apply(cluster, tmp_path, "after", 2)
    assert len(running(cluster, "after")) == 2
    time.sleep(2)
    assert {n: r["metadata"]["uid"] for n, r in running(cluster, "kept").items()} == {
        n: r["metadata"]["uid"] for n, r in kept.items()}
    assert len(cluster.replicas("kept")) == 3
    cluster.mctl("delete", "workload", "kept", "after", "--timeout", "30")
    cluster.restart(old)


BIG = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: big
spec:
  replicas: 3
  image: busybox
  command: ["sleep", "3600"]
  resources: {cpu: 1500m, memory: 16Mi}
"""


def test_an_unschedulable_replica_is_placed_when_a_node_joins(cluster: Cluster, tmp_path):
    # Each node has 2 cpus: one such replica fits per node, so the third waits.
    path = tmp_path / "big.yaml"
    path.write_text(BIG)
    cluster.mctl("apply", "-f", str(path))
    pending = cluster.wait_for("two Running, one Pending", lambda: (
        p if len(running(cluster, "big")) == 2 and len(
            p := [r for r in cluster.replicas("big") if not r.get("node")]) == 1 else None),
        timeout=30)
    assert pending[0]["status"]["reason"] == "Unschedulable"
    assert pending[0]["status"]["message"] == "0/2 nodes fit: 2 insufficient cpu"

    out = cluster.mctl("cluster", "up", "--nodes", "3", "--stop-grace", "1")
    assert "cluster grew: 2 -> 3 nodes" in out.stdout
    placed = cluster.wait_for("the third on node3", lambda: (
        r if len(r := running(cluster, "big")) == 3 else None), timeout=30)
    assert sorted(r["node"] for r in placed.values()) == ["node1", "node2", "node3"]
    assert "Scheduled" in events(cluster, "replica", pending[0]["metadata"]["name"])
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")
