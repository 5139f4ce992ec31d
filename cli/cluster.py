"""`mctl cluster up|down|status`: a whole cluster on this machine.

`up` starts etcd (Debian's etcd-server) on free loopback ports with its own
data dir, one scheduler and N agents, each a detached process with its own
log in the cluster dir (default /var/lib/mctl/cluster), and points the CLI
at the scheduler. Every process is recorded with its pid and start time, so
`down` ends exactly the processes `up` started, never another that reused a
pid. `down` stops the agents first (they remove their containers), then
the scheduler and etcd, sweeps whatever a crashed agent left (containers,
mounts, cgroups), and removes the data. `up` on a dir a crashed cluster left
behind cleans it up first.

The cluster talks to the CLI and processes only; it imports neither the
scheduler nor the agent (they are started as commands).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import grpc

from mctl.common import rpc
from mctl.common.procfs import start_time
from mctl.v1 import control_pb2, control_pb2_grpc

from . import config

STATE_FILE = "cluster.json"


class ClusterError(Exception):
    pass


def default_dir() -> str:
    return os.environ.get("MCTL_CLUSTER_DIR") or "/var/lib/mctl/cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(proc: dict[str, object]) -> bool:
    pid = int(proc["pid"])
    return pid > 0 and start_time(pid) == int(proc["start_time"]) != 0


def load_state(directory: str) -> dict[str, object] | None:
    try:
        with open(os.path.join(directory, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_state(directory: str, state: dict[str, object]) -> None:
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, os.path.join(directory, STATE_FILE))


def spawn(argv: list[str], log_path: str) -> dict[str, object]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    return {"pid": proc.pid, "start_time": _wait_start_time(proc.pid), "argv": argv,
            "log": log_path}


def _wait_start_time(pid: int) -> int:
    for _ in range(100):
        st = start_time(pid)
        if st:
            return st
        time.sleep(0.005)
    return 0


def wait_port(port: int, timeout: float, what: str, proc: dict[str, object]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(proc):
            raise ClusterError(f"{what} exited during start-up; see {proc['log']}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ClusterError(f"{what} did not listen on port {port} within {timeout:.0f}s; "
                       f"see {proc['log']}")


def wait_nodes(server: str, count: int, timeout: float, procs: list[dict[str, object]]) -> None:
    stub = control_pb2_grpc.ControlPlaneStub(rpc.make_channel(server))
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        for p in procs:
            if not alive(p):
                raise ClusterError(f"{p['name']} exited during start-up; see {p['log']}")
        try:
            nodes = stub.ListNodes(control_pb2.ListRequest(), timeout=2).items
            ready = sum(n.ready for n in nodes)
            if ready >= count:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise ClusterError(f"only {ready}/{count} nodes became ready within {timeout:.0f}s")


def up(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    state = load_state(directory)
    if state is not None:
        procs = state["processes"]
        if all(alive(p) for p in procs):
            config.save({"server": state["server"], "cluster_dir": directory})
            print(f"cluster already running: {len(state['nodes'])} nodes, server "
                  f"{state['server']}")
            return 0
        print("a previous cluster in this dir did not stop cleanly; cleaning it up",
              file=sys.stderr)
        teardown(directory, state)
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else "")
    if not etcd:
        raise ClusterError("etcd not found: install Debian's etcd-server package")
    os.makedirs(directory, exist_ok=True)
    # Cgroups and node names are shared by every cluster on this machine:
    # a short id of the dir keeps two clusters (a demo and a test run) apart.
    cluster_id = hashlib.sha256(directory.encode()).hexdigest()[:6]
    client_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"127.0.0.1:{api_port}"
    state = {"dir": directory, "id": cluster_id, "server": server,
             "etcd": f"127.0.0.1:{client_port}", "processes": [], "nodes": []}
    procs: list[dict[str, object]] = state["processes"]  # type: ignore[assignment]
    try:
        print(f"starting etcd on 127.0.0.1:{client_port}", file=sys.stderr)
        peer = f"http://127.0.0.1:{peer_port}"
        client = f"http://127.0.0.1:{client_port}"
        p = spawn([etcd, "--name", "mctl", "--data-dir", os.path.join(directory, "etcd"),
                   "--listen-client-urls", client, "--advertise-client-urls", client,
                   "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                   "--initial-cluster", f"mctl={peer}"],
                  os.path.join(directory, "etcd.log"))
        p["name"] = "etcd"
        procs.append(p)
        save_state(directory, state)
        wait_port(client_port, 20, "etcd", p)

        print(f"starting scheduler on {server}", file=sys.stderr)
        p = spawn([sys.executable, "-m", "mctl.scheduler.main", "--etcd",
                   f"127.0.0.1:{client_port}", "--listen", server,
                   "--log-file", os.path.join(directory, "scheduler.log")],
                  os.path.join(directory, "scheduler.out"))
        p["name"] = "scheduler"
        procs.append(p)
        save_state(directory, state)
        wait_port(api_port, 20, "scheduler", p)

        for i in range(1, args.nodes + 1):
            name = f"node{i}"
            node_dir = os.path.join(directory, "nodes", name)
            cgroup_parent = f"mctl/{cluster_id}-{name}"
            os.makedirs(node_dir, exist_ok=True)
            print(f"starting agent {name}", file=sys.stderr)
            p = spawn([sys.executable, "-m", "mctl.agent.main", "--name", name,
                       "--scheduler", server, "--state-dir", node_dir,
                       "--cgroup-parent", cgroup_parent, "--cleanup-on-exit",
                       "--stop-grace", str(args.stop_grace),
                       "--log-file", os.path.join(directory, f"{name}.log")],
                      os.path.join(directory, f"{name}.out"))
            p["name"] = name
            procs.append(p)
            state["nodes"].append({"name": name, "state_dir": node_dir,  # type: ignore[union-attr]
                                   "cgroup_parent": cgroup_parent})
            save_state(directory, state)
        wait_nodes(server, args.nodes, args.timeout, procs)
    except (ClusterError, OSError) as e:
        print(f"mctl: cluster did not come up: {e}; removing what was started", file=sys.stderr)
        teardown(directory, state)
        raise ClusterError(str(e)) from None
    config.save({"server": server, "cluster_dir": directory})
    print(f"cluster up: {args.nodes} node{'s' if args.nodes != 1 else ''}, server {server} "
          f"(saved in {config.config_path()})")
    return 0


def _signal_and_wait(procs: list[dict[str, object]], timeout: float) -> None:
    for p in procs:
        if alive(p):
            try:
                os.kill(int(p["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in procs):
        _reap(procs)
        time.sleep(0.05)
    for p in procs:
        if alive(p):
            print(f"{p['name']} did not stop in {timeout:.0f}s; killing it", file=sys.stderr)
            try:
                os.kill(int(p["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap(procs)


def _reap(procs: list[dict[str, object]]) -> None:
    # Processes started by this very CLI process are its children: reap them,
    # or they linger as zombies that still look alive.
    for p in procs:
        try:
            os.waitpid(int(p["pid"]), os.WNOHANG)
        except ChildProcessError:
            pass


def teardown(directory: str, state: dict[str, object]) -> None:
    procs: list[dict[str, object]] = state.get("processes", [])  # type: ignore[assignment]
    agents = [p for p in procs if str(p["name"]).startswith("node")]
    others = [p for p in procs if p not in agents]
    _signal_and_wait(agents, 60)
    # The scheduler before etcd, so it does not log a storm of etcd errors.
    _signal_and_wait([p for p in others if p["name"] == "scheduler"], 10)
    _signal_and_wait([p for p in others if p["name"] == "etcd"], 10)
    for node in state.get("nodes", []):  # type: ignore[union-attr]
        # Sweep what a crashed agent may have left: containers, mounts, cgroups.
        subprocess.run([sys.executable, "-m", "mctl.agent.main", "cleanup",
                        "--name", node["name"], "--state-dir", node["state_dir"],
                        "--cgroup-parent", node["cgroup_parent"], "--stop-grace", "1"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(directory, ignore_errors=True)
    if config.load().get("cluster_dir") == directory:
        try:
            os.unlink(config.config_path())
        except FileNotFoundError:
            pass


def down(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    state = load_state(directory)
    if state is None:
        if os.path.isdir(directory):
            shutil.rmtree(directory, ignore_errors=True)
        print(f"no cluster in {directory}")
        return 0
    teardown(directory, state)
    print("cluster down: every process stopped, containers and data removed")
    return 0


def status(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    state = load_state(directory)
    if state is None:
        print(f"no cluster in {directory}")
        return 1
    print(f"cluster in {directory}, server {state['server']}, etcd {state['etcd']}")
    for p in state["processes"]:  # type: ignore[union-attr]
        print(f"  {p['name']:<10} pid {p['pid']:<8} {'running' if alive(p) else 'STOPPED'}")
    stub = control_pb2_grpc.ControlPlaneStub(rpc.make_channel(str(state["server"])))
    try:
        nodes = stub.ListNodes(control_pb2.ListRequest(), timeout=3).items
        ready = sum(n.ready for n in nodes)
        print(f"nodes ready: {ready}/{len(nodes)}")
    except grpc.RpcError:
        print("the scheduler does not answer")
        return 1
    return 0 if all(alive(p) for p in state["processes"]) else 1  # type: ignore[union-attr]


def cmd_cluster(args: argparse.Namespace) -> int:
    from .main import CliError
    if os.geteuid() != 0 and args.action in ("up", "down"):
        raise CliError("cluster up/down must run as root (namespaces, cgroups, mounts)")
    try:
        return {"up": up, "down": down, "status": status}[args.action](args)
    except ClusterError as e:
        raise CliError(str(e)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("cluster", help="a local cluster on this machine: up, down, status")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--nodes", type=int, default=1)
    c.add_argument("--dir", default=default_dir(), help="where the cluster keeps its state")
    c.add_argument("--stop-grace", type=float, default=3.0,
                   help="seconds agents wait between TERM and KILL when stopping containers")
    c.add_argument("--timeout", type=float, default=60.0)
    c.set_defaults(fn=cmd_cluster)
