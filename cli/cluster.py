"""`mctl cluster up|down|status|stop-node|restart-node|backup|restore`: a cluster on this machine.

`up` starts etcd (Debian's etcd-server) on free loopback ports with its own
data dir, one scheduler and N agents, each a detached process with its own
log in the cluster dir (default /var/lib/mctl/cluster), and points the CLI
at the scheduler. Every process is recorded with its pid, start time and
command line, so `down` ends exactly the processes `up` started, never
another that reused a pid, and a dead one can be started again as it was.

Only `down` destroys state: it stops the agents first (they remove their
containers), then the scheduler and etcd, sweeps whatever a crashed agent
left (containers, mounts, cgroups), and removes the data. `up` on a cluster
whose etcd was started restarts exactly the processes that are dead (a
zombie is dead), with their recorded command lines, and keeps every
workload; with all alive it only grows the cluster to `--nodes`. Only a dir
whose `up` crashed before etcd started (so it holds no data) is cleaned up
and made anew. `stop-node` kills a node's agent the way a machine loses it
(its containers keep running) and `restart-node` starts it again; the new
agent adopts its containers. `up --etcd-members 3` runs etcd as three
members on loopback ports of their own, and the schedulers are given all
three. `backup FILE` saves an etcd snapshot (Debian's etcdctl) and `restore
FILE` rebuilds every member from one.

Every connection is mutual TLS unless `up --insecure`: `up` makes a CA and
certificates in DIR/pki (scheduler.crt, admin.crt for the CLI, one per node)
and they go with the dir on `down`. etcd, which holds every workload with its
env, has a CA of its own in DIR/pki/etcd: it serves and peers with a
certificate of that CA, listens on loopback only and accepts only client
certificates of that CA, which only the schedulers hold. The cluster CA
would not do: every agent and admin certificate would then open etcd too.

Each scheduler serves the web view (docs/webview.md) on a loopback port,
for a browser on this machine, to whoever holds DIR/web.token (made once,
0600) or an admin certificate; `up` prints the address with the token.

The cluster talks to the CLI and processes only; it imports neither the
scheduler nor the agent (they are started as commands).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NotRequired, TypedDict, cast

import grpc

from mctl.common import pki, rpc, skopeo, tls
from mctl.common.claims import Claims
from mctl.common.procfs import start_time
from mctl.v1 import control_pb2, control_pb2_grpc

from . import cluster_network, config

STATE_FILE = "cluster.json"
PKI_DIR = "pki"
ETCD_PKI_DIR = "etcd"        # under PKI_DIR: etcd's own CA, its certificate, the schedulers'
ETCD_NAME = "etcd"
WEB_TOKEN_FILE = "web.token"


class ClusterError(Exception):
    pass


# cluster.json: what `up` started and made, written before each step so that
# `down` (or the next `up`) finds everything even after a crash.
class ProcessRecord(TypedDict):
    name: str                # "etcd", "scheduler", "scheduler2", "node1"...
    pid: int
    start_time: int          # /proc/PID/stat's, so a reused pid is not taken for it
    argv: list[str]
    log: str


class NodeRecord(TypedDict):
    name: str
    state_dir: str
    cgroup_parent: str
    runtime: str


class TLSRecord(TypedDict):
    dir: str                 # DIR/pki, the cluster CA
    ca: str
    admin_cert: str
    admin_key: str


class ClusterState(TypedDict):
    dir: str
    id: str                  # short hash of dir: names cgroups, namespaces and links
    server: str              # the schedulers' addresses, comma-separated
    etcd: str
    processes: list[ProcessRecord]
    nodes: list[NodeRecord]
    network: cluster_network.NetworkPlan
    tls: NotRequired[TLSRecord]                 # absent: `up --insecure`
    userns_windows: NotRequired[dict[str, int]]  # node name -> window of host ids
    registry_flags: NotRequired[list[str]]      # up's --registry-* for schedulers and agents
    image_gc_flags: NotRequired[list[str]]      # up's --image-gc-* for agents


def default_dir() -> str:
    return os.environ.get("MCTL_CLUSTER_DIR") or "/var/lib/mctl/cluster"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open until all are chosen."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Field 3 of /proc/PID/stat: a zombie (Z) or a dying process (X) has exited;
# a zombie only waits for its parent to collect its status.
DEAD_STATES = ("Z", "X")


def process_state(pid: int, procfs: str = "/proc") -> str:
    """The state letter of /proc/PID/stat (R, S, D, Z...); "" if there is no such process."""
    try:
        with open(f"{procfs}/{pid}/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces or ")": split after the last ")".
        return stat.rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def alive(proc: ProcessRecord, procfs: str = "/proc") -> bool:
    """Whether the recorded process runs: same pid, same start time, and not a zombie."""
    pid = proc["pid"]
    if pid <= 0 or proc["start_time"] == 0 or start_time(pid) != proc["start_time"]:
        return False
    if process_state(pid, procfs) in DEAD_STATES:
        _reap([proc])   # ours (started by this very CLI): collect it; else its parent will
        return False
    return True


def load_state(directory: str) -> ClusterState | None:
    try:
        with open(os.path.join(directory, STATE_FILE)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    # Only save_state writes the file: its shape is trusted past this check.
    return cast(ClusterState, doc) if isinstance(doc, dict) else None


def save_state(directory: str, state: ClusterState) -> None:
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, os.path.join(directory, STATE_FILE))


def spawn(name: str, argv: list[str], log_path: str) -> ProcessRecord:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    return {"name": name, "pid": proc.pid, "start_time": _wait_start_time(proc.pid),
            "argv": argv, "log": log_path}


def _wait_start_time(pid: int) -> int:
    for _ in range(100):
        st = start_time(pid)
        if st:
            return st
        time.sleep(0.005)
    return 0


def wait_port(port: int, timeout: float, what: str, proc: ProcessRecord,
              host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(proc):
            raise ClusterError(f"{what} exited during start-up; see {proc['log']}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise ClusterError(f"{what} did not listen on port {port} within {timeout:.0f}s; "
                       f"see {proc['log']}")


def wait_serving(state: ClusterState, proc: ProcessRecord, timeout: float) -> None:
    """Until the daemon's grpc.health.v1 says SERVING (a scheduler: its watch cache loaded)."""
    deadline = time.monotonic() + timeout
    said = ""
    while time.monotonic() < deadline:
        if not alive(proc):
            raise ClusterError(f"{proc['name']} exited during start-up; see {proc['log']}")
        said = daemon_health(state, proc)
        if said.startswith("health SERVING"):
            return
        time.sleep(0.1)
    raise ClusterError(f"{proc['name']} was not serving within {timeout:.0f}s ({said});"
                       f" see {proc['log']}")


