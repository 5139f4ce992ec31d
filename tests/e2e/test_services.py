"""Services on a 3-node local cluster: a virtual IP per workload, balanced by every node, and names.

`api` is three busybox web servers (spread one per node) serving their own
name; `client` is one busybox that does nothing but wait for `mctl exec`.
From inside the client, `wget http://api:8080/` resolves `api` through the
node's DNS responder (resolv.conf's search list), connects to the virtual IP
and is balanced by the nft table of the client's node to replicas on every
node. Then one replica goes (the workload scaled to two): a second later no
request fails. A replica failing its readiness check leaves the rotation
and comes back when it passes. `cluster down` must leave nothing behind
(the fixture checks; the node namespaces take the tables and sockets).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import Cluster  # the e2e fixtures module

API_SCRIPT = ('mkdir -p /www && echo "$HOSTNAME" > /www/index.html && '
              "exec httpd -f -p 8080 -h /www")


def api_yaml(replicas: int) -> str:
    return f"""\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: api
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c", {json.dumps(API_SCRIPT)}]
  ports: [{{containerPort: 8080}}]
  # Ready unless /www/unready exists (a test makes one replica fail this way).
  readiness: {{exec: ["/bin/sh", "-c", "test ! -e /www/unready"], periodSeconds: 1,
               failureThreshold: 1}}
  resources: {{cpu: 100m, memory: 32Mi}}
