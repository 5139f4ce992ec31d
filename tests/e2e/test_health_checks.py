"""Health checks on a real node: an unhealthy container is restarted, with the reason."""

from __future__ import annotations

from conftest import Cluster

SICKENS = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  image: busybox
  command: ["sh", "-c", "touch /tmp/ok; sleep 2; rm /tmp/ok; exec sleep 1000"]
  restartPolicy: {policy}
  healthCheck:
    exec: ["cat", "/tmp/ok"]
    periodSeconds: 1
    failureThreshold: 2
"""

SERVES = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: serves
spec:
  image: busybox
  command: ["httpd", "-f", "-p", "8080"]
  healthCheck: {tcpPort: 8080, periodSeconds: 1, failureThreshold: 2}
"""

CLOSED = SERVES.replace("name: serves", "name: closed").replace("tcpPort: 8080", "tcpPort: 9")


def replica(cluster: Cluster, workload: str) -> dict:
    reps = cluster.replicas(workload)
    return reps[0] if len(reps) == 1 else {}


def test_a_failing_exec_check_restarts_the_container_and_says_why(cluster: Cluster, tmp_path):
    path = tmp_path / "sickens.yaml"
    path.write_text(SICKENS.format(name="sickens", policy="Always"))
    cluster.mctl("apply", "-f", str(path))
    r = cluster.wait_for("a restart", lambda: (
        x if (x := replica(cluster, "sickens")).get("status", {}).get("restarts", 0) >= 1
        else None), timeout=40)
    assert r["status"]["lastExit"].startswith("Unhealthy: health check failed 2 times: cat")
    described = cluster.mctl("describe", "replica", r["metadata"]["name"]).stdout
    assert "last exit: Unhealthy" in described and "Restarted" in described
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")


def test_with_restart_policy_never_an_unhealthy_replica_fails(cluster: Cluster, tmp_path):
    path = tmp_path / "once.yaml"
    path.write_text(SICKENS.format(name="once", policy="Never"))
    cluster.mctl("apply", "-f", str(path))
    st = cluster.wait_for("Failed", lambda: (
        s if (s := replica(cluster, "once").get("status", {})).get("phase") == "Failed"
        else None), timeout=40)
    assert st["reason"] == "Unhealthy" and "health check failed 2 times" in st["message"]
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")


def test_tcp_checks_keep_a_listening_server_and_restart_a_deaf_one(cluster: Cluster, tmp_path):
    good, bad = tmp_path / "serves.yaml", tmp_path / "closed.yaml"
    good.write_text(SERVES)
    bad.write_text(CLOSED)
    cluster.mctl("apply", "-f", str(good), "--wait", "--timeout", "30")
    cluster.mctl("apply", "-f", str(bad))
    r = cluster.wait_for("the deaf one restarted", lambda: (
        x if (x := replica(cluster, "closed")).get("status", {}).get("restarts", 0) >= 1
        else None), timeout=40)
    assert "tcp " in r["status"]["lastExit"] and ":9:" in r["status"]["lastExit"]
    ok = replica(cluster, "serves")["status"]
    assert ok["phase"] == "Running" and ok.get("restarts", 0) == 0
    cluster.mctl("delete", "workload", "serves", "closed", "--timeout", "30")
