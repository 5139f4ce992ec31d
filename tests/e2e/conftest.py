"""End-to-end fixtures: a real local cluster (etcd, scheduler, agents) per test module.

Each cluster lives in its own temporary dir and MCTL_HOME, so it never
touches a cluster the user runs, and `cluster down` at the end must leave no
process, mount or cgroup behind (asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mctl.common import netns
from mctl.common.procfs import processes_mentioning, start_time

MCTL = [sys.executable, "-m", "mctl.cli.main"]
# The host's static busybox, run inside a namespace (a node's or a container's).
BUSYBOX = "/bin/busybox"


def busybox_workload(name: str, command: str, replicas: int = 1, ports: str = "") -> str:
    """A busybox Workload's YAML running `command` with /bin/sh -c; `ports` a YAML flow list."""
    return "\n".join([
        "apiVersion: mctl/v1",
        "kind: Workload",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  replicas: {replicas}",
        "  image: busybox",
        # JSON's string syntax is YAML's double-quoted one: any command goes as is.
        f'  command: ["/bin/sh", "-c", {json.dumps(command)}]',
        *([f"  ports: {ports}"] if ports else []),
        "  resources: {cpu: 100m, memory: 32Mi}",
        "",
    ])


def in_netns(name: str, *argv: str) -> str:
    """Runs `argv` inside the named network namespace; its stdout (it must succeed)."""
    proc = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 0, f"{argv} in {name}: {proc.stderr}"
    return proc.stdout


def http_get_in_netns(name: str, ip: str, port: int, timeout: float = 2.0) -> str:
    """The body of GET / at ip:port, from a socket inside namespace `name`; "" on failure."""
    def get() -> str:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while len(reply) < 65536 and (chunk := s.recv(4096)):
                reply += chunk
        head, _, body = reply.decode(errors="replace").partition("\r\n\r\n")
        return body.strip() if head.split(" ")[1:2] == ["200"] else ""
    try:
        return netns.run_in(name, get)
    except OSError:
        return ""


