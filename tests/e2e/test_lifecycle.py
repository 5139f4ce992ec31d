"""Container lifecycle on a real node: restart policies, OOM kills, agent restarts."""

from __future__ import annotations

import json
import os
import time

from conftest import Cluster  # noqa: I001 - the e2e fixtures module

JOB = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  image: busybox
  command: ["/bin/sh", "-c", {script}]
  restartPolicy: {policy}
  resources: {{memory: {memory}}}
"""


def apply(cluster: Cluster, tmp_path, name: str, script: str, policy: str,
          memory: str = "32Mi") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(JOB.format(name=name, script=json.dumps(script), policy=policy,
                               memory=memory))
    cluster.mctl("apply", "-f", str(path))
    return str(path)


def only_replica(cluster: Cluster, workload: str) -> dict:
    reps = cluster.replicas(workload)
    return reps[0] if len(reps) == 1 else {}


def status_of(cluster: Cluster, workload: str) -> dict:
    return only_replica(cluster, workload).get("status", {})


def test_crashing_replica_is_restarted_with_back_off(cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "crash", "echo boom; exit 1", "Always")
    st = cluster.wait_for("two restarts", lambda: (
        s if (s := status_of(cluster, "crash")).get("restarts", 0) >= 2 else None), timeout=30)
    assert st.get("reason") == "CrashLoopBackOff" or st["phase"] == "Running"
    name = only_replica(cluster, "crash")["metadata"]["name"]
    # Each run has its own log: the current one, and the one before it kept
    # once for --previous (agent/previouslog.py), one line each.
    assert cluster.wait_for("the current run's line", lambda: (
        cluster.mctl("logs", name).stdout.count("boom") == 1))
    assert cluster.mctl("logs", "--previous", name).stdout.count("boom") == 1
    cluster.mctl("delete", "-f", path, "--timeout", "30")


def test_on_failure_job_that_succeeds_stays_succeeded(cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "job", "echo done", "OnFailure")
    st = cluster.wait_for("success", lambda: (
        s if (s := status_of(cluster, "job")).get("phase") == "Succeeded" else None), timeout=20)
    assert st.get("exitCode", 0) == 0 and st.get("restarts", 0) == 0
    assert st["reason"] == "Completed"
    time.sleep(1.5)
    assert status_of(cluster, "job").get("restarts", 0) == 0
    cluster.mctl("delete", "-f", path, "--timeout", "30")


def test_memory_hog_is_oom_killed_and_reported(cluster: Cluster, tmp_path):
    # Doubling a shell variable allocates without any tool from outside busybox.
    path = apply(cluster, tmp_path, "hog", "x=a; while true; do x=$x$x; done", "Never",
                 memory="16Mi")
    st = cluster.wait_for("the OOM kill", lambda: (
        s if (s := status_of(cluster, "hog")).get("phase") == "Failed" else None), timeout=30)
    assert st["reason"] == "OOMKilled"
    assert st["exitCode"] == 137
    cluster.mctl("delete", "-f", path, "--timeout", "30")


def test_agent_kill_leaves_containers_running_and_the_new_agent_adopts_them(
        cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "survivor", "exec sleep 1000", "Always")
    rep = cluster.wait_for("Running", lambda: (
        r if (r := only_replica(cluster, "survivor")).get("status", {}).get("phase")
        == "Running" else None), timeout=20)
    name = rep["metadata"]["name"]
    bundle = cluster.bundle("node1", name)
    init = json.loads((bundle / "state.json").read_text())["init_pid"]

    cluster.kill("node1")
    time.sleep(1.0)
    os.kill(init, 0)  # the container outlived its agent
    cluster.restart("node1")

    # Adopted, not restarted: same process, no restart counted, still Running.
    time.sleep(3)
    os.kill(init, 0)
    assert json.loads((bundle / "state.json").read_text())["init_pid"] == init
    st = status_of(cluster, "survivor")
    assert st["phase"] == "Running" and st.get("restarts", 0) == 0
    cluster.mctl("delete", "-f", path, "--timeout", "30")
    cluster.wait_for("the container to go", lambda: not os.path.exists(f"/proc/{init}"), 10)


def test_replace_failed_makes_a_new_replica_for_a_failed_one(cluster: Cluster, tmp_path):
    path = tmp_path / "retry.yaml"
    path.write_text(JOB.format(name="retry", script=json.dumps("exit 2"), policy="Never",
                               memory="32Mi") + "  replaceFailed: true\n")
    cluster.mctl("apply", "-f", str(path))
    first = cluster.wait_for("Failed", lambda: (
        r if (r := only_replica(cluster, "retry")).get("status", {}).get("phase") == "Failed"
        else None), timeout=30)
    name = first["metadata"]["name"]
    second = cluster.wait_for("a replacement", lambda: (
        r if (r := only_replica(cluster, "retry")) and r["metadata"]["name"] != name
        else None), timeout=30)
    assert second["metadata"]["name"].startswith("retry-")
    assert "replacing 1 failed" in cluster.mctl("describe", "workload", "retry").stdout
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")
