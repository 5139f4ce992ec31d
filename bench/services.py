"""Services: endpoint propagation to every node, the cost of the virtual IP, DNS answers per second.

    .venv/bin/python bench/services.py [--changes 30] [--requests 500] [--queries 5000]

Not a test; needs root. On a local 3-node cluster (`mctl cluster up` in a
temporary --dir and MCTL_HOME):

- propagation: `bench` (busybox httpd, one port, no readiness check, so
  ready when Running) is scaled from 3 to 4 replicas and back, `--changes`
  times. Timed from the moment etcd announces the new replica Running
  (bench/_common.py's ReplicaWatch) until its address is in the balancing
  rule of every node's services table. Each node's table is followed by an
  `nft monitor` in its namespace (one process per node, event-driven: no
  polling load, no polling resolution), which prints the rule the agent
  writes, so the time is the one the kernel had the new rule by.
- VIP cost: `solo`, one replica, fetched by a Python client in the
  network namespace of a `bench` container (the host's Python, the
  container's network) alternately through its virtual IP and straight at its address
  (`--requests` of each, a new TCP connection each as a browser or wget
  would open): the only difference is the nat lookup and DNAT. Timed from
  connect to the first bytes of the answer. `solo` gets a whole core:
  with 10m its CFS quota delayed about half of the answers by 100 or 200
  ms either way (seen in a first version), which hid everything else.
- DNS: a Python UDP client in the same container namespace sends
  `--queries` A queries for `bench.default.mctl` to its node's responder
  (the bridge address its resolv.conf names),
  keeping 32 in flight; answers per second, three runs.

Everything the run makes is removed at the end (`cluster down`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

from _common import (
    PYTHON,
    Cleanup,
    LocalCluster,
    ReplicaWatch,
    Table,
    check_leftovers,
    print_header,
    temp_dir,
)

BASE_REPLICAS = 3
IPV4 = re.compile(r"\b\d+\.\d+\.\d+\.\d+\b")
HTTPD = ('mkdir -p /www && echo "$HOSTNAME" > /www/index.html && '
         "exec httpd -f -p 8080 -h /www")


def workload(name: str, replicas: int, cpu: str = "10m") -> str:
    return f"""\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c", {json.dumps(HTTPD)}]
  ports: [{{containerPort: 8080}}]
  resources: {{cpu: {cpu}, memory: 16Mi}}
"""


class RuleMonitor:
    """`nft monitor rules` in one node's namespace: when each address entered the chain's rule.

    The agent writes the table whole, so every change prints the service's
    balancing rule again with all its endpoints; an address seen in a rule
    for the first time since it was last absent is an arrival.
    """

    def __init__(self, netns: str, chain: str) -> None:
        self.chain = chain
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._present: set[str] = set()
        self._cond = threading.Condition()
        # stdbuf: nft's stdout is a pipe here, line-buffered so each event comes at once.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "stdbuf", "-oL", "nft", "monitor", "rules"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            if f" {self.chain} " not in line or "numgen" not in line:
                continue
            with self._cond:
                if line.startswith("add "):
                    ips = set(IPV4.findall(line.split("map", 1)[-1]))
                    for ip in ips - self._present:
                        self.arrivals[ip].append(now)
                    self._present = ips
                elif line.startswith("delete "):
                    self._present = set()
                self._cond.notify_all()

    def arrival(self, ip: str, after: float, timeout: float) -> float:
        """When `ip` entered the rule at or after `after`."""
        def found() -> float:
            return next((t for t in self.arrivals.get(ip, []) if t >= after), 0.0)

        with self._cond:
            if not self._cond.wait_for(found, timeout):
                raise TimeoutError(f"{ip} not in {self.chain} within {timeout:.0f} s")
            return found()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def replica_ips(cluster: LocalCluster, workload_name: str) -> dict[str, str]:
    items = json.loads(cluster.mctl("get", "replicas", "-o", "json").stdout)["items"]
    return {r["metadata"]["name"]: r.get("status", {}).get("ip", "") for r in items
            if r.get("workload") == workload_name}


def propagation(cluster: LocalCluster, watch: ReplicaWatch, monitors: list[RuleMonitor],
                path: Path, changes: int) -> list[float]:
    samples = []
    for _ in range(changes):
        path.write_text(workload("bench", BASE_REPLICAS + 1))
        cluster.mctl("apply", "-f", str(path))
        watch.wait("a 4th replica Running", lambda w: w.running_n["bench"] > BASE_REPLICAS, 60)
        new = max(watch.of("bench"), key=lambda p: p.placed)
        name = next(k for k, p in watch.replicas.items() if p is new).rsplit("/", 1)[-1]
        ip = ""
        deadline = time.monotonic() + 10
        while not ip and time.monotonic() < deadline:
            ip = replica_ips(cluster, "bench").get(name, "")
        if not ip:
            raise RuntimeError(f"replica {name} has no address")
        seen = [m.arrival(ip, new.placed, 10) for m in monitors]
        samples.append((max(seen) - new.running) * 1000)
        path.write_text(workload("bench", BASE_REPLICAS))
        cluster.mctl("apply", "-f", str(path))
        watch.wait("back to 3 replicas", lambda w: w.count_n["bench"] == BASE_REPLICAS, 60)
    return samples


CLIENT = textwrap.dedent("""\
    import json, socket, sys, time
    vip, direct, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    req = b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n"
    def get(addr):
        t0 = time.perf_counter()
        with socket.create_connection((addr, 8080), timeout=5) as s:
            s.sendall(req)
            s.recv(4096)
        return (time.perf_counter() - t0) * 1000
    out = {"vip": [], "direct": []}
    for _ in range(20):                       # warm-up: ARP, conntrack, caches
        get(vip); get(direct)
    for i in range(n):
        for k, a in (("vip", vip), ("direct", direct))[:: 1 if i % 2 else -1]:
            out[k].append(get(a))
    print(json.dumps(out))
