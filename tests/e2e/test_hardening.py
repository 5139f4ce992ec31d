"""Runtime hardening on a real 2-node cluster: user namespaces, log rotation, the node's guard.

- A workload with `securityContext.userNamespace: true` runs and reports
  Running; inside, root's ids map to a range of the node's, on the host its
  processes and files belong to that range, `mctl exec` enters it, and the
  range is freed when the workload goes.
- A chatty container writes ~26 MB, more than the agent's default cap of
  2 x 10 MiB: its log rotates, `mctl logs --tail` reads across the rotated
  file, `mctl logs -f` follows through every rotation, and the files on
  disk stay under the cap.
- No container reaches an agent's port, on its own node or another, while
  it reaches a container on the other node.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
from conftest import MCTL, Cluster  # the e2e fixtures module

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    c = cluster_factory(2)
    # The fixture's temporary dir is 0700: a user namespace's mapped root must
    # pass through it to reach its rootfs, as it passes through /var/lib.
    os.chmod(c.dir.parent, 0o755)
    return c


def apply(cluster: Cluster, tmp_path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    return str(path)


def running(cluster: Cluster, workload: str, count: int = 1) -> list[dict]:
    def ready() -> list[dict]:
        reps = [r for r in cluster.replicas(workload) if r["status"].get("phase") == "Running"]
        return reps if len(reps) == count else []
    return cluster.wait_for(f"{count} Running replicas of {workload}", ready, timeout=30)


# -- user namespaces ---------------------------------------------------------------------------

USERNS = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: mapped
spec:
  image: busybox
  command: ["sh", "-c", "touch /started-by-root; sleep 3600"]
  securityContext: {userNamespace: true}
"""


def test_user_namespace_workload_runs_mapped(cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "mapped", USERNS)
    (rep,) = running(cluster, "mapped")
    name, node = rep["metadata"]["name"], rep["node"]
    out = cluster.mctl("exec", name, "--", "sh", "-c",
                       "id -u; cat /proc/self/uid_map; touch /by-exec; ls -ln /by-exec; "
                       "ls -ln /bin/busybox | awk '{print $3}'; "
                       "echo 'x:x:7:7::/:/bin/sh' >> /etc/passwd && echo write=ok").stdout
    lines = out.splitlines()
    assert lines[0] == "0"
    inside, host_start, size = map(int, lines[1].split())
    assert (inside, size) == (0, 65536)
    assert host_start >= 100_000
    # Image files are root's inside (idmapped layers), so root may modify them.
    assert lines[3:] == ["0", "write=ok"], out
    bundle = cluster.bundle(node, name)
    # On disk and in the process table, the container's root is that host uid,
    # the copied-up image file included.
    for made in ("started-by-root", "by-exec", "etc/passwd"):
        assert os.stat(bundle / "upper" / made).st_uid == host_start
    with open("/proc/self/mountinfo") as f:
        layers = [line.split()[4] for line in f if f"{bundle}/lower/" in line.split()[4]]
    assert layers and all(p.startswith(f"{bundle}/lower/") for p in layers)
    init_pid = json.loads((bundle / "state.json").read_text())["init_pid"]
    with open(f"/proc/{init_pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(host_start)
    # The range is the container's, recorded by its node, and freed with it.
    ranges = cluster.dir / "nodes" / node / "userns"
    assert [p.read_text() for p in ranges.iterdir()] == [f"default_{name}"]
    cluster.mctl("delete", "-f", path, "--timeout", "30")
    assert list(ranges.iterdir()) == []
    # Teardown unmounted the overlay and its idmapped layers, then removed the bundle.
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if str(bundle) in line] == []
    assert not bundle.exists()


# -- log rotation ------------------------------------------------------------------------------

# 25 bursts of 1000 numbered lines of ~1 KB, paced so a follower keeps up,
# once /tmp/go exists; then a last line.
CHATTY_SCRIPT = (
    "while [ ! -e /tmp/go ]; do sleep 0.1; done; "
    "line=$(head -c 1000 /dev/zero | tr '\\0' x); "
    "for c in $(seq 0 24); do seq $((c*1000+1)) $((c*1000+1000)) | sed \"s/\\$/ $line/\"; "
    "sleep 0.2; done; echo done-writing; sleep 3600"
)
CHATTY = f"""\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: chatty
spec:
  image: busybox
  command: ["sh", "-c", {json.dumps(CHATTY_SCRIPT)}]
  resources: {{cpu: 500m, memory: 64Mi}}
"""


def numbers(lines: list[str]) -> list[int]:
    return [int(line.split()[0]) for line in lines if line and line.split()[0].isdigit()]


