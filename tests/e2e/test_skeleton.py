"""The walking skeleton, end to end: apply, run, logs, limits, delete, nothing left."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import MCTL, Cluster  # noqa: I001 - the e2e fixtures module

WEB = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c", "echo hello from $(hostname); echo oops >&2; exec httpd -f -p 8080"]
  env: {{GREETING: {greeting}}}
  resources: {{cpu: 200m, memory: 48Mi, pids: 32}}
"""


def running(cluster: Cluster, workload: str, count: int) -> list[dict]:
    reps = [r for r in cluster.replicas(workload)
            if r["status"].get("phase") == "Running" and not r["metadata"].get("deletionRequested")]
    return reps if len(reps) == count else []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_apply_runs_real_containers_and_delete_removes_every_trace(cluster: Cluster, tmp_path):
    app = tmp_path / "web.yaml"
    app.write_text(WEB.format(name="web", replicas=2, greeting="hi"))
    out = cluster.mctl("apply", "-f", str(app), "--wait", "--timeout", "30").stdout
    assert "workload/web created" in out
    reps = running(cluster, "web", 2)
    assert len(reps) == 2

    inits, cgroups, bundles = [], [], []
    for r in reps:
        name, node = r["metadata"]["name"], r["node"]
        assert node == "node1"
        # Logs come back through the scheduler from the node, both streams.
        logs = cluster.wait_for("logs", lambda n=name: cluster.mctl("logs", n).stdout)
        assert f"hello from {name}" in logs
        assert "oops" in cluster.mctl("logs", name).stdout
        # The memory limit is in the container's cgroup, in the kernel.
        mem = cluster.cgroup("memory", node, name)
        assert int((mem / "memory.limit_in_bytes").read_text()) == 48 * 1024 * 1024
        assert int((cluster.cgroup("pids", node, name) / "pids.max").read_text()) == 32
        bundle = cluster.bundle(node, name)
        state = json.loads((bundle / "state.json").read_text())
        init = state["init_pid"]
        # The container's first process is in its own pid, uts and net namespaces.
        for ns in ("pid", "uts", "net", "mnt", "ipc"):
            assert os.readlink(f"/proc/{init}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
        assert str(init) in (mem / "cgroup.procs").read_text().split()
        inits += [init, state["monitor_pid"]]
        cgroups.append(mem)
        bundles.append(bundle)

    out = cluster.mctl("delete", "-f", str(app), "--timeout", "30").stdout
    assert "workload/web deleted" in out
    assert cluster.replicas("web") == []
    assert "No workloads found" in cluster.mctl("get", "workloads").stdout
    for pid in inits:
        cluster.wait_for(f"pid {pid} to exit", lambda p=pid: not pid_alive(p), timeout=5)
    for cg in cgroups:
        assert not cg.exists(), f"{cg} left behind"
    for bundle in bundles:
        assert not bundle.exists(), f"{bundle} left behind"
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(cluster.dir) in line]


def test_apply_is_idempotent_and_a_spec_change_rolls_replicas(cluster: Cluster, tmp_path):
    app = tmp_path / "roll.yaml"
    app.write_text(WEB.format(name="roll", replicas=2, greeting="one"))
    cluster.mctl("apply", "-f", str(app), "--wait", "--timeout", "30")
    before = {r["metadata"]["name"] for r in running(cluster, "roll", 2)}
    assert "workload/roll unchanged" in cluster.mctl("apply", "-f", str(app)).stdout
    assert {r["metadata"]["name"] for r in running(cluster, "roll", 2)} == before

    app.write_text(WEB.format(name="roll", replicas=2, greeting="two"))
    assert "workload/roll configured" in cluster.mctl("apply", "-f", str(app)).stdout
    after = cluster.wait_for("the rollout", lambda: (
        {r["metadata"]["name"] for r in running(cluster, "roll", 2)} - before
        if len(cluster.replicas("roll")) == 2 else set()), timeout=40)
    assert len(after) == 2 and not after & before
    cluster.mctl("delete", "workload", "roll", "--timeout", "30")


def test_invalid_file_is_rejected_whole_with_file_document_and_field(cluster: Cluster, tmp_path):
    app = tmp_path / "bad.yaml"
    app.write_text(WEB.format(name="good", replicas=1, greeting="x") + "---\n"
                   + WEB.format(name="bad", replicas=1, greeting="x").replace("48Mi", "48Mb"))
    proc = cluster.mctl("apply", "-f", str(app), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f'mctl: {app}: document 2: spec.resources.memory: '
                                   f'"48Mb" is not a quantity')
    assert "Traceback" not in proc.stderr
    assert "No workloads found" in cluster.mctl("get", "workloads").stdout


def test_scheduler_restart_keeps_state(cluster: Cluster, tmp_path):
    app = tmp_path / "keep.yaml"
    app.write_text(WEB.format(name="keep", replicas=1, greeting="x"))
    cluster.mctl("apply", "-f", str(app), "--wait", "--timeout", "30")
    before = cluster.replicas("keep")
    pid = cluster.kill("scheduler")
    cluster.wait_for("the scheduler to die", lambda: not pid_alive(pid)
                     or open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=5)
    proc = cluster.mctl("get", "replicas", check=False)
    assert proc.returncode == 1
    assert proc.stderr == f"mctl: cannot reach the mctl server at {cluster.state()['server']}\n"
    cluster.restart("scheduler")
    after = cluster.wait_for("the scheduler to answer", lambda: cluster.mctl(
        "get", "replicas", check=False).returncode == 0 and cluster.replicas("keep"))
    key = ("metadata", "node", "specHash")
    assert [{k: r.get(k) for k in key} for r in after] == [{k: r.get(k) for k in key}
                                                            for r in before]
    assert after[0]["status"]["phase"] == "Running"
    cluster.mctl("delete", "-f", str(app), "--timeout", "30")


def test_cli_without_server_says_so_in_one_line(tmp_path):
    env = {**os.environ, "MCTL_HOME": str(tmp_path)}
    # --insecure: with no config at all the CLI would first ask for TLS credentials
    # (test_tls.py checks that line and the same one with credentials).
    proc = subprocess.run(MCTL + ["--server", "127.0.0.1:1", "--insecure", "get", "nodes"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == "mctl: cannot reach the mctl server at 127.0.0.1:1\n"