def make_pki(directory: str) -> TLSRecord:
    """Fresh CAs: the cluster's in DIR/pki, etcd's in DIR/pki/etcd; returns what is recorded."""
    pki_dir = os.path.join(directory, PKI_DIR)
    pki.init_ca_dir(pki_dir, force=True)
    pki.init_ca_dir(os.path.join(pki_dir, ETCD_PKI_DIR), force=True)
    cert, key = pki.issue_to_dir(pki_dir, "admin", force=True)
    return {"dir": pki_dir, "ca": pki.ca_paths(pki_dir)[0], "admin_cert": cert, "admin_key": key}


def tls_flags(state: ClusterState, role: str, name: str,
              sans: tuple[str, ...] = ()) -> list[str]:
    """Issues `name`'s certificate and returns the flags that hand it to the process."""
    info = state.get("tls")
    if info is None:
        return ["--insecure"]
    cert, key = pki.issue_to_dir(info["dir"], role, name, sans, force=True)
    return ["--tls-ca", info["ca"], "--tls-cert", cert, "--tls-key", key]


def etcd_member(i: int) -> str:
    """Member i's (1-based) process name, also its etcd name, data dir and certificate."""
    return ETCD_NAME if i == 1 else f"{ETCD_NAME}{i}"


def is_etcd(proc: ProcessRecord) -> bool:
    name = proc["name"]
    return name == ETCD_NAME or (name.startswith(ETCD_NAME) and name[len(ETCD_NAME):].isdigit())


def etcd_command(etcd: str, directory: str, state: ClusterState, i: int,
                 client_ports: list[int], peer_ports: list[int]) -> list[str]:
    """Member i's command line: loopback only; with TLS, it serves, peers and trusts etcd's CA only.

    Members are distinct processes on distinct loopback ports, each with its
    own data dir, as if on machines of their own.
    """
    name = etcd_member(i)
    data_dir = os.path.join(directory, name)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    os.chmod(data_dir, 0o700)    # whatever the umask: it holds every workload's env
    info = state.get("tls")
    scheme = "https" if info is not None else "http"
    peers = [f"{scheme}://127.0.0.1:{port}" for port in peer_ports]
    client = f"{scheme}://127.0.0.1:{client_ports[i - 1]}"
    argv = [etcd, "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peers[i - 1], "--initial-advertise-peer-urls", peers[i - 1],
            "--initial-cluster", ",".join(f"{etcd_member(j)}={peer}"
                                          for j, peer in enumerate(peers, start=1)),
            # Another cluster's member dialling one of ours by mistake is refused.
            "--initial-cluster-token", f"mctl-{state['id']}"]
    if info is None:
        return argv
    etcd_pki = os.path.join(info["dir"], ETCD_PKI_DIR)
    ca = pki.ca_paths(etcd_pki)[0]
    # One certificate serves clients and peers: the "scheduler" role gives it
    # both server and client use, which etcd wants of a peer certificate.
    cert, key = pki.issue_to_dir(etcd_pki, "scheduler", name, ("127.0.0.1",), force=True)
    return argv + ["--client-cert-auth", "--trusted-ca-file", ca,
                   "--cert-file", cert, "--key-file", key,
                   "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
                   "--peer-cert-file", cert, "--peer-key-file", key]


def encryption_key_file(directory: str) -> str:
    """DIR/encryption.key, the key that seals Secrets in etcd (made once, mode 0600).

    Every scheduler of the cluster reads the same file; it is kept across
    `cluster up` runs on one directory, since the Secrets in etcd need it.
    """
    return _made_once(os.path.join(directory, "encryption.key"), secrets.token_hex)


def _made_once(path: str, token: Callable[[int], str]) -> str:
    """`path` holding token(32), made with mode 0600 if it is not there yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(token(32) + "\n")
    return path


def web_token_file(directory: str) -> str:
    """DIR/web.token, the web view's bearer token (made once, mode 0600).

    Kept across `cluster up` runs on one directory, so an open page's cookie
    stays good after a scheduler restarts.
    """
    return _made_once(os.path.join(directory, WEB_TOKEN_FILE), secrets.token_urlsafe)


def web_view_address(state: ClusterState) -> str:
    """http://127.0.0.1:PORT/?token=... of the first scheduler's web view ("" without one)."""
    for p in state["processes"]:
        listen = _flag(p["argv"], "--web-listen") if p["name"].startswith("scheduler") else ""
        if listen:
            try:
                with open(_flag(p["argv"], "--web-token-file")) as f:
                    token = f.read().strip()
            except OSError:
                return ""
            return f"http://{listen}/?token={token}"
    return ""