def test_logs_rotate_under_the_cap_and_tail_and_follow_work(cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "chatty", CHATTY)
    (rep,) = running(cluster, "chatty")
    name, node = rep["metadata"]["name"], rep["node"]
    follower = subprocess.Popen(MCTL + ["logs", "-f", "--tail", "0", name], env=cluster.env,
                                stdout=subprocess.PIPE, text=True)
    followed: list[str] = []
    finished = threading.Event()

    def read() -> None:
        for line in follower.stdout:
            followed.append(line.rstrip("\n"))
            if line.startswith("done-writing"):
                finished.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1.0)                       # following from the end of the log
        cluster.mctl("exec", name, "--", "touch", "/tmp/go")
        assert finished.wait(90), f"-f stopped after {len(followed)} lines"
    finally:
        follower.terminate()
        follower.wait(10)
    # -f went on through each rotation and lost nothing: every line, in order.
    assert numbers(followed) == list(range(1, 25001))

    bundle = cluster.bundle(node, name)
    logs = sorted(p.name for p in bundle.iterdir() if p.name.startswith("container.log"))
    assert logs == ["container.log", "container.log.1"]      # rotated, oldest dropped
    sizes = {p: os.path.getsize(bundle / p) for p in logs}
    assert all(size <= 10 * MiB for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 20 * MiB

    tail = cluster.mctl("logs", "--tail", "3", name).stdout.splitlines()
    assert numbers(tail[:2]) == [24999, 25000] and tail[2] == "done-writing"
    # More lines than the current file holds: read back into container.log.1.
    current_lines = (bundle / "container.log").read_bytes().count(b"\n")
    want = current_lines + 2000
    long_tail = cluster.mctl("logs", "--tail", str(want), name).stdout.splitlines()
    assert len(long_tail) == want
    assert numbers(long_tail) == list(range(25001 - (want - 1), 25001))
    cluster.mctl("delete", "-f", path, "--timeout", "30")


# -- the node's guard -----------------------------------------------------------------------------

PROBE = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: probe
spec:
  replicas: 2
  spread: true
  image: busybox
  command: ["sh", "-c", "mkdir /www; echo pong > /www/index.html; httpd -f -p 8080 -h /www"]
"""


def test_no_container_reaches_an_agents_port(cluster: Cluster, tmp_path):
    path = apply(cluster, tmp_path, "probe", PROBE)
    reps = {r["node"]: r for r in running(cluster, "probe", 2)}
    assert sorted(reps) == ["node1", "node2"]
    nodes = {n["name"]: n for n in
             json.loads(cluster.mctl("get", "nodes", "-o", "json").stdout)["items"]}
    here = reps["node1"]["metadata"]["name"]
    there_ip = reps["node2"]["status"]["ip"]
    script = f"echo peer=$(timeout 5 wget -q -O- http://{there_ip}:8080/)"
    for node in ("node1", "node2"):
        host, port = nodes[node]["address"].rsplit(":", 1)
        script += f"; echo {node}=$(nc -w 2 {host} {port} </dev/null; echo rc=$?)"
    out = cluster.mctl("exec", here, "--", "sh", "-c", script, timeout=60).stdout.splitlines()
    found = dict(line.split("=", 1) for line in out)
    # The container reaches a container on the other node through both nodes ...
    assert found["peer"] == "pong", out
    # ... but neither agent: its own node's nor the other's (no connection, nc fails).
    assert found["node1"] == "rc=1", out
    assert found["node2"] == "rc=1", out
    cluster.mctl("delete", "-f", path, "--timeout", "30")


# -- seccomp -----------------------------------------------------------------------------------

SECCOMP = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  image: busybox
  command: ["sleep", "3600"]
  securityContext: {{seccompProfile: {profile}}}
"""


def test_seccomp_runtime_default_by_default_and_unconfined_on_request(cluster: Cluster, tmp_path):
    # RuntimeDefault unless the workload says otherwise; `mctl exec` gets the
    # container's filter too (Seccomp: 2 is "filter" in /proc/PID/status).
    paths = [apply(cluster, tmp_path, name, SECCOMP.format(name=name, profile=profile))
             for name, profile in (("filtered", "RuntimeDefault"), ("unfiltered", "Unconfined"))]
    for workload, mode, unshare in (("filtered", "2", "denied"), ("unfiltered", "0", "allowed")):
        (rep,) = running(cluster, workload)
        out = cluster.mctl("exec", rep["metadata"]["name"], "--", "sh", "-c",
                           "grep '^Seccomp:' /proc/1/status /proc/self/status | cut -f2; "
                           "unshare -U true 2>/dev/null && echo allowed || echo denied").stdout
        assert out.split() == [mode, mode, unshare], (workload, out)
    for path in paths:
        cluster.mctl("delete", "-f", path, "--timeout", "30")
