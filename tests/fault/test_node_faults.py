"""Faults of a node on a 3-node cluster: its link down for 5 s and for 25 s, its disk full.

A link blip is `ip link set eth0 down; sleep N; up` in the node's own
namespace (made by the cluster: the agent runs there and reaches the
scheduler through that link, so the node is cut off for N seconds, its
containers running on). Within the node grace (8 s here) nothing may
restart or move; past it the node's replicas are replaced elsewhere, and
when it returns its old containers must go (no replica twice) and its
routes to the other nodes' container subnets must be back. A full disk is
a small tmpfs as node3's containers dir, filled up: new replicas there get
a clear create error, the agent does not crash or loop, running containers
run on, and everything starts once space is freed. Traffic goes only to
the cluster's own addresses.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time

import pytest
from conftest import (  # noqa: I001 - the fault fixtures module
    alive,
    bundles,
    container_pids,
    measured,
    replicas,
    running,
)

from mctl.common.procfs import start_time

NODES = ["node1", "node2", "node3"]
GRACE_S = 8
TMPFS_SIZE = "64m"
BUSYBOX = "/bin/busybox"

WEB = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c", "mkdir -p /www && echo hello from $HOSTNAME > /www/index.html \
&& exec httpd -f -p 8080 -h /www"]
  resources: {{cpu: 10m, memory: 16Mi}}
"""


@pytest.fixture(scope="module")
def nodes(cluster_factory, tmp_path_factory):
    c = cluster_factory(3, "--node-grace", str(GRACE_S))
    c.files = tmp_path_factory.mktemp("node-faults")
    # Before any replica: node3's containers dir is a small tmpfs of its own,
    # which the disk case fills (the agent keeps no file open there).
    c.small_disk = c.dir / "nodes" / "node3" / "containers"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755",
                    "mctl-fault-disk", str(c.small_disk)], check=True)
    try:
        yield c
    finally:
        for name in ("web", "more"):
            c.mctl("delete", "workload", name, "--timeout", "90", check=False)
        for f in c.small_disk.glob("filler*"):
            f.unlink()
        c.wait_for("node3's containers gone", lambda: not any(
            d.is_dir() for d in c.small_disk.iterdir()), timeout=60)
        subprocess.run(["umount", str(c.small_disk)], check=True)


def apply(cluster, name: str, count: int) -> None:
    path = cluster.files / f"{name}.yaml"
    path.write_text(WEB.format(name=name, replicas=count))
    cluster.mctl("apply", "-f", str(path))


def netns(cluster, node: str) -> str:
    return cluster.state()["network"]["nodes"][node]["netns"]