def print_web_view(state: ClusterState) -> None:
    address = web_view_address(state)
    if address:
        print(f"web view: open {address} in a browser on this machine (the token is in "
              f"{os.path.join(state['dir'], WEB_TOKEN_FILE)}; docs/webview.md)")


def etcd_client_flags(state: ClusterState, name: str) -> list[str]:
    """The scheduler `name`'s flags for etcd: its client certificate of etcd's CA (none: plain)."""
    info = state.get("tls")
    if info is None:
        return []
    etcd_pki = os.path.join(info["dir"], ETCD_PKI_DIR)
    cert, key = pki.issue_to_dir(etcd_pki, "scheduler", name, force=True)
    return ["--etcd-ca", pki.ca_paths(etcd_pki)[0], "--etcd-cert", cert, "--etcd-key", key]


def admin_credentials(state: ClusterState) -> tls.TLSConfig | None:
    info = state.get("tls")
    if info is None:
        return None
    try:
        return tls.TLSConfig.from_files(info["ca"], info["admin_cert"], info["admin_key"])
    except tls.TLSError as e:
        raise ClusterError(str(e)) from None


def client_config(state: ClusterState) -> dict[str, str]:
    """What the CLI's config.json says about this cluster."""
    doc = {"server": state["server"], "cluster_dir": state["dir"]}
    info = state.get("tls")
    if info is not None:
        doc.update(tls_ca=info["ca"], tls_cert=info["admin_cert"], tls_key=info["admin_key"])
    else:
        doc["insecure"] = "true"
    return doc


def control_stub(state: ClusterState) -> control_pb2_grpc.ControlPlaneStub:
    channel = rpc.make_channel(state["server"], admin_credentials(state),
                               pki.SCHEDULER_SERVER_NAME)
    return control_pb2_grpc.ControlPlaneStub(channel)


def wait_nodes(state: ClusterState, count: int, timeout: float,
               procs: list[ProcessRecord], names: set[str] | None = None) -> None:
    """Waits until `count` nodes (of `names`, if given) are Ready."""
    stub = control_stub(state)
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        for p in procs:
            if not alive(p):
                raise ClusterError(f"{p['name']} exited during start-up; see {p['log']}")
        try:
            nodes = stub.ListNodes(control_pb2.ListRequest(), timeout=2).items
            ready = sum(n.ready for n in nodes if names is None or n.name in names)
            if ready >= count:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise ClusterError(f"only {ready}/{count} nodes became ready within {timeout:.0f}s")


def up(args: argparse.Namespace) -> int:
    if args.nodes > USERNS_MAX_NODES:
        raise ClusterError(f"--nodes {args.nodes}: a local cluster has at most "
                           f"{USERNS_MAX_NODES} nodes (each gets its own window of "
                           "user-namespace host ids)")
    if args.etcd_members not in (1, 3, 5, 7):
        raise ClusterError(f"--etcd-members {args.etcd_members}: 1, 3, 5 or 7 (a quorum is a "
                           "majority: an even count tolerates no more failures than one less)")
    image_gc_flags(args)        # checked before anything is made
    directory = os.path.abspath(args.dir)
    # `mctl --insecure cluster up` means the same as `mctl cluster up --insecure`.
    insecure = args.cluster_insecure or getattr(args, "insecure", False)
    state = load_state(directory)
    if state is not None:
        if holds_data(directory, state):
            return resume(directory, state, args)
        print("a previous `cluster up` in this dir stopped before etcd started; cleaning up "
              "what it made", file=sys.stderr)
        teardown(directory, state)
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else "")
    if not etcd:
        raise ClusterError("etcd not found: install Debian's etcd-server package")
    os.makedirs(directory, exist_ok=True)
    # Cgroups and node names are shared by every cluster on this machine:
    # a short id of the dir keeps two clusters (a demo and a test run) apart.
    cluster_id = hashlib.sha256(directory.encode()).hexdigest()[:6]
    network = plan_network(cluster_id, args)
    host = network["host_ip"]
    members = args.etcd_members
    client_ports, peer_ports = free_ports(members), free_ports(members)
    etcd_endpoints = ",".join(f"127.0.0.1:{port}" for port in client_ports)
    # Several schedulers (--schedulers, for HA) share etcd; agents and the
    # CLI are given all of them and use whichever answers. They listen on
    # the cluster bridge, where agents in their node namespaces reach them.
    scheduler_addresses = [f"{host}:{free_port()}" for _ in range(max(1, args.schedulers))]
    server = ",".join(scheduler_addresses)
    state = {"dir": directory, "id": cluster_id, "server": server,
             "etcd": etcd_endpoints, "processes": [], "nodes": [],
             "network": network, "registry_flags": registry_flags(args),
             "image_gc_flags": image_gc_flags(args)}
    procs = state["processes"]
    try:
        start_network(directory, state)
        if not insecure:
            state["tls"] = make_pki(directory)
        # Every member first: each waits for the others to form a quorum.
        for i in range(1, members + 1):
            name = etcd_member(i)
            print(f"starting {name} on 127.0.0.1:{client_ports[i - 1]}", file=sys.stderr)
            procs.append(spawn(name, etcd_command(etcd, directory, state, i, client_ports,
                                                  peer_ports),
                               os.path.join(directory, f"{name}.log")))
            save_state(directory, state)
        for p in procs:
            wait_port(etcd_client_port(p), 20, p["name"], p)

        for i, address in enumerate(scheduler_addresses, start=1):
            name = "scheduler" if i == 1 else f"scheduler{i}"
            print(f"starting {name} on {address}", file=sys.stderr)
            log_name = "scheduler" if i == 1 else name
            p = spawn(name, [sys.executable, "-m", "mctl.scheduler.main", "--etcd",
                       etcd_endpoints, "--listen", address, "--id", name,
                       "--encryption-key-file", encryption_key_file(directory),
                       "--node-grace", str(args.node_grace),
                       "--cluster-cidr", network["cluster_cidr"],
                       # The web view on loopback: for a browser on this machine.
                       "--web-listen", f"127.0.0.1:{free_port()}",
                       "--web-token-file", web_token_file(directory),
                       "--log-file", os.path.join(directory, f"{log_name}.log")]
                      + etcd_client_flags(state, name)
                      + state.get("registry_flags", [])
                      + tls_flags(state, "scheduler", name, (rpc.host_of(address),)),
                      os.path.join(directory, f"{log_name}.out"))
            procs.append(p)
            save_state(directory, state)
            wait_port(int(address.rsplit(":", 1)[1]), 20, name, p, host=host)

        for i in range(1, args.nodes + 1):
            start_agent(directory, state, i, args)
        wait_nodes(state, args.nodes, args.timeout, procs)
    except (ClusterError, OSError, pki.PKIError) as e:
        print(f"mctl: cluster did not come up: {e}; removing what was started", file=sys.stderr)
        teardown(directory, state)
        raise ClusterError(str(e)) from None
    config.save(client_config(state))
    print(f"cluster up: {args.nodes} node{'s' if args.nodes != 1 else ''}, server {server}, "
          f"{'INSECURE' if insecure else 'mutual TLS, etcd too'} "
          f"(saved in {config.config_path()})")
    print_web_view(state)
    return 0