""")

DNS_CLIENT = textwrap.dedent("""\
    import json, os, select, socket, struct, sys, time
    server, n, window = sys.argv[1], int(sys.argv[2]), 32
    def query(qid):
        name = b"".join(bytes([len(p)]) + p for p in b"bench.default.mctl".split(b".")) + b"\\0"
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.setblocking(False)
    sent = answered = errors = 0
    t0 = time.perf_counter()
    last = t0
    while answered + errors < n:
        while sent < n and sent - answered - errors < window:
            s.send(query(sent & 0xFFFF)); sent += 1
        r, _, _ = select.select([s], [], [], 1.0)
        if not r:                              # lost: count and refill the window
            errors += sent - answered - errors
            continue
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                break
            if data[3] & 0x0F == 0 and struct.unpack("!H", data[6:8])[0] >= 1:
                answered += 1
            else:
                errors += 1
    elapsed = time.perf_counter() - t0
    print(json.dumps({"qps": answered / elapsed, "answered": answered, "errors": errors}))
""")


def in_netns(ns: str, *argv: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"in namespace {ns}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--queries", type=int, default=5000)
    args = parser.parse_args()
    print_header("bench/services.py: endpoint propagation, the VIP's cost, DNS answers")
    with Cleanup() as stack:
        base = temp_dir(stack, "services")
        cluster = LocalCluster(stack, base, 3)
        cluster_id = cluster.id
        watch = ReplicaWatch(cluster.etcd, tls=cluster.etcd_tls)
        stack.callback(watch.close)
        bench, solo = base / "bench.yaml", base / "solo.yaml"
        bench.write_text(workload("bench", BASE_REPLICAS))
        # A whole core: with a small cpu limit the CFS quota (per 100 ms
        # period) holds httpd back 100 or 200 ms on many requests, either way.
        solo.write_text(workload("solo", 1, cpu="1"))
        cluster.mctl("apply", "-f", str(bench), "--wait", "--timeout", "120")
        cluster.mctl("apply", "-f", str(solo), "--wait", "--timeout", "120")
        monitors = []
        for node in ("node1", "node2", "node3"):
            m = RuleMonitor(cluster.state["network"]["nodes"][node]["netns"],
                            "svc_default_bench")
            stack.callback(m.close)
            monitors.append(m)
        time.sleep(1)                          # the monitors are listening
        spread = propagation(cluster, watch, monitors, bench, args.changes)

        # The client runs in the network namespace of a container (a replica
        # of bench), as a container's client would: the node namespaces of a
        # local cluster have no default route, so a connection the node itself
        # opens to a VIP finds no route before nat output could DNAT it.
        items = json.loads(cluster.mctl("get", "replicas", "-o", "json").stdout)["items"]
        host = next(r for r in items if r.get("workload") == "bench"
                    and r.get("status", {}).get("phase") == "Running")
        node = host["node"]
        client_ns = f"{cluster.state['network']['nodes'][node]['netns']}-default_" \
                    f"{host['metadata']['name']}"
        # That node's own view: its DNS address and the VIP its table balances.
        view = cluster.mctl("debug", "node", node, "services").stdout
        dns_at = re.search(r"dns: (\S+):53", view)
        vip_of = re.search(r"default/solo\s+(\d+\.\d+\.\d+\.\d+)", view)
        if dns_at is None or vip_of is None:
            raise RuntimeError(f"{node} has no DNS responder or no VIP for solo:\n{view}")
        vip = vip_of.group(1)
        direct = next(iter(replica_ips(cluster, "solo").values()))
        times = json.loads(in_netns(client_ns, PYTHON, "-c", CLIENT, vip, direct,
                                    str(args.requests)))
        dns = [json.loads(in_netns(client_ns, PYTHON, "-c", DNS_CLIENT, dns_at.group(1),
                                   str(args.queries))) for _ in range(3)]

    table = Table(f"endpoint propagation, 3-node local cluster ({args.changes} changes): "
                  "replica Running in etcd -> its address in every node's nft rule", "ms")
    s = table.add("Running -> in all 3 nodes' tables", spread)
    ordered = sorted(spread)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    table.note(f"p99 {p99:.1f} ms (aim: under 200 ms; median {s.median:.1f} ms)")
    table = Table(f"one HTTP request (connect to first bytes of the answer), new TCP connection "
                  f"each, from a container on {node} to the one replica of solo "
                  f"({args.requests} each, alternating)", "ms")
    table.add(f"through the virtual IP {vip}", times["vip"])
    table.add(f"straight to the replica {direct}", times["direct"])
    table.ratio("VIP / direct", f"through the virtual IP {vip}",
                f"straight to the replica {direct}")
    table = Table(f"DNS: A bench.default.mctl from a container to {node}'s {dns_at.group(1)}:53, "
                  f"{args.queries} queries, 32 in flight (3 runs)", "answers/s")
    table.add("answered per second", [d["qps"] for d in dns])
    table.note("errors or lost: " + ", ".join(str(d["errors"]) for d in dns))
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()
