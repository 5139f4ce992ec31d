"""A workload's virtual IP through the CLI: shown, described, kept across a scheduler restart.

The scheduler's side of services on a one-node local cluster: the address
`get workloads -o wide` shows and `describe workload` lists with the
endpoints, the same after the scheduler is killed and started again, and
given back when the workload loses its ports. (tests/e2e/test_services.py
sends traffic through it.)
"""

from __future__ import annotations

import ipaddress
import json
import re

from conftest import Cluster  # noqa: I001 - the e2e fixtures module

API = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: api
spec:
  replicas: 2
  image: busybox
  command: ["httpd", "-f", "-p", "8080"]
  ports: [{{name: http, containerPort: 8080}}]
  env: {{GENERATION: "{generation}"}}
  resources: {{cpu: 100m, memory: 32Mi}}
"""


def vip_column(cluster: Cluster) -> str:
    wide = cluster.mctl("get", "workloads", "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    row = next(line.split() for line in wide[1:] if line.split()[0] == "api")
    return row[header.index("VIP")]


def stored_vip(cluster: Cluster) -> str:
    items = json.loads(cluster.mctl("get", "workloads", "-o", "json").stdout)["items"]
    return next(w for w in items if w["metadata"]["name"] == "api").get("status", {}).get(
        "virtualIP", "")


def test_the_virtual_ip_is_shown_described_and_kept(cluster: Cluster, tmp_path):
    app = tmp_path / "api.yaml"
    app.write_text(API.format(generation=1))
    cluster.mctl("apply", "-f", str(app), "--wait", "--timeout", "60")
    vip = str(cluster.wait_for("a virtual IP", lambda: stored_vip(cluster)))
    assert ipaddress.ip_address(vip) in ipaddress.ip_network("10.96.0.0/16")
    assert vip_column(cluster) == vip

    def described() -> str:
        text = cluster.mctl("describe", "workload", "api").stdout
        return text if text.count(", ready)") == 2 else ""
    text = str(cluster.wait_for("two ready endpoints", described))
    assert re.search(rf"^Virtual IP:\s+{re.escape(vip)}$", text, re.M), text
    assert re.search(r"^Ports:\s+http 8080/TCP$", text, re.M), text

    # A rolling update, then a scheduler that died and came back: the same address.
    app.write_text(API.format(generation=2))
    cluster.mctl("apply", "-f", str(app), "--wait", "--timeout", "60")
    cluster.kill("scheduler")
    cluster.restart("scheduler")
    cluster.wait_for("the scheduler back", lambda: cluster.mctl(
        "get", "workloads", check=False).returncode == 0)
    assert stored_vip(cluster) == vip and vip_column(cluster) == vip

    # Without ports it is no service: the address is given back.
    app.write_text(API.format(generation=2).replace(
        "  ports: [{name: http, containerPort: 8080}]\n", ""))
    cluster.mctl("apply", "-f", str(app))
    cluster.wait_for("the address given back", lambda: stored_vip(cluster) == "")
    assert vip_column(cluster) == "<none>"
    cluster.mctl("delete", "workload", "api")
