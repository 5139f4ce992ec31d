"""scale, rollout status/history/undo/restart, diff and apply --dry-run on a real cluster.

One node, busybox replicas that sleep. What a user relies on:
- `scale` changes the count and nothing else: the replicas already running
  stay, and no revision is made;
- `rollout undo` brings back the previous args (a new revision), and every
  replica is replaced, `rollout status` waiting until it is done;
- the history is bounded to the last 10 revisions;
- `rollout restart` replaces every replica while never more than
  maxUnavailable of them are down, with the spec unchanged;
- `diff` and `apply --dry-run` store nothing: every key an apply could write
  keeps its etcd mod revision (read with etcdctl); a Secret's values never
  appear in the output.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Cluster  # the e2e fixtures module

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None,
                                reason="etcdctl is not installed (Debian: etcd-client)")


def workload(name: str, args: str, replicas: int = 3, unavailable: int = 1,
             surge: int = 0) -> str:
    return f"""\
apiVersion: mctl/v1
kind: Workload
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c", "exec sleep 3600", "{args}"]
  update: {{maxUnavailable: {unavailable}, maxSurge: {surge}}}
  resources: {{cpu: 10m, memory: 8Mi}}
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(1)


def apply(cluster: Cluster, tmp: Path, text: str, *flags: str) -> str:
    path = tmp / "w.yaml"
    path.write_text(text)
    return cluster.mctl("apply", "-f", str(path), *flags).stdout


def live(cluster: Cluster, name: str) -> list[dict]:
    return [r for r in cluster.replicas(name)
            if not r["metadata"].get("deletionRequested")]


def spec_of(cluster: Cluster, name: str) -> dict:
    items = json.loads(cluster.mctl("get", "workloads", name, "-o", "json").stdout)["items"]
    return items[0]["spec"]


def rolled_out(cluster: Cluster, name: str) -> None:
    out = cluster.mctl("rollout", "status", "workload", name, "--timeout", "90s",
                       timeout=120).stdout
    assert out.splitlines()[-1] == f'workload "{name}" successfully rolled out', out


def history(cluster: Cluster, name: str) -> list[list[str]]:
    out = cluster.mctl("rollout", "history", "workload", name).stdout
    return [line.split() for line in out.splitlines()[2:]]


def test_scale_up_and_down_leaves_running_replicas_alone(cluster: Cluster, tmp_path: Path):
    apply(cluster, tmp_path, workload("sc", "v1", replicas=2))
    rolled_out(cluster, "sc")
    first = {r["metadata"]["name"] for r in live(cluster, "sc")}
    assert cluster.mctl("scale", "workload", "sc", "--replicas", "4").stdout == \
        "workload/sc scaled\n"
    rolled_out(cluster, "sc")
    after = {r["metadata"]["name"] for r in live(cluster, "sc")}
    assert len(after) == 4 and first <= after
    cluster.mctl("scale", "workload/sc", "--replicas", "1")
    cluster.wait_for("2 -> 1 replica", lambda: len(cluster.replicas("sc")) == 1, 60)
    assert spec_of(cluster, "sc")["replicas"] == 1
    assert len(history(cluster, "sc")) == 1        # scaling makes no revision
    # The server's bound, in one line naming the field.
    bad = cluster.mctl("scale", "workload", "sc", "--replicas", "100000", check=False)
    assert bad.returncode == 1 and "spec.replicas" in bad.stderr, bad.stderr
    cluster.mctl("delete", "workload", "sc")


def test_undo_returns_the_previous_args_and_rolls_every_replica(cluster: Cluster,
                                                                 tmp_path: Path):
    apply(cluster, tmp_path, workload("un", "v1"))
    rolled_out(cluster, "un")
    apply(cluster, tmp_path, workload("un", "v2"))
    rolled_out(cluster, "un")
    v2 = {r["metadata"]["name"] for r in live(cluster, "un")}
    out = cluster.mctl("rollout", "undo", "workload", "un").stdout
    assert out == "workload/un rolled back to revision 1 (now revision 3)\n"
    assert spec_of(cluster, "un")["command"][-1] == "v1"
    rolled_out(cluster, "un")
    now = live(cluster, "un")
    assert len(now) == 3 and not v2 & {r["metadata"]["name"] for r in now}
    rows = history(cluster, "un")
    assert [r[0] for r in rows] == ["2", "3"]
    assert "undo" in " ".join(rows[1]) and rows[1][-1] == "*"
    shown = cluster.mctl("rollout", "history", "workload", "un", "--revision", "2").stdout
    assert "v2" in shown
    cluster.mctl("delete", "workload", "un")


