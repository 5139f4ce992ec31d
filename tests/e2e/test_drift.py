"""Drift repaired on a real 3-node local cluster: a link blip, a route and a table deleted by hand.

Issue 13: after `ip link set eth0 down; sleep 3; up` in a node's namespace
the kernel had dropped the node's routes to the other nodes' container
subnets and nothing put them back. Here each accident is made by hand in
node1's namespace (mctl-<id>-node1, made by the cluster itself), and a
container on node1 must reach a container on node2 again within 2 s of
it, as must the hostPort and node1's own connections to the workload's
virtual IP (through the service CIDR's route into its bridge); `mctl debug
node node1 drift` and its events must say what was found and repaired.
Traffic goes only to the cluster's own addresses (its bridge, its nodes'
namespaces, the VIP).
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable

import pytest
from conftest import (  # the e2e fixtures module
    BUSYBOX,
    Cluster,
    busybox_workload,
    http_get_in_netns,
)

REPAIRED_WITHIN = 2.0
SERVICE_CIDR = "10.96.0.0/16"           # the scheduler's default --service-cidr

WEB = busybox_workload(
    "web", "mkdir -p /www && echo hello from $HOSTNAME > /www/index.html && "
    "exec httpd -f -p 8080 -h /www", replicas=3,
    ports="[{containerPort: 8080, hostPort: 18080}]")


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(3)


@pytest.fixture(scope="module")
def web(cluster: Cluster, tmp_path_factory) -> dict[str, dict]:
    """One Running replica with an address per node (spread), by node."""
    cluster.apply_text(tmp_path_factory.mktemp("drift") / "web.yaml", WEB)
    web = cluster.running_by_node("web", 3)
    # Routes to the other nodes come with their next desired set.
    for other in ("node2", "node3"):
        page = f"hello from {web[other]['metadata']['name']}"
        cluster.wait_for(f"node1's container to reach {other}'s",
                         lambda o=other, p=page: fetch_from_node1(cluster, web, o) == p,
                         timeout=20)
    return web


def by_hand(cluster: Cluster, node: str, command: str) -> None:
    """What an operator or an accident does in a node's namespace."""
    subprocess.run(["ip", "netns", "exec", cluster.node_netns(node), "sh", "-c", command],
                   check=True, timeout=30)


def fetch_from_node1(cluster: Cluster, web: dict[str, dict], target: str) -> str:
    """node2's (or node3's) page, fetched from inside node1's container; "" on failure."""
    here = cluster.netns_of("node1", web["node1"]["metadata"]["name"])
    # timeout(1), not wget's -T: the host's static busybox crashes with -T.
    proc = subprocess.run(["ip", "netns", "exec", here, "timeout", "1", BUSYBOX, "wget", "-q",
                           "-O-", f"http://{web[target]['status']['ip']}:8080/"],
                          capture_output=True, text=True, timeout=10)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def seconds_until(works: Callable[[], bool], limit: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if works():
            return time.monotonic() - t0
        time.sleep(0.05)
    return float("inf")


def routes_of_node1(cluster: Cluster) -> str:
    return subprocess.run(["ip", "-n", cluster.node_netns("node1"), "route"],
                          capture_output=True, text=True, check=True).stdout


def host_port_of_node1(cluster: Cluster) -> str:
    try:
        with urllib.request.urlopen(f"http://{cluster.node_ip('node1')}:18080/",
                                    timeout=1) as resp:
            return resp.read().decode().strip()
    except OSError:
        return ""


def test_link_blip_routes_and_traffic_back_within_2s(cluster: Cluster, web):
    page = f"hello from {web['node2']['metadata']['name']}"
    assert fetch_from_node1(cluster, web, "node2") == page
    node2_subnet = cluster.nodes()["node2"]["podSubnet"]
    by_hand(cluster, "node1", "ip link set eth0 down; sleep 3; ip link set eth0 up")
    took = seconds_until(lambda: fetch_from_node1(cluster, web, "node2") == page)
    assert took <= REPAIRED_WITHIN, f"traffic back after {took:.2f}s"
    assert node2_subnet in routes_of_node1(cluster)
    # The node stayed Ready and its replica Running, as in the issue.
    assert fetch_from_node1(cluster, web, "node3") == (
        f"hello from {web['node3']['metadata']['name']}")


def test_route_deleted_by_hand_is_back_within_2s(cluster: Cluster, web):
    page = f"hello from {web['node2']['metadata']['name']}"
    node2_subnet = cluster.nodes()["node2"]["podSubnet"]
    by_hand(cluster, "node1", f"ip route del {node2_subnet}")
    took = seconds_until(lambda: fetch_from_node1(cluster, web, "node2") == page)
    assert took <= REPAIRED_WITHIN, f"traffic back after {took:.2f}s"
    assert f"{node2_subnet} via {cluster.node_ip('node2')}" in routes_of_node1(cluster)


def test_nft_table_flushed_by_hand_is_back_within_2s(cluster: Cluster, web):
    page = f"hello from {web['node1']['metadata']['name']}"
    assert host_port_of_node1(cluster) == page
    by_hand(cluster, "node1", "nft flush table ip mctl0")
    took = seconds_until(lambda: host_port_of_node1(cluster) == page)
    assert took <= REPAIRED_WITHIN, f"hostPort back after {took:.2f}s"


def test_service_route_deleted_by_hand_is_back_within_2s(cluster: Cluster, web):
    vip = str(cluster.wait_for("web's virtual IP", lambda: cluster.virtual_ip("web")))
    pages = {f"hello from {r['metadata']['name']}" for r in web.values()}
    ns = cluster.node_netns("node1")
    cluster.wait_for("node1 itself to reach the VIP",
                     lambda: http_get_in_netns(ns, vip, 8080) in pages, timeout=20)
    by_hand(cluster, "node1", f"ip route del {SERVICE_CIDR}")
    took = seconds_until(lambda: http_get_in_netns(ns, vip, 8080, timeout=0.5) in pages)
    assert took <= REPAIRED_WITHIN, f"the VIP back after {took:.2f}s"
    assert f"{SERVICE_CIDR} dev mctl0 proto 109 scope link" in routes_of_node1(cluster)


def test_debug_node_shows_drift_found_and_repaired(cluster: Cluster, web):
    node2_subnet = cluster.nodes()["node2"]["podSubnet"]
    drift = cluster.mctl("debug", "node", "node1", "drift").stdout
    counts = drift.splitlines()[1]
    assert counts.startswith("drift found: ") and not counts.startswith("drift found: 0")
    assert f"route {node2_subnet} via {cluster.node_ip('node2')}: missing; re-added" in drift
    assert "nft table ip mctl0: changed; rewritten" in drift
    assert f"route {SERVICE_CIDR} dev mctl0: missing; re-added" in drift
    events = cluster.mctl("debug", "node", "node1", "events", "--limit", "500").stdout
    assert "drift found (notified: " in events          # prompt: not waiting for a resync
    assert f"route {node2_subnet} via {cluster.node_ip('node2')}: missing; re-added" in events
    # Nodes where nothing happened found nothing (no false alarms).
    quiet = cluster.mctl("debug", "node", "node3", "drift").stdout
    assert "drift found: 0," in quiet