def fetch_in(ns: str, ip: str) -> str:
    """A container's page, fetched from inside the namespace `ns`; "" on failure."""
    proc = subprocess.run(["ip", "netns", "exec", ns, "timeout", "1", BUSYBOX, "wget", "-q",
                           "-O-", f"http://{ip}:8080/"], capture_output=True, text=True,
                          timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def ips(cluster, workload: str) -> dict[str, tuple[str, str]]:
    """name -> (node, ip) of the workload's replicas."""
    return {r["metadata"]["name"]: (r["node"], r.get("status", {}).get("ip", ""))
            for r in cluster.replicas(workload)}


def reaches_every_other_node(cluster, node: str) -> bool:
    """`node`'s own namespace reaches a web container on each other node."""
    ns = netns(cluster, node)
    targets = {}
    for name, (on, ip) in ips(cluster, "web").items():
        if on != node and ip:
            targets.setdefault(on, (name, ip))
    return len(targets) == 2 and all(fetch_in(ns, ip) == f"hello from {name}"
                                     for name, ip in targets.values())


def blip(cluster, node: str, seconds: float) -> None:
    subprocess.run(["ip", "netns", "exec", netns(cluster, node), "sh", "-c",
                    f"ip link set eth0 down; sleep {seconds}; ip link set eth0 up"],
                   check=True, timeout=seconds + 30)


def ready(cluster) -> dict[str, bool]:
    return {n["name"]: bool(n.get("ready"))
            for n in json.loads(cluster.mctl("get", "nodes", "-o", "json").stdout)["items"]}


def settled(cluster, count: int = 6) -> tuple[dict, dict]:
    reps = running(cluster, "web", count, timeout=90)
    cluster.wait_for("every node Ready", lambda: all(ready(cluster).values()), timeout=30)
    return reps, container_pids(cluster, reps)


def node_events(cluster, node: str) -> str:
    return cluster.mctl("describe", "node", node).stdout


def test_blip_of_5s_restarts_and_moves_nothing(nodes):
    apply(nodes, "web", 6)
    reps, pids = settled(nodes)
    assert {node for _, node, _, _ in reps.values()} == set(NODES)
    nodes.wait_for("node1 to reach the other nodes' containers",
                   lambda: reaches_every_other_node(nodes, "node1"), timeout=30)
    agent = next(p for p in nodes.state()["processes"] if p["name"] == "node1")

    blip(nodes, "node1", 5)
    t0 = time.monotonic()
    nodes.wait_for("node1 to reach the other nodes' containers again",
                   lambda: reaches_every_other_node(nodes, "node1"), timeout=10)
    measured(f"link down 5 s: node1's traffic to other nodes back "
             f"{time.monotonic() - t0:.2f} s after the link came up")
    assert settled(nodes) == (reps, pids)      # names, uids, nodes, restarts, processes
    assert all(alive(p) for p in pids.values())
    assert start_time(agent["pid"]) == agent["start_time"]
    # The agent's repairs reach the node's events (`describe node`).
    nodes.wait_for("a DriftRepaired event on node1",
                   lambda: "DriftRepaired" in node_events(nodes, "node1"), timeout=10)
    drift = nodes.mctl("debug", "node", "node1", "drift").stdout.splitlines()
    assert "re-added" in "\n".join(drift[2:])
    took = drift[0].split("took ")[1].split(";")[0]
    measured(f"link down 5 s: node1's last drift check took {took}")


def test_blip_of_25s_moves_the_replicas_once_and_repairs_the_routes(nodes):
    before, pids = settled(nodes)
    on_node1 = {n for n, (_, node, _, _) in before.items() if node == "node1"}
    assert on_node1
    t0 = time.monotonic()
    moved_at: list[float] = []

    def replaced() -> bool:
        reps = replicas(nodes, "web")
        done = (len(reps) == 6 and not on_node1 & set(reps)
                and all(v[3] == "Running" for v in reps.values()))
        if done and not moved_at:
            moved_at.append(time.monotonic() - t0)
        return done

    link = threading.Thread(target=blip, args=(nodes, "node1", 25))
    link.start()
    try:
        nodes.wait_for("node1's replicas Running elsewhere", replaced, timeout=24)
    finally:
        link.join()
    measured(f"node cut off (link down): its replicas Running elsewhere after "
             f"{moved_at[0]:.1f} s (lease 3 s + grace {GRACE_S} s + start)")
    t1 = time.monotonic()
    nodes.wait_for("node1 Ready again", lambda: ready(nodes).get("node1"), timeout=30)
    # Back: its old containers go, nothing is there twice, its routes are repaired.
    nodes.wait_for("node1's old containers removed",
                   lambda: not bundles(nodes, ["node1"], "web")["node1"], timeout=30)
    measured(f"node back after 25 s: its moved replicas' old containers gone "
             f"{time.monotonic() - t1:.1f} s after it was Ready")
    after, after_pids = settled(nodes)
    assert len(after) == 6 and not on_node1 & set(after)
    kept = {n: v for n, v in before.items() if n not in on_node1}
    assert {n: after[n] for n in kept} == kept               # the others untouched
    assert {n: after_pids[n] for n in kept} == {n: pids[n] for n in kept}
    on_disk = bundles(nodes, NODES, "web")
    assert sorted(b for bs in on_disk.values() for b in bs) == sorted(
        f"default_{n}" for n in after)
    for pid in (pids[n] for n in on_node1):
        assert not alive(pid)
    nodes.wait_for("node1 to reach the other nodes' containers",
                   lambda: reaches_every_other_node(nodes, "node1"), timeout=10)


def fill(directory) -> int:
    """Writes filler files into `directory` until it is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return written


def test_full_disk_on_a_node_is_a_clear_error_and_recovers(nodes):
    reps, pids = settled(nodes)
    on_node3 = {n for n, (_, node, _, _) in reps.items() if node == "node3"}
    assert on_node3
    agent = next(p for p in nodes.state()["processes"] if p["name"] == "node3")
    log_size = os.path.getsize(nodes.dir / "node3.log")
    assert fill(nodes.small_disk) > 0
    apply(nodes, "more", 3)                  # spread: one for each node, node3's cannot start

    def stuck_on_node3() -> str:
        for r in nodes.replicas("more"):
            st = r.get("status", {})
            if r["node"] == "node3" and st.get("reason") == "CreateError":
                return st.get("message", "")
        return ""
    message = nodes.wait_for("a create error on node3", stuck_on_node3, timeout=30)
    assert isinstance(message, str) and message.startswith("node disk full: ")
    assert "No space left on device" in message
    time.sleep(6)                            # retries meanwhile; nothing else breaks
    assert start_time(agent["pid"]) == agent["start_time"]      # no crash, no restart
    with open(nodes.dir / "node3.log", errors="replace") as f:
        f.seek(log_size)
        assert "Traceback" not in f.read()
    assert {n: v for n, v in replicas(nodes, "web").items() if n in on_node3} == \
        {n: reps[n] for n in on_node3}
    assert all(alive(pids[n]) for n in on_node3)

    (nodes.small_disk / "filler").unlink()
    t0 = time.monotonic()
    more = running(nodes, "more", 3, timeout=30)
    measured(f"node disk full: the replica started {time.monotonic() - t0:.1f} s after "
             f"space was freed")
    assert {node for _, node, _, _ in more.values()} == set(NODES)
    assert settled(nodes) == (reps, pids)
