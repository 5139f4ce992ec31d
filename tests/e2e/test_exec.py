"""`mctl exec` on a real cluster: through the scheduler to the agent, into the container."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

import pytest
from conftest import MCTL, Cluster

BOX = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: box
spec:
  image: busybox
  command: ["sleep", "3600"]
  securityContext: {readOnlyRootfs: true}
"""


@pytest.fixture(scope="module")
def box(cluster: Cluster, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("exec") / "box.yaml"
    path.write_text(BOX)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "30")
    return cluster.replicas("box")[0]["metadata"]["name"]


def test_exec_runs_in_the_container_with_its_exit_code(cluster: Cluster, box: str):
    proc = cluster.mctl("exec", box, "--", "sh", "-c",
                        "hostname; cat /proc/1/cmdline; echo; echo oops >&2; exit 3",
                        check=False)
    assert proc.returncode == 3
    assert proc.stdout.splitlines() == [box, "sleep\x003600\x00"]
    assert proc.stderr == "oops\n"


def test_exec_joins_the_cgroup_and_keeps_the_containers_confinement(cluster: Cluster, box: str):
    out = cluster.mctl("exec", box, "--", "sh", "-c",
                       "grep CapBnd /proc/self/status; grep NoNewPrivs /proc/self/status; "
                       "touch /x 2>&1; cat /proc/self/cgroup").stdout
    assert "CapBnd:\t00000000a80425fb" in out          # Docker's default set, not root's
    assert "NoNewPrivs:\t1" in out
    assert "Read-only file system" in out
    assert ":memory:/\n" in out                          # the container's cgroup is its root


def test_exec_passes_stdin_through(cluster: Cluster, box: str):
    proc = cluster.mctl("exec", "-i", box, "--", "sh", "-c", "tr a-z A-Z; echo done",
                        input="hello\nworld\n")
    assert proc.stdout == "HELLO\nWORLD\ndone\n"


def test_exec_with_a_terminal(cluster: Cluster, box: str):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(MCTL[0], MCTL + ["exec", "-it", box, "--", "sh"], cluster.env)
    out = b""

    def pump(seconds: float) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return
    pump(3)
    os.write(fd, b"tty; exit 5\r")
    pump(3)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 5
    assert b"/dev/pts/0" in out


def test_a_hung_up_exec_is_killed(cluster: Cluster, box: str):
    proc = subprocess.Popen(MCTL + ["exec", box, "--", "sleep", "777"], env=cluster.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = cluster.cgroup("pids", "node1", box) / "cgroup.procs"

    def sleepers() -> list[str]:
        return [p for p in procs.read_text().split()
                if b"777" in open(f"/proc/{p}/cmdline", "rb").read()]
    cluster.wait_for("the exec'd sleep", sleepers, timeout=15)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    cluster.wait_for("the sleep to be killed", lambda: not sleepers(), timeout=15)


def test_exec_errors_are_one_line(cluster: Cluster, box: str):
    missing = cluster.mctl("exec", "nope-12345", "--", "true", check=False)
    assert missing.returncode == 1
    assert missing.stderr == "mctl: replica nope-12345 not found in namespace default\n"
    nocmd = cluster.mctl("exec", box, "--", "no-such-command", check=False)
    assert nocmd.returncode == 127
    assert nocmd.stderr == "mctl exec: no-such-command: not found in the container\n"


FULL = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: full
spec:
  image: busybox
  # The shell and 7 sleeps: exactly at the limit. (A shell whose fork fails
  # exits, and the container would restart: it must not try one more.)
  command: ["sh", "-c", "for i in 1 2 3 4 5 6 7; do sleep 3600 & done; wait"]
  resources: {pids: 8}
"""


def test_exec_into_a_container_at_its_pids_limit_says_so(cluster: Cluster, tmp_path):
    path = tmp_path / "full.yaml"
    path.write_text(FULL)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "30")
    try:
        name = cluster.replicas("full")[0]["metadata"]["name"]

        def refused() -> object:
            # `true` runs until the loop has filled the container up.
            proc = cluster.mctl("exec", name, "--", "true", check=False)
            return proc if proc.returncode != 0 else None
        proc = cluster.wait_for("the container to reach its pids limit", refused, timeout=20)
        assert isinstance(proc, subprocess.CompletedProcess)
        assert proc.returncode == 126
        assert proc.stderr == ("mctl exec: the container is at its pids limit (8): no process"
                               " can be started in it until one exits\n")
        assert "Traceback" not in proc.stdout + proc.stderr
    finally:
        cluster.mctl("delete", "-f", str(path))


def test_debug_node_asks_the_agent_directly(cluster: Cluster, box: str):
    containers = cluster.mctl("debug", "node", "node1").stdout
    assert f"default_{box}" in containers and "running" in containers
    assert "NETWORK NAMESPACE" in containers
    cgroups = cluster.mctl("debug", "node", "node1", "cgroups").stdout
    assert f"default_{box}" in cgroups and "leak" not in cgroups
    mounts = cluster.mctl("debug", "node", "node1", "mounts").stdout
    assert f"default_{box}/rootfs" in mounts and "overlay" in mounts
    events = cluster.mctl("debug", "node", "node1", "events", "--limit", "500").stdout
    assert f"container started container=default_{box}" in events
    assert "== routes" in cluster.mctl("debug", "node", "node1", "network").stdout
    bad = cluster.mctl("debug", "node", "node1", "nonsense", check=False)
    assert bad.returncode == 1 and "unknown topic 'nonsense'" in bad.stderr
