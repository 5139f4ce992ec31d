"""resources.disk on a real node: a container that writes past it is stopped, with the reason.

One node runs three workloads side by side: two that write 16 MiB into
their rootfs under `disk: 8Mi` (one restarted under restartPolicy Always,
one left Failed under Never) and a quiet one under the node's default
limit, which must not notice anything.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import Cluster

# "dirty" would mean the restarted container found the last run's file.
HOG = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  image: busybox
  command: ["sh", "-c", "if [ -e /big ]; then echo dirty; fi; echo writing;
             dd if=/dev/zero of=/big bs=1048576 count=16; exec sleep 1000"]
  restartPolicy: {policy}
  resources: {{disk: 8Mi}}
---
"""

CALM = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: calm
spec:
  image: busybox
  command: ["sh", "-c", "echo 12345 > /data; exec sleep 1000"]
"""

WHY = re.compile(r"writable layer and logs use 1[6-7](\.\d)?Mi, limit 8Mi")


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    c = cluster_factory(1)
    # The fixture's temporary dir is 0700: a user namespace's mapped root must
    # pass through it to reach its rootfs, as it passes through /var/lib.
    os.chmod(c.dir.parent, 0o755)
    return c


def one(cluster: Cluster, workload: str) -> dict:
    reps = cluster.replicas(workload)
    return reps[0] if len(reps) == 1 else {}


def both_runs(cluster: Cluster, name: str) -> str | None:
    """The first run's log (`--previous`) and the second's, once both have written.

    None while the replica is between runs (no container to read a log of
    for a moment) or the second run has not written yet.
    """
    previous = cluster.mctl("logs", name, "--previous", check=False)
    current = cluster.mctl("logs", name, check=False)
    if previous.returncode or current.returncode:
        return None
    if "writing" not in previous.stdout or "writing" not in current.stdout:
        return None
    return previous.stdout + current.stdout


def test_writing_past_the_disk_limit_stops_the_container_and_not_its_neighbour(
        cluster: Cluster, tmp_path):
    path = tmp_path / "disk.yaml"
    path.write_text(HOG.format(name="hog", policy="Always")
                    + HOG.format(name="once", policy="Never") + CALM)
    cluster.mctl("apply", "-f", str(path))
    calm = cluster.wait_for("calm running", lambda: (
        r if (r := one(cluster, "calm")).get("status", {}).get("phase") == "Running"
        else None), timeout=40)

    # Never: the replica ends Failed with the reason and what it used.
    st = cluster.wait_for("once Failed", lambda: (
        s if (s := one(cluster, "once").get("status", {})).get("phase") == "Failed"
        else None), timeout=40)
    assert st["reason"] == "DiskLimit" and WHY.fullmatch(st["message"]), st

    # Always: restarted, the reason kept as the last exit, into an empty rootfs.
    r = cluster.wait_for("hog restarted", lambda: (
        x if (x := one(cluster, "hog")).get("status", {}).get("restarts", 0) >= 1
        else None), timeout=60)
    last = r["status"]["lastExit"]
    assert last.startswith("DiskLimit: ") and WHY.fullmatch(last.removeprefix("DiskLimit: "))
    name = r["metadata"]["name"]
    described = cluster.mctl("describe", "replica", name).stdout
    assert "last exit: DiskLimit: writable layer and logs use" in described, described
    # Both runs' output (`logs --previous` and `logs`), and the second found no /big.
    logs = cluster.wait_for("the restart's output", lambda: both_runs(cluster, name), timeout=30)
    assert "dirty" not in logs

    # The neighbour on the same node ran on, untouched.
    now = one(cluster, "calm")
    assert now["metadata"]["uid"] == calm["metadata"]["uid"]
    assert now["status"]["phase"] == "Running" and now["status"].get("restarts", 0) == 0
    assert "lastExit" not in now["status"]
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")


def test_a_user_namespace_container_restarts_into_an_empty_rootfs_too(cluster: Cluster, tmp_path):
    # Its layers are idmapped mounts under the overlay: both are taken down and made again.
    path = tmp_path / "userns.yaml"
    path.write_text(HOG.format(name="mapped", policy="Always").removesuffix("---\n")
                    + "  securityContext: {userNamespace: true}\n")
    cluster.mctl("apply", "-f", str(path))
    r = cluster.wait_for("mapped restarted", lambda: (
        x if (x := one(cluster, "mapped")).get("status", {}).get("restarts", 0) >= 1
        else None), timeout=60)
    assert r["status"]["lastExit"].startswith("DiskLimit: writable layer and logs use")
    name = r["metadata"]["name"]
    logs = cluster.wait_for("the restart's output", lambda: both_runs(cluster, name), timeout=30)
    assert "dirty" not in logs
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")
