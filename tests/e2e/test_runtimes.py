"""The same cluster with an OCI runtime command in place of the native runtime.

`mctl cluster up --runtime runc|crun|mctl-runtime` makes every agent drive
containers through that command (create/start/kill/delete) while its
monitors keep the logs and exit statuses. Each test brings up its own
one-node cluster, runs a server and a failing job, checks what the runtime
itself reports, stops the agent's containers and checks nothing is left (the
cluster fixture asserts no process, mount or cgroup survives `cluster down`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest
from conftest import Cluster  # noqa: I001 - the e2e fixtures module

from mctl.agent.runtime.oci import client as ociclient

APP = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: web
spec:
  image: busybox
  command: ["/bin/sh", "-c", "echo hello from $(hostname); echo oops >&2; exec httpd -f -p 8080"]
  resources: {cpu: 200m, memory: 48Mi, pids: 32}
---
apiVersion: mctl/v1
kind: Workload
metadata:
  name: job
spec:
  image: busybox
  command: ["/bin/sh", "-c", "echo failing; exit 3"]
  restartPolicy: Never
"""


def phase_is(cluster: Cluster, workload: str, phase: str) -> dict | None:
    reps = cluster.replicas(workload)
    return reps[0] if len(reps) == 1 and reps[0]["status"].get("phase") == phase else None


@pytest.mark.parametrize("runtime", ["runc", "crun", "mctl-runtime"])
def test_a_cluster_runs_replicas_through_an_oci_runtime(
        cluster_factory: Callable[..., Cluster], tmp_path, runtime: str):
    try:
        binary = ociclient.resolve(runtime)
    except ociclient.RuntimeNotFound as e:
        pytest.skip(str(e))
    cluster = cluster_factory(1, "--runtime", runtime)
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    cluster.mctl("apply", "-f", str(app))

    web = cluster.wait_for("web Running", lambda: phase_is(cluster, "web", "Running"))
    name = web["metadata"]["name"]
    logs = cluster.wait_for("logs", lambda: (
        out if "oops" in (out := cluster.mctl("logs", name).stdout) else ""))
    assert f"hello from {name}" in logs
    # The runtime itself knows the container, with the init the monitor recorded.
    root = cluster.dir / "nodes" / "node1" / "oci-runtime"
    base = ociclient.base_argv(binary, str(root))
    cid = f"default_{name}"
    state = json.loads(subprocess.run([*base, "state", cid], capture_output=True, text=True,
                                      check=True).stdout)
    recorded = json.loads((cluster.bundle("node1", name) / "state.json").read_text())
    assert state["status"] == "running"
    assert state["pid"] == recorded["init_pid"]
    mem = cluster.cgroup("memory", "node1", name)
    assert int((mem / "memory.limit_in_bytes").read_text()) == 48 * 1024 * 1024
    assert str(recorded["init_pid"]) in (mem / "cgroup.procs").read_text().split()
    for ns in ("pid", "mnt", "uts", "ipc"):
        assert os.readlink(f"/proc/{recorded['init_pid']}/ns/{ns}") != \
            os.readlink(f"/proc/self/ns/{ns}")

    # An agent restart adopts the container: the monitor, not the agent, owns it.
    cluster.kill("node1")
    cluster.restart("node1")
    agent_log = cluster.dir / "node1.log"
    cluster.wait_for("the new agent to adopt the container", lambda: (
        f"adopted container={cid} running=True" in agent_log.read_text()))
    assert phase_is(cluster, "web", "Running")["metadata"]["name"] == name
    assert json.loads(subprocess.run([*base, "state", cid], capture_output=True, text=True,
                                     check=True).stdout)["pid"] == recorded["init_pid"]

    # The monitor sees the real exit status through the runtime, then deletes it there.
    job = cluster.wait_for("job Failed", lambda: phase_is(cluster, "job", "Failed"))
    assert job["status"].get("exitCode") == 3
    assert "failing" in cluster.mctl("logs", job["metadata"]["name"]).stdout
    job_state = subprocess.run([*base, "state", f"default_{job['metadata']['name']}"],
                               capture_output=True, text=True)
    assert job_state.returncode != 0, job_state.stdout

    cluster.mctl("delete", "-f", str(app), "--timeout", "30")
    assert cluster.replicas() == []
    # What stays under --root is mctl-runtime's cache of built seccomp
    # programs (bounded, 0600 files), never a container's state.
    cluster.wait_for("the runtime's state to be empty",
                     lambda: not [p for p in root.iterdir() if p.name != "seccomp@cache"])
    for p in (root / "seccomp@cache").glob("*"):
        assert p.suffix == ".bpf" and p.stat().st_mode & 0o777 == 0o600, p
    assert not mem.exists()
