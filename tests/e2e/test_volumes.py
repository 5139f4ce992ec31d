"""Volumes, configs and secrets on a real 3-node cluster.

A named volume's data survives a container restart, a rolling update, an
agent killed with -9 and a workload deleted and applied again, and its
replica always comes back on the volume's node; a drain of that node leaves
the replica Pending with the reason, an uncordon brings it back with its
data. A Secret reaches a container as files and as env, a change of it
rolls the workload, and no value lies on the node's disk for other users.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess

import pytest
from conftest import Cluster  # noqa: I001 - the e2e fixtures module

VOLUME = f"kv-{secrets.token_hex(3)}"

COUNTER = """\
apiVersion: mctl/v1
kind: Workload
metadata: {{name: counter}}
spec:
  replicas: 1
  image: busybox
  command: ["/bin/sh", "-c", "echo run >> /data/runs; exec sleep 100000"]
  env:
    - {{name: GENERATION, value: "{generation}"}}
  volumes:
    - {{name: data, volume: {volume}}}
    - {{name: scratch, emptyDir: {{sizeLimit: 16Mi}}}}
  volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: scratch, mountPath: /scratch}}
"""

SECRET = """\
apiVersion: mctl/v1
kind: Secret
metadata: {{name: app-secret}}
data:
  password: {password}
---
apiVersion: mctl/v1
kind: Workload
metadata: {{name: reader}}
spec:
  replicas: 1
  image: busybox
  command: ["sleep", "100000"]
  env:
    - {{name: PW, valueFrom: {{secret: app-secret, key: password}}}}
  volumes:
    - {{name: creds, secret: app-secret}}
  volumeMounts:
    - {{name: creds, mountPath: /run/secrets/app}}
"""


@pytest.fixture(scope="module")
def three(cluster_factory) -> Cluster:
    return cluster_factory(3)


def apply(cluster: Cluster, tmp_path, text: str, name: str = "w.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    return str(path)


def running(cluster: Cluster, workload: str, not_uid: str = "") -> dict:
    """The workload's one Running replica (other than `not_uid`), once there is exactly one."""
    def one() -> dict | None:
        reps = cluster.replicas(workload)
        up = [r for r in reps if r.get("status", {}).get("phase") == "Running"
              and r["metadata"]["uid"] != not_uid]
        return up[0] if len(up) == 1 and len(reps) == 1 else None
    found = cluster.wait_for(f"one Running replica of {workload}", one, timeout=60)
    assert isinstance(found, dict)
    return found


def sh(cluster: Cluster, replica: dict, script: str) -> str:
    return cluster.mctl("exec", replica["metadata"]["name"], "--", "sh", "-c", script).stdout


def runs(cluster: Cluster, replica: dict) -> int:
    return int(sh(cluster, replica, "wc -l < /data/runs").strip())


def test_a_named_volume_keeps_its_data_and_its_node(three: Cluster, tmp_path):
    path = apply(three, tmp_path, COUNTER.format(volume=VOLUME, generation=1))
    first = running(three, "counter")
    node = first["node"]
    sh(three, first, "echo kept > /data/note; echo gone > /scratch/note")
    assert runs(three, first) == 1

    # A container restart: the same replica, its emptyDir kept too.
    state = json.loads((three.bundle(node, first["metadata"]["name"]) / "state.json")
                       .read_text())
    os.kill(state["init_pid"], signal.SIGKILL)
    three.wait_for("a restart", lambda: any(
        r.get("status", {}).get("restarts", 0) >= 1
        and r.get("status", {}).get("phase") == "Running" for r in three.replicas("counter")))
    again = running(three, "counter")
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert sh(three, again, "cat /data/note /scratch/note") == "kept\ngone\n"
    assert runs(three, again) == 2

    # A rolling update: a new replica, on the volume's node, a new emptyDir.
    apply(three, tmp_path, COUNTER.format(volume=VOLUME, generation=2))
    rolled = running(three, "counter", not_uid=first["metadata"]["uid"])
    assert rolled["node"] == node
    assert sh(three, rolled, "cat /data/note; ls /scratch") == "kept\n"
    assert runs(three, rolled) == 3

    # The agent killed with -9 and started again: the container and its data stay.
    three.kill(node)
    three.restart(node)
    three.wait_for(f"{node} Ready", lambda: any(
        n["name"] == node and n.get("ready")
        for n in json.loads(three.mctl("get", "nodes", "-o", "json").stdout)["items"]))
    after = running(three, "counter")
    assert after["metadata"]["uid"] == rolled["metadata"]["uid"]
    assert sh(three, after, "cat /data/note") == "kept\n"

    # Delete and apply again: the volume outlives the workload.
    three.mctl("delete", "-f", path, "--timeout", "30")
    volume_dir = three.dir / "nodes" / node / "volumes" / "default" / VOLUME
    assert (volume_dir / "note").read_text() == "kept\n"
    apply(three, tmp_path, COUNTER.format(volume=VOLUME, generation=3))
    back = running(three, "counter")
    assert back["node"] == node
    assert sh(three, back, "cat /data/note") == "kept\n"
    assert runs(three, back) == 4


def test_drain_leaves_the_replica_pending_and_uncordon_brings_back_its_data(three: Cluster,
                                                                            tmp_path):
    apply(three, tmp_path, COUNTER.format(volume=VOLUME, generation=3))
    before = running(three, "counter")
    node = before["node"]
    three.mctl("drain", node, "--timeout", "30", check=False)
    pending = three.wait_for("a Pending replica naming the volume", lambda: next((
        r for r in three.replicas("counter")
        if not r.get("node") and f"volume {VOLUME} is on {node}"
        in r.get("status", {}).get("message", "")), None), timeout=60)
    assert isinstance(pending, dict)
    assert pending["status"]["phase"] == "Pending"
    three.mctl("uncordon", node)
    back = running(three, "counter")
    assert back["node"] == node
    assert sh(three, back, "cat /data/note") == "kept\n"
    three.mctl("delete", "workload", "counter", "--timeout", "30")


def test_a_secret_as_files_and_env_rolls_on_change_and_stays_off_the_disk(three: Cluster,
                                                                          tmp_path):
    old, new = f"pw-{secrets.token_hex(8)}", f"pw-{secrets.token_hex(8)}"
    path = apply(three, tmp_path, SECRET.format(password=old), "s.yaml")
    first = running(three, "reader")
    out = sh(three, first, "cat /run/secrets/app/password; echo; echo $PW; "
                           "stat -c '%a %u' /run/secrets/app/password")
    assert out == f"{old}\n{old}\n400 0\n"
    # Other users of the node find the value in no file of the agent's state.
    state = three.dir / "nodes" / first["node"]
    found = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "grep", "-rls", old, str(state)], capture_output=True, text=True)
    assert found.stdout == ""
    assert old not in three.mctl("get", "secrets", "-o", "yaml").stdout

    apply(three, tmp_path, SECRET.format(password=new), "s.yaml")
    rolled = running(three, "reader", not_uid=first["metadata"]["uid"])
    assert sh(three, rolled, "cat /run/secrets/app/password; echo; echo $PW") == f"{new}\n{new}\n"
    three.mctl("delete", "-f", path, "--timeout", "30")