def test_history_keeps_the_last_ten(cluster: Cluster, tmp_path: Path):
    for i in range(12):         # no replicas: only the history grows
        apply(cluster, tmp_path, workload("hist", f"v{i}", replicas=0))
    assert [r[0] for r in history(cluster, "hist")] == [str(n) for n in range(3, 13)]
    cluster.mctl("delete", "workload", "hist")


def test_restart_replaces_every_replica_under_max_unavailable(cluster: Cluster,
                                                               tmp_path: Path):
    apply(cluster, tmp_path, workload("rs", "v1", replicas=3, unavailable=1, surge=0))
    rolled_out(cluster, "rs")
    before = {r["metadata"]["name"] for r in live(cluster, "rs")}
    spec = spec_of(cluster, "rs")
    assert cluster.mctl("rollout", "restart", "workload", "rs").stdout == \
        "workload/rs restarted\n"
    fewest = 3
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        reps = live(cluster, "rs")
        ready = [r for r in reps if r["status"].get("ready")]
        fewest = min(fewest, len(ready))
        names = {r["metadata"]["name"] for r in reps}
        if len(ready) == 3 and not names & before:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the restart did not replace every replica in 90s")
    assert fewest >= 2, f"{3 - fewest} replicas down at once; maxUnavailable is 1"
    assert spec_of(cluster, "rs") == spec      # no change to what runs
    assert len(history(cluster, "rs")) == 1
    cluster.mctl("delete", "workload", "rs")


def _etcd_keys(cluster: Cluster) -> dict[str, int]:
    """key -> mod revision of everything an apply could write (etcdctl over mutual TLS)."""
    sched = next(p for p in cluster.state()["processes"] if p["name"] == "scheduler")
    argv = sched["argv"]

    def flag(name: str) -> str:
        return str(argv[argv.index(name) + 1])
    done = subprocess.run(
        ["etcdctl", "--endpoints", flag("--etcd"), "--cacert", flag("--etcd-ca"),
         "--cert", flag("--etcd-cert"), "--key", flag("--etcd-key"),
         "get", "--prefix", "/mctl/", "--keys-only", "-w", "json"],
        capture_output=True, text=True, check=True, timeout=30)
    out = {}
    for kv in json.loads(done.stdout).get("kvs", []):
        key = base64.b64decode(kv["key"]).decode()
        if key.split("/")[2] in ("workloads", "revisions", "configs", "secrets", "vips"):
            out[key] = int(kv["mod_revision"])
    return out


SECRET = """\
---
apiVersion: mctl/v1
kind: Secret
metadata: {{name: dbpass}}
data: {{password: {value}}}
"""


def test_diff_and_dry_run_store_nothing(cluster: Cluster, tmp_path: Path):
    v1 = workload("df", "v1", replicas=1) + SECRET.format(value="hunter2-old")
    apply(cluster, tmp_path, v1)
    rolled_out(cluster, "df")
    same = tmp_path / "same.yaml"
    same.write_text(v1)
    quiet = cluster.mctl("diff", "-f", str(same), check=False)
    assert (quiet.returncode, quiet.stdout) == (0, "")
    changed = tmp_path / "changed.yaml"
    changed.write_text(workload("df", "v2", replicas=1) + SECRET.format(value="hunter2-new"))
    keys = _etcd_keys(cluster)
    diff = cluster.mctl("diff", "-f", str(changed), check=False)
    assert diff.returncode == 1, diff.stderr
    assert "--- live/workload.default.df" in diff.stdout
    assert '-  - v1\n' in diff.stdout and '+  - v2\n' in diff.stdout
    assert "*** (before)" in diff.stdout and "*** (after)" in diff.stdout
    assert "hunter2" not in diff.stdout + diff.stderr
    dry = cluster.mctl("apply", "-f", str(changed), "--dry-run").stdout
    assert "workload/df configured, rolls its replicas (server dry run)" in dry, dry
    assert "secret/dbpass configured" in dry, dry
    dry = cluster.mctl("apply", "-f", str(tmp_path / "w.yaml"), "--dry-run=server").stdout
    assert "workload/df unchanged (server dry run)\n" in dry, dry
    assert _etcd_keys(cluster) == keys
    assert spec_of(cluster, "df")["command"][-1] == "v1"
    bad = tmp_path / "bad.yaml"
    bad.write_text(workload("df", "v1").replace("replicas: 3", "replicas: 100000"))
    err = cluster.mctl("diff", "-f", str(bad), check=False)
    assert err.returncode == 2 and "spec.replicas" in err.stderr, err.stderr
    cluster.mctl("delete", "-f", str(same))