# Host ids for user-namespace containers: each node of every local cluster on
# this host gets a window of its own (agent --userns-base/--userns-count),
# else root in a container on node1 would be the same host user as root in
# one on node2, or in another cluster's. Windows are claimed host-wide in
# USERNS_WINDOWS_DIR (tmpfs: it goes with the clusters at reboot), by the
# cluster's directory and node name, and freed by `cluster down`.
USERNS_BASE = 100_000
USERNS_SIZE = 65536
USERNS_PER_NODE = 256
USERNS_MAX_NODES = ((1 << 31) - USERNS_BASE) // (USERNS_SIZE * USERNS_PER_NODE)
USERNS_WINDOWS_DIR = "/run/mctl/userns-windows"


def userns_flags(window: int) -> list[str]:
    """The agent flags of window `window` (0 .. USERNS_MAX_NODES-1) of user-namespace host ids."""
    base = USERNS_BASE + window * USERNS_SIZE * USERNS_PER_NODE
    return ["--userns-base", str(base), "--userns-size", str(USERNS_SIZE),
            "--userns-count", str(USERNS_PER_NODE)]


def claim_userns_window(owner: str, directory: str = USERNS_WINDOWS_DIR) -> int:
    """The lowest window no node holds; `owner` is "<cluster dir> <node>".

    A window whose owner's cluster directory is gone (removed without
    `cluster down`) is taken back.
    """
    claims = Claims(directory, str.isdigit)
    with claims.locked() as held:
        for slot, who in list(held.items()):
            if not os.path.isdir(who.rsplit(" ", 1)[0]):
                claims.drop(held, slot, who)
        for window in range(USERNS_MAX_NODES):
            if str(window) not in held and claims.claim(held, str(window), owner):
                return window
    raise ClusterError(f"all {USERNS_MAX_NODES} windows of user-namespace host ids on this "
                       f"host are held by local clusters' nodes ({directory})")


def release_userns_window(window: int, owner: str, directory: str = USERNS_WINDOWS_DIR) -> None:
    claims = Claims(directory, str.isdigit)
    with claims.locked() as held:
        claims.drop(held, str(window), owner)
    claims.remove_if_empty()
    if directory == USERNS_WINDOWS_DIR:
        try:
            os.rmdir(os.path.dirname(directory))  # /run/mctl, if nothing else is there
        except OSError:
            pass


def registry_flags(args: argparse.Namespace) -> list[str]:
    """`up`'s --registry-* flags as the schedulers and agents take them (paths made absolute)."""
    argv = []
    if args.registry_auth:
        argv += ["--registry-auth", os.path.abspath(args.registry_auth)]
    for ca in args.registry_ca:
        argv += ["--registry-ca", os.path.abspath(ca)]
    for host in args.insecure_registry:
        argv += ["--insecure-registry", host]
    return argv


def image_gc_flags(args: argparse.Namespace) -> list[str]:
    """`up`'s --image-gc-high/low as the agents take them (neither: the agents' defaults).

    One given alone brings the other along where the agent's default would
    contradict it (`--image-gc-high 50` means low 50, not the default 80).
    """
    high, low = args.image_gc_high, args.image_gc_low
    if high is None and low is None:
        return []
    high = high if high is not None else max(85.0, low)
    low = low if low is not None else min(80.0, high)
    if not 0 < low <= high <= 100:
        raise ClusterError(f"--image-gc-low {low:g} and --image-gc-high {high:g}: need "
                           "0 < low <= high <= 100")
    return ["--image-gc-high", f"{high:g}", "--image-gc-low", f"{low:g}"]


