"""`mctl logs workload/NAME`: the logs of every replica, merged and prefixed."""

from __future__ import annotations

import re
import subprocess
import time

from conftest import MCTL, Cluster

TICKER = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: ticker
spec:
  replicas: 3
  image: busybox
  command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
"""


def test_workload_logs_merge_every_replica_with_a_prefix(cluster: Cluster, tmp_path):
    path = tmp_path / "ticker.yaml"
    path.write_text(TICKER)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "30")
    names = sorted(r["metadata"]["name"] for r in cluster.replicas("ticker"))
    time.sleep(1.0)
    out = cluster.mctl("logs", "workload/ticker", "--tail", "2").stdout.splitlines()
    assert len(out) == 6
    pattern = re.compile(r"^\[(ticker-\w{5})\] tick \d+$")
    assert sorted({pattern.match(line).group(1) for line in out}) == names

    follow = subprocess.Popen(MCTL + ["logs", "-f", "workload/ticker", "--tail", "0"],
                              env=cluster.env, stdout=subprocess.PIPE, text=True)
    seen: set[str] = set()
    deadline = time.monotonic() + 15
    while seen != set(names) and time.monotonic() < deadline:
        line = follow.stdout.readline()
        if m := pattern.match(line.strip()):
            seen.add(m.group(1))
    follow.terminate()
    follow.wait(timeout=10)
    assert seen == set(names)

    bad = cluster.mctl("logs", "workload/nothing", check=False)
    assert bad.returncode == 1
    assert bad.stderr == "mctl: workload nothing has no placed replicas in namespace default\n"
    cluster.mctl("delete", "-f", str(path), "--timeout", "30")