"""


CLIENT = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: client
spec:
  replicas: 1
  image: busybox
  # A shell as init reaps what `mctl exec` leaves to it: busybox's timeout
  # leaves its watcher process behind, which `sleep` as init never reaps,
  # until the pids limit stops every fork.
  command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
  resources: {cpu: 100m, memory: 32Mi}
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(3)


@pytest.fixture(scope="module")
def apps(cluster: Cluster, tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("services")
    (d / "api.yaml").write_text(api_yaml(3))
    (d / "client.yaml").write_text(CLIENT)
    cluster.mctl("apply", "-f", str(d / "api.yaml"), "--wait", "--timeout", "60")
    cluster.mctl("apply", "-f", str(d / "client.yaml"), "--wait", "--timeout", "60")
    client = cluster.wait_for("the client running", lambda: [
        r for r in cluster.replicas("client") if r["status"].get("phase") == "Running"])
    return {"dir": d, "client": client[0]["metadata"]["name"]}


def running_api(cluster: Cluster) -> list[str]:
    return sorted(r["metadata"]["name"] for r in cluster.replicas("api")
                  if r["status"].get("phase") == "Running")


def fetch_many(cluster: Cluster, client: str, n: int, url: str = "http://api:8080/") -> list[str]:
    """n requests from inside the client, one line each: the answer, or FAIL.

    `timeout 3 wget`, not `wget -T 3`: Debian 12's busybox wget crashes on -T.
    """
    script = (f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); "
              f"timeout 3 wget -q -O- {url} 2>/dev/null || echo FAIL; done")
    out = cluster.mctl("exec", client, "--", "sh", "-c", script, timeout=300).stdout
    return out.split()


def test_the_client_resolves_names_through_its_node(cluster: Cluster, apps):
    client = str(apps["client"])
    resolv = cluster.mctl("exec", client, "--", "cat", "/etc/resolv.conf").stdout
    assert re.search(r"^nameserver 10\.\d+\.\d+\.1$", resolv, re.M), resolv
    assert "search default.mctl mctl" in resolv
    wide = cluster.mctl("get", "workloads", "-o", "wide").stdout
    vip = re.search(r"api\s.*?(10\.96\.\d+\.\d+)", wide)
    assert vip, wide
    # busybox's nslookup tries the search list only for names without a dot
    # and exits 1 if any candidate says NXDOMAIN (api.mctl does), so its
    # answer is read from its output; the C library's resolver (wget) below
    # goes by ndots.
    def lookup(name: str) -> str:
        return cluster.mctl("exec", client, "--", "nslookup", name, check=False).stdout

    for name in ("api", "api.default.mctl"):
        assert f"Address: {vip.group(1)}" in lookup(name), name
    replica = running_api(cluster)[0]
    ip = next(r["status"]["ip"] for r in cluster.replicas("api")
              if r["metadata"]["name"] == replica)
    assert f"Address: {ip}" in lookup(f"{replica}.api.default.mctl")
    # Not a name of the cluster: NXDOMAIN for every candidate, no address.
    out = lookup("nope")
    assert "NXDOMAIN" in out and "Address: 10." not in out.split("\n", 2)[2]
    # Relative names through the search list, as applications resolve them.
    assert fetch_many(cluster, client, 1, "http://api.default:8080/") != ["FAIL"]
    assert fetch_many(cluster, client, 1, f"http://{replica}.api:8080/") == [replica]


def test_requests_to_the_service_reach_every_replica_on_every_node(cluster: Cluster, apps):
    replicas = running_api(cluster)
    assert len({r["node"] for r in cluster.replicas("api")}) == 3
    answers = fetch_many(cluster, str(apps["client"]), 200)
    assert "FAIL" not in answers
    assert sorted(set(answers)) == replicas


def test_a_replica_failing_readiness_leaves_the_rotation_and_comes_back(cluster: Cluster,
                                                                         apps):
    client = str(apps["client"])
    victim = running_api(cluster)[0]
    cluster.mctl("exec", victim, "--", "touch", "/www/unready")

    def not_ready() -> bool:
        return any(r["metadata"]["name"] == victim and not r["status"].get("ready")
                   for r in cluster.replicas("api"))

    cluster.wait_for("the replica reported not ready", not_ready, timeout=10)
    time.sleep(1)
    answers = fetch_many(cluster, client, 60)
    assert "FAIL" not in answers and victim not in answers
    cluster.mctl("exec", victim, "--", "rm", "/www/unready")
    cluster.wait_for("the replica reported ready", lambda: not not_ready(), timeout=10)
    time.sleep(1)
    assert victim in fetch_many(cluster, client, 60)


def test_a_deleted_replica_leaves_every_rotation_within_a_second(cluster: Cluster, apps):
    d = apps["dir"]
    (d / "api.yaml").write_text(api_yaml(2))           # type: ignore[operator]
    cluster.mctl("apply", "-f", str(d / "api.yaml"))   # type: ignore[operator]
    cluster.wait_for("one api replica going", lambda: len(running_api(cluster)) == 2
                     or len(cluster.replicas("api")) == 2, timeout=10)
    time.sleep(1)
    answers = fetch_many(cluster, str(apps["client"]), 100)
    assert "FAIL" not in answers
    cluster.wait_for("two api replicas", lambda: len(cluster.replicas("api")) == 2, timeout=30)
    assert set(answers) <= set(running_api(cluster)) | {
        r["metadata"]["name"] for r in cluster.replicas("api")}


def test_debug_node_services_shows_the_nodes_view(cluster: Cluster, apps):
    out = cluster.mctl("debug", "node", "node1", "services").stdout
    assert "default/api" in out and "api.default.mctl." in out
    assert "dns: 10." in out and ":53 (udp, tcp)" in out


def test_a_deleted_workload_leaves_no_name_and_no_element(cluster: Cluster, apps):
    vip = re.search(r"api\s.*?(10\.96\.\d+\.\d+)",
                    cluster.mctl("get", "workloads", "-o", "wide").stdout)
    assert vip
    cluster.mctl("delete", "workload", "api")
    node_netns = {n: cluster.state()["network"]["nodes"][n]["netns"]
                  for n in ("node1", "node2", "node3")}

    def gone() -> bool:
        for ns in node_netns.values():
            table = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip",
                                    "mctl0_services"], capture_output=True, text=True).stdout
            if vip.group(1) in table or "svc_default_api" in table:
                return False
        return True

    cluster.wait_for("the VIP gone from every node's table", gone, timeout=5)
    out = cluster.mctl("exec", str(apps["client"]), "--", "nslookup", "api.default.mctl",
                       check=False).stdout
    assert "NXDOMAIN" in out and vip.group(1) not in out