def start_agent(directory: str, state: ClusterState, i: int,
                args: argparse.Namespace) -> None:
    """Starts node `i`'s agent in its own network namespace, recorded in cluster.json."""
    name = f"node{i}"
    node_dir = os.path.join(directory, "nodes", name)
    cgroup_parent = f"mctl/{state['id']}-{name}"
    network = state["network"]
    os.makedirs(node_dir, exist_ok=True)
    if name not in network["nodes"]:
        cluster_network.plan_node(network, state["id"], i)
        save_state(directory, state)      # recorded before it is made, for `down`
    cluster_network.create_node(network, name)
    windows = state.setdefault("userns_windows", {})
    if name not in windows:
        windows[name] = claim_userns_window(f"{directory} {name}")
        save_state(directory, state)      # recorded before it is used, for `down`
    print(f"starting agent {name}", file=sys.stderr)
    p = spawn(name, [sys.executable, "-m", "mctl.agent.main", "--name", name,
               "--scheduler", state["server"], "--state-dir", node_dir,
               "--cgroup-parent", cgroup_parent, "--cleanup-on-exit",
               "--stop-grace", str(args.stop_grace), "--runtime", args.runtime,
               "--log-file", os.path.join(directory, f"{name}.log")]
              + cluster_network.agent_flags(network, name)
              + userns_flags(windows[name])
              + state.get("registry_flags", [])
              + state.get("image_gc_flags", [])
              + tls_flags(state, "agent", name),
              os.path.join(directory, f"{name}.out"))
    state["processes"].append(p)
    state["nodes"].append({"name": name, "state_dir": node_dir,
                           "cgroup_parent": cgroup_parent, "runtime": args.runtime})
    save_state(directory, state)


def grow(directory: str, state: ClusterState, have: int, args: argparse.Namespace) -> int:
    """`up --nodes N` on a running cluster with fewer nodes: the missing ones join it."""
    procs = state["processes"]
    try:
        for i in range(have + 1, args.nodes + 1):
            start_agent(directory, state, i, args)
        wait_nodes(state, args.nodes, args.timeout, procs)
    except (ClusterError, OSError, pki.PKIError,
            cluster_network.NetworkSetupError) as e:
        # The cluster was running before: keep it; what did not come up is
        # in cluster.json, so `down` removes it.
        raise ClusterError(f"new nodes did not come up: {e}") from None
    print(f"cluster grew: {have} -> {args.nodes} nodes, server {state['server']}")
    return 0


def holds_data(directory: str, state: ClusterState) -> bool:
    """Whether the cluster may hold workloads: its etcd was started (or left a data dir)."""
    return (any(is_etcd(p) for p in state["processes"])
            or os.path.isdir(os.path.join(directory, ETCD_NAME)))


def resume(directory: str, state: ClusterState, args: argparse.Namespace) -> int:
    """`up` on a cluster that holds data: restart the dead, grow to --nodes, never wipe."""
    dead = [p for p in state["processes"] if not alive(p)]
    config.save(client_config(state))
    if dead:
        restart(directory, state, dead, args.timeout)
    have = len(state["nodes"])
    if args.nodes > have:
        return grow(directory, state, have, args)
    if dead:
        print(f"cluster running again: restarted {', '.join(p['name'] for p in dead)}; "
              f"{have} nodes, server {state['server']}")
    else:
        print(f"cluster already running: {have} nodes, server {state['server']}")
    print_web_view(state)
    return 0


def _start_order(proc: ProcessRecord) -> int:
    # etcd before the schedulers that need it, schedulers before the agents
    # that register with them.
    name = proc["name"]
    return 0 if is_etcd(proc) else 1 if name.startswith("scheduler") else 2


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else ""


def etcd_client_port(proc: ProcessRecord) -> int:
    """The port of an etcd member's recorded --listen-client-urls (one URL)."""
    return int(_flag(proc["argv"], "--listen-client-urls").rsplit(":", 1)[1])


def restart(directory: str, state: ClusterState, dead: list[ProcessRecord],
            timeout: float) -> None:
    """Starts each dead process again with its recorded command line and waits until it serves.

    The data stays whatever fails: the error says what, and `up` may be run again.
    """
    network = state.get("network")
    agents: set[str] = set()
    for p in sorted(dead, key=_start_order):
        print(f"{p['name']} is not running (pid {p['pid']}); restarting it with its recorded "
              "command line", file=sys.stderr)
        try:
            if network and p["name"] in network["nodes"]:
                with cluster_network.lock():
                    for made in cluster_network.ensure_node(network, p["name"]):
                        print(f"made again {made}", file=sys.stderr)
            new = spawn(p["name"], p["argv"], p["log"])
            p["pid"], p["start_time"] = new["pid"], new["start_time"]
            save_state(directory, state)
            if is_etcd(p):
                wait_port(etcd_client_port(p), 20, p["name"], p)
            elif p["name"].startswith("scheduler"):
                host, _, port = _flag(p["argv"], "--listen").rpartition(":")
                wait_port(int(port), 20, p["name"], p, host=host)
                # Listening is not serving: reads fail until its watch cache
                # is loaded, and the user's next command would be one of them.
                wait_serving(state, p, 30)
            else:
                agents.add(p["name"])
        except (OSError, ValueError, cluster_network.NetworkSetupError) as e:
            raise ClusterError(f"{p['name']} did not restart: {e}; see {p['log']} (the "
                               "cluster's data is kept: run `mctl cluster up` again)") from None
    if agents:
        try:
            wait_nodes(state, len(agents), timeout, state["processes"], agents)
        except ClusterError as e:
            raise ClusterError(f"{e} (the cluster's data is kept)") from None


def _node_process(state: ClusterState, node: str) -> ProcessRecord:
    names = [n["name"] for n in state["nodes"]]
    if node not in names:
        raise ClusterError(f"no node {node!r} in this cluster (nodes: {', '.join(names)})")
    return next(p for p in state["processes"] if p["name"] == node)