class Cluster:
    def __init__(self, directory: Path, home: Path) -> None:
        self.dir = directory
        self.home = home
        self.env = {**os.environ, "MCTL_HOME": str(home), "MCTL_CLUSTER_DIR": str(directory)}

    def mctl(self, *args: str, check: bool = True, input: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(MCTL + list(args), env=self.env, capture_output=True, text=True,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"mctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def state(self) -> dict:
        return json.loads((self.dir / "cluster.json").read_text())

    @property
    def id(self) -> str:
        return self.state()["id"]

    def node_ip(self, node: str) -> str:
        """The node's address on the cluster bridge (its "VM" address)."""
        return self.state()["network"]["nodes"][node]["ip"]

    def node_netns(self, node: str) -> str:
        """The named network namespace the cluster made for a node (its "VM")."""
        return self.state()["network"]["nodes"][node]["netns"]

    def nodes(self) -> dict[str, dict]:
        """`get nodes -o json`'s items by name."""
        items = json.loads(self.mctl("get", "nodes", "-o", "json").stdout)["items"]
        return {n["name"]: n for n in items}

    def apply_text(self, path: Path, text: str) -> None:
        """Writes `text` to `path` and applies it, waiting (60 s at most) for its replicas."""
        path.write_text(text)
        self.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")

    def running_by_node(self, workload: str, count: int, timeout: float = 30) -> dict[str, dict]:
        """The workload's Running replicas with an address, by node, once `count` nodes have one.

        One per node (spread): a node with two would count once and the wait goes on.
        """
        def spread() -> dict[str, dict]:
            reps = [r for r in self.replicas(workload) if r["status"].get("phase") == "Running"
                    and r["status"].get("ip")]
            by_node = {r["node"]: r for r in reps}
            return by_node if len(by_node) == count == len(reps) else {}
        return self.wait_for(f"{count} Running replicas of {workload} with addresses, one per "
                             "node", spread, timeout=timeout)  # type: ignore[return-value]

    def virtual_ip(self, workload: str) -> str:
        """The workload's service address as stored ("" if it has none yet)."""
        items = json.loads(self.mctl("get", "workloads", "-o", "json").stdout)["items"]
        return next(w for w in items if w["metadata"]["name"] == workload).get(
            "status", {}).get("virtualIP", "")

    def netns_of(self, node: str, replica: str, namespace: str = "default") -> str:
        """The named network namespace the agent made for a replica's container."""
        return f"{self.node_netns(node)}-{namespace}_{replica}"

    def replicas(self, workload: str | None = None) -> list[dict]:
        items = json.loads(self.mctl("get", "replicas", "-o", "json").stdout)["items"]
        return [r for r in items if workload is None or r.get("workload") == workload]

    def wait_for(self, what: str, predicate: Callable[[], object], timeout: float = 30) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signals the cluster's process `name` (etcd, scheduler, nodeN); returns its pid."""
        proc = next(p for p in self.state()["processes"] if p["name"] == name)
        os.kill(proc["pid"], sig)
        return proc["pid"]

    def restart(self, name: str) -> None:
        """Starts `name` again exactly as `cluster up` did, recorded for `cluster down`."""
        state = self.state()
        proc = next(p for p in state["processes"] if p["name"] == name)
        with open(proc["log"], "ab") as log:
            new = subprocess.Popen(proc["argv"], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        # This test process is its parent: reap it when it exits, or `cluster
        # down` sees a zombie that still looks alive and waits it out.
        threading.Thread(target=new.wait, daemon=True).start()
        proc["pid"] = new.pid
        proc["start_time"] = self.wait_for("a start time", lambda: start_time(new.pid), 5)
        (self.dir / "cluster.json").write_text(json.dumps(state))

    def bundle(self, node: str, replica: str, namespace: str = "default") -> Path:
        return self.dir / "nodes" / node / "containers" / f"{namespace}_{replica}"

    def cgroup(self, controller: str, node: str, replica: str, namespace: str = "default") -> Path:
        return (Path("/sys/fs/cgroup") / controller / "mctl" / f"{self.id}-{node}"
                / f"{namespace}_{replica}")


def leftovers(directory: Path, cluster_id: str) -> list[str]:
    """Kernel state this cluster could have left: mounts, cgroups, processes, netns, links."""
    found = []
    netns_prefix = f"mctl-{cluster_id}-"
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f
                  if str(directory) in line or f"/run/netns/{netns_prefix}" in line]
    if os.path.isdir("/run/netns"):
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(netns_prefix)]
    # The host's own links (the bridge, the nodes' veth ends): /sys/class/net
    # shows the namespace sysfs was mounted in, the host's.
    found += [f"link {n}" for n in os.listdir("/sys/class/net")
              if n.startswith(f"mctl{cluster_id}")]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "mctl"
        if top.is_dir():
            found += [f"cgroup {p}" for p in top.iterdir() if p.name.startswith(cluster_id)]
    found += [f"process {pid}: {cmdline[:120]}"
              for pid, cmdline in processes_mentioning(str(directory))]
    # The node namespaces take their nft tables (hostPorts, guard, services)
    # and the DNS responders' sockets along; none may end up in the host's.
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft:
        tables = subprocess.run([nft, "list", "tables"], capture_output=True, text=True,
                                check=False).stdout.split("\n")
        found += [f"nft {t}" for t in tables if t.startswith("table ") and (
            t.endswith("_services") or f"mctl{cluster_id}" in t)]
    return found


@pytest.fixture(scope="module")
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root")
    made: list[Cluster] = []

    def make(nodes: int = 1, *flags: str) -> Cluster:
        base = Path(tempfile.mkdtemp(prefix="mctl-test-"))
        c = Cluster(base / "cluster", base / "home")
        made.append(c)
        c.mctl("cluster", "up", "--nodes", str(nodes), "--stop-grace", "1", *flags, timeout=90)
        return c

    yield make
    for c in made:
        cluster_id = c.id if (c.dir / "cluster.json").exists() else "none"
        c.mctl("cluster", "down", check=False, timeout=120)
        left = leftovers(c.dir, cluster_id)
        shutil.rmtree(c.dir.parent, ignore_errors=True)
        assert not left, "cluster down left kernel state behind:\n" + "\n".join(left)


@pytest.fixture(scope="module")
def cluster(cluster_factory: Callable[[int], Cluster]) -> Cluster:
    return cluster_factory(1)
