"""Services through a rolling update, and the services table repaired after an accident.

`api` is three busybox web servers answering "<replica> <version>", ready
once their port takes connections; `client` is one busybox waiting for
`mctl exec`. While a steady loop of requests runs in the client against
`http://api:8080/`, `api` is updated (a new env var) with `maxUnavailable:
0, maxSurge: 1`: a new replica serves only once it is ready, an old one
leaves every node's rotation before it stops, so not one request fails and
the answers go from the old version to the new one. Then the client node's
services table is flushed by hand, as an operator's `nft flush ruleset`
would: the agent's self-check must put it back within 2 s, and a request
through the virtual IP work again. (A replica failing readiness is
covered by test_services.py.)
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from conftest import MCTL, Cluster  # the e2e fixtures module
from test_services import CLIENT  # the same client container

REQUESTS = 300
REPAIRED_WITHIN = 2.0
API_SCRIPT = ('mkdir -p /www && echo "$HOSTNAME $VERSION" > /www/index.html && '
              "exec httpd -f -p 8080 -h /www")


def api_yaml(version: str) -> str:
    return f"""\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: api
spec:
  replicas: 3
  image: busybox
  command: ["/bin/sh", "-c", {json.dumps(API_SCRIPT)}]
  env: [{{name: VERSION, value: {version}}}]
  ports: [{{containerPort: 8080}}]
  readiness: {{tcpPort: 8080, periodSeconds: 1, failureThreshold: 1}}
  update: {{maxUnavailable: 0, maxSurge: 1}}
  resources: {{cpu: 100m, memory: 32Mi}}
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(3)


@pytest.fixture(scope="module")
def apps(cluster: Cluster, tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("rollout")
    (d / "api.yaml").write_text(api_yaml("v1"))
    (d / "client.yaml").write_text(CLIENT)
    cluster.mctl("apply", "-f", str(d / "api.yaml"), "--wait", "--timeout", "60")
    cluster.mctl("apply", "-f", str(d / "client.yaml"), "--wait", "--timeout", "60")
    client = cluster.wait_for("the client running", lambda: [
        r for r in cluster.replicas("client") if r["status"].get("phase") == "Running"])
    return {"dir": d, "client": client[0]["metadata"]["name"], "node": client[0]["node"]}


def request_loop(n: int, pause: str = "0") -> str:
    """A shell loop of n requests to the service, one line each: the answer, or FAIL.

    `timeout 3 wget`, not `wget -T 3`: Debian 12's busybox wget crashes on -T.
    """
    return (f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); "
            "timeout 3 wget -q -O- http://api:8080/ 2>/dev/null || echo FAIL; "
            f"sleep {pause}; done")


def answers(out: str) -> list[str]:
    """The version of each answer ("FAIL" for a failed request)."""
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def test_a_rolling_update_under_load_loses_no_request(cluster: Cluster, apps):
    client = str(apps["client"])
    before = {r["metadata"]["name"] for r in cluster.replicas("api")}
    # The loop runs in the client while the update goes on: about 0.15 s
    # a request, so 300 of them outlast the three replacements.
    loop = subprocess.Popen(
        [*MCTL, "exec", client, "--", "sh", "-c", request_loop(REQUESTS, "0.1")],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        d = apps["dir"]
        (d / "api.yaml").write_text(api_yaml("v2"))            # type: ignore[operator]
        cluster.mctl("apply", "-f", str(d / "api.yaml"),       # type: ignore[operator]
                     "--wait", "--timeout", "120")
        out, err = loop.communicate(timeout=300)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    got = answers(out)
    assert len(got) == REQUESTS, (len(got), err)
    assert "FAIL" not in got, f"{got.count('FAIL')} of {REQUESTS} requests failed: {got}"
    # The loop spanned the rollout: old answers first, only new ones at the end.
    assert got[0] == "v1" and got[-1] == "v2", got
    after = {r["metadata"]["name"] for r in cluster.replicas("api")}
    assert not before & after, "every replica was replaced"


def test_a_flushed_services_table_is_rewritten_and_the_vip_works_again(cluster: Cluster,
                                                                       apps):
    client, node = str(apps["client"]), str(apps["node"])
    ns = cluster.state()["network"]["nodes"][node]["netns"]

    def table() -> str:
        return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip",
                               "mctl0_services"], capture_output=True, text=True,
                              timeout=10).stdout

    def repairs() -> int:
        drift = cluster.mctl("debug", "node", node, "drift").stdout
        return sum("mctl0_services" in line and "rewritten" in line
                   for line in drift.splitlines())

    # `nft flush table` takes every rule and keeps chains and maps: the
    # balancing rule (dnat to numgen over the endpoints) is what goes. The
    # agent may put it back before a listing could show it gone (an nft
    # notification wakes its check), so its drift record says it did.
    assert "numgen random" in table()
    before = repairs()
    subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "table", "ip", "mctl0_services"],
                   check=True, timeout=10)
    cluster.wait_for("the services table rewritten",
                     lambda: "numgen random" in table() and repairs() > before,
                     timeout=REPAIRED_WITHIN)
    out = cluster.mctl("exec", client, "--", "sh", "-c", request_loop(5)).stdout
    assert "FAIL" not in answers(out) and len(answers(out)) == 5, out