def _kill_agent(proc: ProcessRecord) -> None:
    """SIGKILL, as a machine loses its agent: with the local cluster's --cleanup-on-exit
    a SIGTERM would remove every container; a killed agent leaves them running."""
    try:
        os.kill(proc["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while alive(proc):
        if time.monotonic() > deadline:
            raise ClusterError(f"{proc['name']}'s agent (pid {proc['pid']}) did not die "
                               "within 10s of SIGKILL")
        time.sleep(0.05)


def _load(args: argparse.Namespace, what: str = "NODE") -> tuple[str, ClusterState]:
    """The cluster of --dir, for a verb that takes an argument (`what`, e.g. NODE)."""
    directory = os.path.abspath(args.dir)
    state = load_state(directory)
    if state is None:
        raise ClusterError(f"no cluster in {directory}")
    if not args.target:
        raise ClusterError(f"cluster {args.action} needs {what}, e.g. `mctl cluster "
                           f"{args.action} {'node1' if what == 'NODE' else 'backup.db'}`")
    return directory, state


def stop_node(args: argparse.Namespace) -> int:
    _, state = _load(args)
    proc = _node_process(state, args.target)
    if not alive(proc):
        print(f"{args.target}: agent already stopped")
        return 0
    _kill_agent(proc)
    print(f"{args.target}: agent stopped (SIGKILL); its containers keep running, as on a "
          f"machine whose agent died. The node turns NotReady; after --node-grace its "
          f"replicas move. `mctl cluster restart-node {args.target}` starts it again.")
    return 0


def restart_node(args: argparse.Namespace) -> int:
    directory, state = _load(args)
    proc = _node_process(state, args.target)
    if alive(proc):
        _kill_agent(proc)
    restart(directory, state, [proc], args.timeout)
    print(f"{args.target}: agent restarted (pid {proc['pid']}); it adopted the containers "
          "it had left running")
    return 0


# -- backup and restore: etcd snapshots, with Debian's etcdctl (etcd-client) ------


def _etcdctl() -> str:
    path = shutil.which("etcdctl")
    if not path:
        raise ClusterError("etcdctl not found: install Debian's etcd-client package")
    return path


def _etcdctl_run(argv: list[str], what: str) -> None:
    # ETCDCTL_API=3: Debian's 3.4 etcdctl defaults to it, older ones do not.
    # umask 077: a snapshot holds every workload's env.
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={**os.environ, "ETCDCTL_API": "3"}, umask=0o077, timeout=120)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ClusterError(f"{what}: {last[-1] if last else f'etcdctl exited {done.returncode}'}")


def _etcdctl_tls(state: ClusterState, proc: ProcessRecord) -> list[str]:
    """The client flags etcd wants of a caller: a scheduler's etcd certificate."""
    if "--client-cert-auth" not in proc["argv"]:
        return []
    info = state.get("tls")
    if info is None:
        raise ClusterError("etcd wants client certificates but the cluster records no pki")
    etcd_pki = os.path.join(info["dir"], ETCD_PKI_DIR)
    cert, key = pki.leaf_paths(etcd_pki, "scheduler")
    return ["--cacert", pki.ca_paths(etcd_pki)[0], "--cert", cert, "--key", key]


def backup(args: argparse.Namespace) -> int:
    """An etcd snapshot of the whole cluster state into FILE (mode 0600)."""
    directory, state = _load(args, "FILE")
    target = os.path.abspath(args.target)
    etcdctl = _etcdctl()
    members = [p for p in state["processes"] if is_etcd(p) and alive(p)]
    if not members:
        raise ClusterError("no etcd member is running: `mctl cluster up` first")
    errors = []
    for p in members:      # any one member holds the whole state
        url = _flag(p["argv"], "--listen-client-urls")
        try:
            _etcdctl_run([etcdctl, "--endpoints", url, *_etcdctl_tls(state, p),
                          "snapshot", "save", target], f"snapshot from {p['name']}")
        except ClusterError as e:
            errors.append(str(e))
            continue
        os.chmod(target, 0o600)
        print(f"backed up the cluster state to {target} ({os.path.getsize(target)} bytes, "
              f"from {p['name']}); restore it with `mctl cluster restore {args.target}`")
        return 0
    raise ClusterError("; ".join(errors))


def restore(args: argparse.Namespace) -> int:
    """Replaces etcd's data with a snapshot, then restarts etcd, schedulers and agents.

    Every member is rebuilt from the snapshot with its recorded name and peer
    URLs (etcdctl snapshot restore), the data it had kept aside until the
    new one serves. Agents are restarted too (their containers keep running
    and are adopted): they refuse desired sets older than the last they saw,
    and a restored etcd counts revisions from the snapshot's again.
    """
    directory, state = _load(args, "FILE")
    source = os.path.abspath(args.target)
    if not os.path.isfile(source):
        raise ClusterError(f"{args.target}: no such snapshot file")
    etcdctl = _etcdctl()
    procs = state["processes"]
    members = [p for p in procs if is_etcd(p)]
    schedulers = [p for p in procs if p["name"].startswith("scheduler")]
    agents = [p for p in procs if p["name"] in {n["name"] for n in state["nodes"]}]
    # Nothing may write while etcd is replaced: schedulers first, then etcd.
    print("stopping the schedulers and etcd", file=sys.stderr)
    _signal_and_wait(schedulers, 10)
    _signal_and_wait(members, 10)
    restored: list[tuple[str, str]] = []       # (data dir, its new data)
    try:
        for p in members:
            data_dir = _flag(p["argv"], "--data-dir")
            fresh = f"{data_dir}.restore"
            shutil.rmtree(fresh, ignore_errors=True)
            _etcdctl_run([etcdctl, "snapshot", "restore", source, "--name",
                          _flag(p["argv"], "--name"), "--data-dir", fresh,
                          "--initial-cluster", _flag(p["argv"], "--initial-cluster"),
                          "--initial-cluster-token",
                          _flag(p["argv"], "--initial-cluster-token") or "etcd-cluster",
                          "--initial-advertise-peer-urls",
                          _flag(p["argv"], "--initial-advertise-peer-urls")],
                         f"restoring {p['name']}'s data from {args.target}")
            restored.append((data_dir, fresh))
    except ClusterError:
        for _, fresh in restored:
            shutil.rmtree(fresh, ignore_errors=True)
        # The old data is untouched: bring the cluster back as it was.
        restart(directory, state, [p for p in procs if not alive(p)], args.timeout)
        raise
    for data_dir, fresh in restored:
        os.chmod(fresh, 0o700)
        os.rename(data_dir, f"{data_dir}.before-restore")
        os.rename(fresh, data_dir)
    for p in agents:
        if alive(p):
            _kill_agent(p)
    restart(directory, state, [p for p in procs if not alive(p)], args.timeout)
    for data_dir, _ in restored:
        shutil.rmtree(f"{data_dir}.before-restore", ignore_errors=True)
    print(f"restored the cluster state from {args.target}: etcd, schedulers and agents "
          "restarted; the nodes now converge to it")
    return 0


def _signal_and_wait(procs: list[ProcessRecord], timeout: float) -> None:
    for p in procs:
        if alive(p):
            try:
                os.kill(p["pid"], signal.SIGTERM)
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
                os.kill(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap(procs)


def _reap(procs: list[ProcessRecord]) -> None:
    # Processes started by this very CLI process are its children: reap them,
    # or they linger as zombies that still look alive.
    for p in procs:
        try:
            os.waitpid(p["pid"], os.WNOHANG)
        except ChildProcessError:
            pass


def plan_network(cluster_id: str, args: argparse.Namespace) -> cluster_network.NetworkPlan:
    """Chooses the node network and checks both CIDRs; makes nothing yet."""
    # Namespaces and links a crashed earlier cluster of this dir left behind.
    for what in cluster_network.remove(cluster_id, None):
        print(f"removed leftover {what}", file=sys.stderr)
    try:
        with cluster_network.lock():
            return cluster_network.choose(cluster_id, args.nodes, args.node_cidr,
                                          args.cluster_cidr)
    except cluster_network.NetworkSetupError as e:
        raise ClusterError(str(e)) from None


def start_network(directory: str, state: ClusterState) -> None:
    """Makes the host bridge and every node's namespace, recorded in cluster.json first."""
    network = state["network"]
    save_state(directory, state)
    with cluster_network.lock():
        taken = [f"{dst} dev {dev}" for dst, dev in cluster_network.host_routes()
                 if dst.overlaps(ipaddress.ip_network(network["node_cidr"]))]
        if taken:
            raise ClusterError(f"node network {network['node_cidr']} was just taken by "
                               f"{taken[0]}; run `mctl cluster up` again")
        print(f"network: bridge {network['bridge']} {network['host_ip']}, nodes in "
              f"{network['node_cidr']}, containers from {network['cluster_cidr']}",
              file=sys.stderr)
        cluster_network.create_bridge(network)


def remove_network(cluster_id: str, network: cluster_network.NetworkPlan | None) -> None:
    """Removes the cluster's namespaces and links: recorded ones and any named for it."""
    cluster_network.remove(cluster_id, network)


def teardown(directory: str, state: ClusterState) -> None:
    procs = state.get("processes", [])
    agents = [p for p in procs if p["name"].startswith("node")]
    others = [p for p in procs if p not in agents]
    _signal_and_wait(agents, 60)
    # The scheduler before etcd, so it does not log a storm of etcd errors.
    _signal_and_wait([p for p in others if p["name"].startswith("scheduler")], 10)
    _signal_and_wait([p for p in others if is_etcd(p)], 10)
    sweeps = []
    for node in state.get("nodes", []):
        # Sweep what a crashed agent may have left: containers, mounts,
        # cgroups, its node network. The nodes are independent: all at once.
        sweeps.append(subprocess.Popen(
            [sys.executable, "-m", "mctl.agent.main", "cleanup",
             "--name", node["name"], "--state-dir", node["state_dir"],
             "--cgroup-parent", node["cgroup_parent"], "--stop-grace", "1",
             "--runtime", node.get("runtime", "native")]
            + cluster_network.cleanup_flags(state.get("network"), node["name"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for sweep in sweeps:
        sweep.wait()
    remove_network(state["id"], state.get("network"))
    windows = state.get("userns_windows", {})
    for name, window in windows.items():
        release_userns_window(window, f"{directory} {name}")
    shutil.rmtree(directory, ignore_errors=True)
    config.forget_cluster(directory)


def down(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    state = load_state(directory)
    if state is None:
        if os.path.isdir(directory):
            shutil.rmtree(directory, ignore_errors=True)
        # Without cluster.json, namespaces and links are still found by name.
        remove_network(hashlib.sha256(directory.encode()).hexdigest()[:6], None)
        print(f"no cluster in {directory}")
        return 0
    teardown(directory, state)
    print("cluster down: every process stopped, containers and data removed")
    return 0


def daemon_health(state: ClusterState, proc: ProcessRecord) -> str:
    """What a scheduler's or agent's grpc.health.v1 service says: "health SERVING, leader"."""
    from mctl.common import health
    address = _flag(proc["argv"], "--advertise") or _flag(proc["argv"], "--listen")
    if not address or address.endswith(":0"):
        return "health: address unknown"
    scheduler = proc["name"].startswith("scheduler")
    name = pki.SCHEDULER_SERVER_NAME if scheduler else pki.node_server_name(proc["name"])
    channel = rpc.make_channel(address, admin_credentials(state), name)
    try:
        overall = health.check(channel, health.OVERALL, timeout=2)
        if scheduler and overall == "SERVING":
            leading = health.check(channel, health.LEADER, timeout=2) == "SERVING"
            return f"health {overall}, {'leader' if leading else 'follower'}"
        return f"health {overall}"
    finally:
        channel.close()


def status(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.dir)
    state = load_state(directory)
    if state is None:
        print(f"no cluster in {directory}")
        return 1
    etcd_tls = any("--client-cert-auth" in p["argv"] for p in state["processes"] if is_etcd(p))
    print(f"cluster in {directory}, server {state['server']}, etcd {state['etcd']} "
          f"({'mutual TLS, its own CA' if etcd_tls else 'plain text'})")
    info = state.get("tls")
    print(f"transport: mutual TLS, certificates in {info['dir']}" if info is not None
          else "transport: INSECURE (plain text, no authentication)")
    for p in state["processes"]:
        running = alive(p)
        readiness = f"  {daemon_health(state, p)}" if running and not is_etcd(p) else ""
        print(f"  {p['name']:<10} pid {p['pid']:<8} {'running' if running else 'STOPPED'}"
              f"{readiness}")
    if state.get("network"):
        print("\n".join(cluster_network.describe(state["network"])))
    print_web_view(state)
    stub = control_stub(state)
    try:
        nodes = stub.ListNodes(control_pb2.ListRequest(), timeout=3).items
        ready = sum(n.ready for n in nodes)
        print(f"nodes ready: {ready}/{len(nodes)}")
        leader = stub.ClusterInfo(control_pb2.ClusterInfoRequest(), timeout=3).leader
        print(f"leader: {leader or '<none yet>'}")
    except grpc.RpcError as e:
        details = (e.details() or "") if isinstance(e, grpc.Call) else str(e)
        why = tls.explain_failure(details, "tls" in state)
        print(f"the scheduler does not answer{': TLS handshake failed: ' + why if why else ''}")
        return 1
    return 0 if all(alive(p) for p in state["processes"]) else 1


def cmd_cluster(args: argparse.Namespace) -> int:
    from .client import CliError
    if os.geteuid() != 0 and args.action != "status":
        raise CliError(f"cluster {args.action} must run as root (namespaces, cgroups, mounts)")
    try:
        return {"up": up, "down": down, "status": status, "stop-node": stop_node,
                "restart-node": restart_node, "backup": backup,
                "restore": restore}[args.action](args)
    except ClusterError as e:
        raise CliError(str(e)) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("cluster", help="a local cluster on this machine: up, down, status, "
                                       "stop-node, restart-node, backup, restore")
    c.add_argument("action", choices=["up", "down", "status", "stop-node", "restart-node",
                                      "backup", "restore"],
                   help="up: start the cluster, or restart its dead processes and add "
                        "missing nodes (keeps every workload); down: stop everything and "
                        "remove all state; stop-node NODE: kill the node's agent (its "
                        "containers keep running); restart-node NODE: start it again; "
                        "backup FILE: an etcd snapshot of the whole state; restore FILE: "
                        "replace the state with a snapshot")
    c.add_argument("target", nargs="?", default="", metavar="NODE|FILE",
                   help="stop-node, restart-node: the node; backup, restore: the snapshot")
    c.add_argument("--nodes", type=int, default=1)
    c.add_argument("--dir", default=default_dir(), help="where the cluster keeps its state")
    c.add_argument("--stop-grace", type=float, default=3.0,
                   help="seconds agents wait between TERM and KILL when stopping containers")
    c.add_argument("--timeout", type=float, default=60.0)
    c.add_argument("--runtime", default="native",
                   help="up: the agents' container runtime: native, runc, crun, mctl-runtime "
                        "or a path")
    c.add_argument("--schedulers", type=int, default=1,
                   help="up: scheduler processes (more than one: leader election, failover)")
    c.add_argument("--node-grace", type=float, default=10.0, metavar="SECONDS",
                   help="up: how long a node may be NotReady before its replicas move")
    c.add_argument("--node-cidr", default="",
                   help="up: the nodes' network on the host bridge (default: a free /24 "
                        f"of {cluster_network.NODE_CIDR_POOL})")
    c.add_argument("--cluster-cidr", default=cluster_network.DEFAULT_CLUSTER_CIDR,
                   help="up: containers' addresses; each node gets a /24 of it")
    c.add_argument("--etcd-members", type=int, default=1, metavar="N",
                   help="up: etcd members (1, 3, 5 or 7), each its own process on its own "
                        "loopback ports; the schedulers take every one and fail over")
    c.add_argument("--insecure", dest="cluster_insecure", action="store_true",
                   help="up: plain-text gRPC and etcd, no certificates (anyone on the host "
                        "may call agents and read or change etcd)")
    # up: given to the schedulers and every agent (kept in cluster.json for
    # restart-node); the cluster CA is trusted for registries without a flag.
    skopeo.add_flags(c)
    c.add_argument("--image-gc-high", type=float, default=None, metavar="PERCENT",
                   help="up: every agent's --image-gc-high (default: the agent's, 85)")
    c.add_argument("--image-gc-low", type=float, default=None, metavar="PERCENT",
                   help="up: every agent's --image-gc-low (default: the agent's, 80)")
    c.set_defaults(fn=cmd_cluster)
