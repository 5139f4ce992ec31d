"""kubectl habits of `mctl get` against a real 2-node cluster.

Flags after the verb (`get replicas -n shop`), `-l` selectors filtered by
the scheduler, `-o name|jsonpath|custom-columns`, `--sort-by`,
`--show-labels`, and the cluster's context in the config.
"""

from __future__ import annotations

import pytest
from conftest import Cluster  # the e2e fixtures module

WORKLOADS = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: front}
spec:
  replicas: 2
  image: busybox
  command: ["sleep", "3600"]
  resources: {cpu: 50m, memory: 16Mi}
---
apiVersion: mctl/v1
kind: Workload
metadata:
  name: db
  namespace: shop
  labels: {app: db}
spec:
  replicas: 1
  image: busybox
  command: ["sleep", "3600"]
  resources: {cpu: 50m, memory: 16Mi}
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory, tmp_path_factory) -> Cluster:
    c = cluster_factory(2)
    path = tmp_path_factory.mktemp("habits") / "shop.yaml"
    path.write_text(WORKLOADS)
    c.mctl("apply", "-f", str(path), "--wait", "--timeout", "120", timeout=180)
    return c


def lines(cluster: Cluster, *args: str) -> list[str]:
    return cluster.mctl(*args).stdout.splitlines()


def test_namespace_after_the_verb_is_the_same_as_before(cluster):
    before = cluster.mctl("-n", "shop", "get", "workloads", "-o", "name").stdout
    after = cluster.mctl("get", "workloads", "-o", "name", "-n", "shop").stdout
    assert before == after and sorted(after.split()) == ["workload/db", "workload/web"]


def test_selectors_are_applied_by_the_server(cluster):
    web = lines(cluster, "get", "replicas", "-l", "app=web", "-n", "shop", "-o", "name")
    assert len(web) == 2 and all(n.startswith("replica/web-") for n in web)
    others = lines(cluster, "get", "replicas", "-n", "shop", "-l", "app!=web,!tier", "-o", "name")
    assert len(others) == 1 and others[0].startswith("replica/db-")
    assert lines(cluster, "get", "workloads", "-n", "shop", "-l", "app in (web,db),tier",
                 "-o", "name") == ["workload/web"]
    none = cluster.mctl("get", "replicas", "-n", "shop", "-l", "app=cache").stdout
    assert none.strip() == "No replicas found in namespace shop."
    bad = cluster.mctl("get", "replicas", "-l", "app=we b", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("mctl: -l/--selector: label value")


def test_jsonpath_and_sort_by(cluster):
    out = cluster.mctl("get", "workloads", "-n", "shop", "--sort-by", ".metadata.name",
                       "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert out == "db web"
    out = cluster.mctl("get", "replicas", "-n", "shop", "-o",
                       'jsonpath={range .items[*]}{.workload}/{.status.phase}{"\\n"}{end}',
                       "--sort-by", "{.workload}").stdout
    assert out.splitlines() == ["db/Running", "web/Running", "web/Running"]
    name = lines(cluster, "get", "workloads", "-n", "shop", "-l", "app=db", "-o", "name")[0]
    one = cluster.mctl("get", "workload", name.split("/")[1], "-n", "shop",
                       "-o", "jsonpath={.spec.replicas}").stdout
    assert one == "1"


def test_custom_columns_sorted_by_node(cluster):
    rows = lines(cluster, "get", "replicas", "-n", "shop", "--sort-by=.node",
                 "-o", "custom-columns=NAME:.metadata.name,NODE:.node,APP:.metadata.labels.app")
    assert rows[0].split() == ["NAME", "NODE", "APP"]
    body = [r.split() for r in rows[1:]]
    assert len(body) == 3
    assert [r[1] for r in body] == sorted(r[1] for r in body)
    assert sorted(r[2] for r in body) == ["db", "web", "web"]


def test_show_labels(cluster):
    rows = lines(cluster, "get", "workloads", "-n", "shop", "--show-labels",
                 "--sort-by", ".metadata.name")
    assert rows[0].split()[-1] == "LABELS"
    assert rows[1].split()[-1] == "app=db" and rows[2].split()[-1] == "app=web,tier=front"


def test_the_cluster_is_a_context(cluster):
    name = cluster.mctl("config", "current-context").stdout.strip()
    assert name == "cluster"
    assert len(lines(cluster, "get", "nodes", "--context", name, "-o", "name")) == 2
    wrong = cluster.mctl("get", "nodes", "--context", "elsewhere", check=False)
    assert wrong.returncode == 1 and "context elsewhere not found" in wrong.stderr
