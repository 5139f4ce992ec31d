"""A 3-member etcd under a local cluster: a member lost costs nothing; backup and restore.

`cluster up --etcd-members 3` runs three etcd processes on their own
loopback ports and data dirs; both schedulers are given every member and
fail over. `cluster backup FILE` is an etcd snapshot, `cluster restore FILE`
puts it back (the documented restore of docs/multi-vm.md, on one machine).
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from conftest import Cluster  # noqa: I001 - the e2e fixtures module

from mctl.common.procfs import start_time

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None,
                                reason="etcdctl is not installed (Debian: etcd-client)")

WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: 2
  image: busybox
  command: ["/bin/sh", "-c", "exec sleep 100000"]
  resources: {{memory: 16Mi}}
"""


@pytest.fixture(scope="module")
def quorum(cluster_factory) -> Cluster:
    return cluster_factory(2, "--etcd-members", "3", "--schedulers", "2")


def apply(cluster: Cluster, tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(WORKLOAD.format(name=name))
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    return str(path)


def running(cluster: Cluster, workload: str) -> dict[str, str]:
    """name -> uid of the workload's Running replicas."""
    return {r["metadata"]["name"]: r["metadata"]["uid"] for r in cluster.replicas(workload)
            if r.get("status", {}).get("phase") == "Running"}


def workloads(cluster: Cluster) -> set[str]:
    out = cluster.mctl("get", "workloads").stdout.splitlines()[1:]
    return {line.split()[0] for line in out if line.strip()}


def test_three_members_and_every_scheduler_takes_them_all(quorum: Cluster):
    state = quorum.state()
    members = [p for p in state["processes"] if p["name"] in ("etcd", "etcd2", "etcd3")]
    assert len(members) == 3
    endpoints = state["etcd"].split(",")
    assert len(set(endpoints)) == 3 and all(e.startswith("127.0.0.1:") for e in endpoints)
    for p in members:
        data = p["argv"][p["argv"].index("--data-dir") + 1]
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        assert "--client-cert-auth" in p["argv"] and "--peer-client-cert-auth" in p["argv"]
    for p in state["processes"]:
        if p["name"].startswith("scheduler"):
            assert p["argv"][p["argv"].index("--etcd") + 1] == state["etcd"]


def test_one_member_killed_disrupts_nothing_and_up_restarts_it(quorum: Cluster, tmp_path):
    path = apply(quorum, tmp_path, "before")
    kept = running(quorum, "before")
    assert len(kept) == 2
    procs = {p["name"]: p for p in quorum.state()["processes"]}
    # The member the schedulers most likely talk to is any of them: kill the first.
    pid = quorum.kill("etcd")
    quorum.wait_for("etcd to die", lambda: start_time(pid) != procs["etcd"]["start_time"])
    # Reads and writes go on with two of three members.
    other = apply(quorum, tmp_path, "during")
    assert len(running(quorum, "during")) == 2
    assert running(quorum, "before") == kept

    out = quorum.mctl("cluster", "up", "--nodes", "2")
    assert "restarted etcd;" in out.stdout, out.stdout
    after = {p["name"]: p for p in quorum.state()["processes"]}
    assert [n for n in after if after[n]["pid"] != procs[n]["pid"]] == ["etcd"]
    assert running(quorum, "before") == kept
    quorum.mctl("delete", "-f", other, "--timeout", "60")
    quorum.mctl("delete", "-f", path, "--timeout", "60")


def test_backup_then_restore_brings_back_the_state_of_the_backup(quorum: Cluster, tmp_path):
    path = apply(quorum, tmp_path, "kept")
    kept = running(quorum, "kept")
    snapshot = tmp_path / "state.db"
    out = quorum.mctl("cluster", "backup", str(snapshot))
    assert "backed up the cluster state" in out.stdout
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600 and snapshot.stat().st_size > 0

    # After the backup: one workload deleted, another added.
    quorum.mctl("delete", "-f", path, "--timeout", "60")
    apply(quorum, tmp_path, "later")
    assert "kept" not in workloads(quorum)

    out = quorum.mctl("cluster", "restore", str(snapshot), timeout=180)
    assert "restored the cluster state" in out.stdout
    assert workloads(quorum) == {"kept"}
    # The restored replicas run again under their recorded names and uids;
    # what came after the backup is gone, containers too.
    quorum.wait_for("the restored replicas Running",
                    lambda: running(quorum, "kept") == kept, timeout=60)
    quorum.wait_for("the later workload's containers gone", lambda: not any(
        name.startswith("default_later-")
        for node in ("node1", "node2")
        for name in os.listdir(quorum.dir / "nodes" / node / "containers")), timeout=60)
    assert not any(d.name.endswith(".before-restore") or d.name.endswith(".restore")
                   for d in quorum.dir.iterdir())


def test_restore_of_a_file_that_is_no_snapshot_changes_nothing(quorum: Cluster, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a snapshot" * 100)
    before = {p["name"] for p in quorum.state()["processes"]}
    out = quorum.mctl("cluster", "restore", str(bad), check=False, timeout=180)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("mctl: restoring etcd's data"), \
        out.stderr
    # The cluster came back on its old data.
    assert "kept" in workloads(quorum)
    assert {p["name"] for p in quorum.state()["processes"]} == before
    for p in quorum.state()["processes"]:
        assert start_time(p["pid"]) == p["start_time"], p["name"]
