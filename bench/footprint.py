"""Memory: the scheduler, an idle agent, and what each running replica adds on a node.

    .venv/bin/python bench/footprint.py [--levels 1,10,100] [--samples 5] [--restarts 5]
    .venv/bin/python bench/footprint.py --before DIR [--rounds 3]   # idle agent, two trees

Not a test; needs root. On a local 1-node cluster (`mctl cluster up` in a
temporary --dir and MCTL_HOME): RSS and PSS (from /proc/PID/smaps_rollup)
of the scheduler, etcd and the idle agent and its zygote; then one busybox
`sleep` workload is scaled to 1, 10 and 100 replicas and, once all are
Running and the agent's usage sampler has run, the extra memory per replica
is measured: the growth of the agent and zygote plus every monitor process,
divided by the replicas. The containers' own processes (`sleep`) are not
counted. PSS splits pages shared between processes (monitors are forks of
the zygote and share most of its pages), so PSS is the fair per-replica
figure and RSS an upper bound.

Each level is sampled several times a second apart: the spread is over
those samples. Kernel objects of a container (cgroups, network namespace,
veth, overlay mount) are not in any process's RSS and are not counted.

Last, the agent's start-up: it is stopped (SIGTERM) and started again with
the argv `cluster up` recorded, several times, and timed from the spawn to
its "agent serving" log line (mutual TLS, the node's namespace, an
existing state dir: a restart, as after an upgrade).

Then what the idle agent's RSS is made of (from /proc/PID/smaps): its
threads, anonymous memory (Python objects, malloc) against pages of mapped
files (the interpreter, gRPC's C core, shared libraries; shared with other
processes, so their PSS is lower), and the fresh-interpreter RSS after each
group of the agent's imports.

With --metrics, the idle agent restarted with --metrics-listen and
scraped 200 times (wall time and the agent's CPU per scrape); with
--before too, in both trees' clusters.

With --before DIR (a folder holding `mctl/` with agent, scheduler, cli,
common and v1 of another tree, e.g. a `git worktree` of HEAD with
symlinks, as bench/apply.py takes), only the idle agent is measured, in
1-node clusters of that tree (PYTHONPATH) and of this one in turns, so load
from elsewhere falls on both alike; each tree's import cost is measured
between rounds. Run it with bytecode written (`env -u
PYTHONDONTWRITEBYTECODE`, or PYTHONPYCACHEPREFIX): a module compiled at
start leaves its garbage in the process.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter

from _common import (
    PYTHON,
    AgentProcesses,
    Cleanup,
    LocalCluster,
    ReplicaWatch,
    Table,
    agent_processes,
    check_leftovers,
    cpu_seconds,
    exited,
    memory_of,
    print_header,
    running_count,
    temp_dir,
    wait_for,
    workload_yaml,
)

MiB = 2**20
SETTLE = 6.0   # seconds: the agent's usage sampler runs every 5 s


def sample(procs: AgentProcesses) -> dict[str, tuple[int, int]]:
    out = {"agent": memory_of(procs.agent), "zygote": memory_of(procs.zygote)}
    rss = pss = 0
    for pid in procs.monitors:
        try:
            r, p = memory_of(pid)
        except OSError:
            continue   # exited meanwhile
        rss, pss = rss + r, pss + p
    out["monitors"] = (rss, pss)
    return out


# What the agent's RSS is made of: a fresh interpreter's RSS after importing
# each group of modules, in the order the agent imports them. The agent
# defers gRPC's asyncio half and protobuf's pure-Python classes before it
# imports grpc (common/lazyload.py); the rows do the same.
_DEFER = ("from mctl.common import lazyload; lazyload.defer(lazyload.GRPC_ASYNCIO + "
          "lazyload.GRPC_BUNDLED_ROOTS + lazyload.PROTOBUF_PYTHON)\n")
_API = _DEFER + "import grpc, mctl.v1.agent_pb2_grpc, mctl.v1.node_pb2_grpc"
IMPORTS = [
    ("python alone", ""),
    ("+ grpc as a plain import would load it", "import grpc"),
    ("+ grpc, its asyncio half deferred", _DEFER + "import grpc"),
    ("+ protobuf and mctl's API", _API),
    ("+ mctl's netlink client (common.rtnetlink)", _API + ", mctl.common.rtnetlink"),
    ("mctl.agent.main (everything the agent imports)", "import mctl.agent.main"),
    # Deferred or imported where used (tests/unit/test_agent_imports.py):
    # what each would add were it imported at start.
    ("  (+ hashlib, i.e. OpenSSL's libcrypto)", "import mctl.agent.main, hashlib"),
    ("  (+ the image archive code, with tarfile)",
     "import mctl.agent.main, mctl.agent.images.archive, mctl.agent.images.early"),
    # Not imported by the agent any more (tls.py checks certificates in a
    # forked child; authz.py reads callers' names with certname.py): the
    # megabytes that saves.
    ("  (+ cryptography, were it imported)", "import mctl.agent.main, cryptography.x509"),
    ("mctl.agent.runtime.zygote (the zygote)", "import mctl.agent.runtime.zygote"),
]
# Mapped files whose presence in the agent is a regression worth a line.
UNWANTED = ("pyroute2", "cryptography", "libcrypto", "libssl", "_ssl.")


def restart_times(cluster: LocalCluster, name: str, runs: int) -> list[float]:
    """Milliseconds from spawning agent `name` again to its "agent serving" log line."""
    times = []
    log = cluster.log(name)
    for _ in range(runs):
        pid = cluster.pid(name)
        os.kill(pid, signal.SIGTERM)
        wait_for(f"{name} (pid {pid}) to exit", lambda pid=pid: exited(pid), 60)
        offset = log.stat().st_size
        start = time.perf_counter()
        cluster.restart(name)

        def serving(offset: int = offset) -> bool:
            with open(log, "rb") as f:
                f.seek(offset)
                return b"agent serving" in f.read()
        wait_for(f"{name} to serve again", serving, 60, interval=0.002)
        times.append((time.perf_counter() - start) * 1000)
        # Registered again before the next stop, as a restarted node would be.
        wait_for(f"{name} to register", lambda o=offset: b"registered with scheduler" in
                 log.read_bytes()[o:], 30)
    return times


def breakdown(pid: int) -> None:
    """Threads, anonymous vs file-backed RSS, the largest mapped files (/proc/PID/smaps)."""
    by_file: Counter[str] = Counter()
    anon = 0
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                fields = line.split()
                name = fields[5] if len(fields) > 5 else ""
            elif line.startswith("Rss:"):
                kib = int(line.split()[1])
                if name.startswith("/"):
                    by_file[name] += kib
                else:
                    anon += kib                  # heap, anonymous mmaps, stacks
    threads = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                threads[f.read().strip()] += 1
        except OSError:
            continue                               # exited meanwhile
    print(f"\nthe idle agent (pid {pid}): {sum(threads.values())} threads "
          f"({', '.join(f'{n} {c}' for n, c in sorted(threads.items()))})")
    print(f"  RSS {(anon + sum(by_file.values())) / 1024:.1f} MiB = anonymous "
          f"{anon / 1024:.1f} (heap, Python objects, stacks) + mapped files "
          f"{sum(by_file.values()) / 1024:.1f}; largest files:")
    for path, kib in by_file.most_common(6):
        print(f"    {kib / 1024:5.1f} MiB {os.path.basename(path)}")
    unwanted = sorted({os.path.basename(p) for p in by_file if any(u in p for u in UNWANTED)})
    print(f"  mapped from {' or '.join(UNWANTED)}: {', '.join(unwanted) or 'nothing'}")


def import_costs() -> None:
    """RSS of a fresh interpreter after each group of imports (median of 3)."""
    table = Table("where the agent's RSS comes from: a fresh interpreter after importing",
                  "MiB", width=50)
    for label, code in IMPORTS:
        values = []
        for _ in range(3):
            out = subprocess.run(
                [PYTHON, "-c", f"{code}\nimport re\n"
                 "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])"],
                capture_output=True, text=True, check=True).stdout
            values.append(int(out) / 1024)
        table.add(label, values)


def restart_with_metrics(cluster: LocalCluster) -> str:
    """Restarts node1's agent with --metrics-listen on its node's address (the argv
    `cluster up` recorded, plus the flag), once registered again; the address."""
    import json

    state = json.loads((cluster.dir / "cluster.json").read_text())
    address = f"{state['network']['nodes']['node1']['ip']}:9100"
    cluster.restart_changed("node1", lambda argv: argv.extend(["--metrics-listen", address]),
                            b"registered with scheduler")
    return address


def scrape(address: str) -> bytes:
    """One scrape as Prometheus makes it: a connection, GET /metrics, the page."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n"
                  b"Connection: close\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    if not reply.startswith(b"HTTP/1") or b" 200 " not in reply.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"scrape of {address}: {reply[:80]!r}")
    return reply.split(b"\r\n\r\n", 1)[1]


def scrape_costs(address: str, pid: int, runs: int = 200) -> tuple[float, float, int]:
    """(wall ms per scrape, agent CPU ms per scrape, page bytes) over `runs` scrapes
    one after another."""
    size = len(scrape(address))        # the first builds whatever is built once
    cpu0, start = cpu_seconds(pid), time.perf_counter()
    for _ in range(runs):
        scrape(address)
    wall, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu0
    return wall / runs * 1000, cpu / runs * 1000, size


def metrics_cost(cluster: LocalCluster, samples: int) -> None:
    """The idle agent's RSS and PSS as `cluster up` starts it, then restarted with
    --metrics-listen on its node's address and scraped (the endpoint's thread up,
    scrapes done)."""

    def measure() -> list[tuple[int, int]]:
        out = []
        for _ in range(samples):
            out.append(memory_of(cluster.pid("node1")))
            time.sleep(1)
        return out

    without = measure()
    address = restart_with_metrics(cluster)
    wall, cpu, scraped = scrape_costs(address, cluster.pid("node1"))
    time.sleep(SETTLE)
    with_metrics = measure()
    table = Table(f"idle agent, without and with --metrics-listen ({samples} samples; "
                  f"200 scrapes of {scraped} bytes first)", "MiB", width=50)
    table.add("without: RSS", [r / MiB for r, _ in without])
    table.add("with --metrics-listen: RSS", [r / MiB for r, _ in with_metrics])
    table.add("without: PSS", [p / MiB for _, p in without])
    table.add("with --metrics-listen: PSS", [p / MiB for _, p in with_metrics])
    scrapes = Table("a scrape of the idle agent (200 in a row)", "ms", width=50)
    scrapes.add("wall time per scrape (from a local client)", [wall])
    scrapes.add("agent CPU per scrape", [cpu])


def _with_pythonpath(value: str | None) -> None:
    if value is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = value


def import_rss() -> float:
    """MiB: a fresh interpreter's RSS after importing the agent's main (this environment)."""
    out = subprocess.run(
        [PYTHON, "-c", "import mctl.agent.main, re\n"
         "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])"],
        capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def compare(args: argparse.Namespace) -> None:
    """The idle agent of the --before tree and of this one, in 1-node clusters in turns."""
    plain = os.environ.get("PYTHONPATH")
    rows: dict[str, list[float]] = {}
    ids, dirs = [], []
    try:
        for r in range(args.rounds):
            for variant in ("before", "after"):
                _with_pythonpath(os.path.abspath(args.before) if variant == "before" else plain)
                import_rss()        # bytecode written (if allowed) before anything is measured
                for _ in range(3):
                    rows.setdefault(f"{variant}: imports alone (fresh interpreter), RSS",
                                    []).append(import_rss())
                with Cleanup() as stack:
                    base = temp_dir(stack, f"footprint-{variant}")
                    cluster = LocalCluster(stack, base, 1)
                    ids.append(cluster.id)
                    dirs.append(str(base))
                    time.sleep(SETTLE)
                    for _ in range(args.samples):
                        rss, pss = memory_of(cluster.pid("node1"))
                        rows.setdefault(f"{variant}: idle agent, RSS", []).append(rss / MiB)
                        rows.setdefault(f"{variant}: idle agent, PSS", []).append(pss / MiB)
                        time.sleep(1)
                    if r == 0:
                        print(f"\n{variant} ({os.environ.get('PYTHONPATH') or 'this tree'}):")
                        breakdown(cluster.pid("node1"))
                    if args.metrics:
                        address = restart_with_metrics(cluster)
                        wall, cpu, _size = scrape_costs(address, cluster.pid("node1"))
                        rows.setdefault(f"{variant}: ms per scrape, wall", []).append(wall)
                        rows.setdefault(f"{variant}: ms per scrape, agent CPU", []).append(cpu)
                        time.sleep(SETTLE)
                        for _ in range(args.samples):
                            rss, pss = memory_of(cluster.pid("node1"))
                            rows.setdefault(f"{variant}: idle agent --metrics-listen, RSS",
                                            []).append(rss / MiB)
                            rows.setdefault(f"{variant}: idle agent --metrics-listen, PSS",
                                            []).append(pss / MiB)
                            time.sleep(1)
                        if r == 0:
                            print(f"\n{variant}, with --metrics-listen, scraped:")
                            breakdown(cluster.pid("node1"))
                print(f"  round {r + 1}/{args.rounds} {variant}: done", flush=True)
    finally:
        _with_pythonpath(plain)
    table = Table(f"idle agent of each tree ({args.rounds} rounds in turns, {args.samples} "
                  "samples 1 s apart each)", "MiB", width=50)
    for label in sorted(rows, key=lambda k: (k.split(": ", 1)[1], k)):
        if "per scrape" not in label:
            table.add(label, rows[label])
    if args.metrics:
        scrapes = Table("a scrape of the idle agent (200 in a row, each round)", "ms", width=50)
        for label in sorted(rows, key=lambda k: (k.split(": ", 1)[1], k)):
            if "per scrape" in label:
                scrapes.add(label, rows[label])
    check_leftovers(dirs, ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,10,100")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--restarts", type=int, default=5,
                        help="agent restarts timed at the end (0: none)")
    parser.add_argument("--metrics", action="store_true",
                        help="only: the idle agent's RSS without and with --metrics-listen "
                             "(scraped), and the time a scrape takes; with --before, both "
                             "trees' agents are also measured so")
    parser.add_argument("--before", default="", metavar="DIR",
                        help="only: the idle agent of the tree whose mctl/ is in DIR "
                             "(PYTHONPATH) against this one's, in turns")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --before: clusters of each tree, taking turns")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    print_header("bench/footprint.py: memory of the control plane and per running replica")
    if args.before:
        compare(args)
        return
    if args.metrics:
        with Cleanup() as stack:
            base = temp_dir(stack, "footprint-metrics")
            cluster = LocalCluster(stack, base, 1)
            time.sleep(SETTLE)
            metrics_cost(cluster, args.samples)
            cluster_id = cluster.id
        check_leftovers([str(base)], [cluster_id])
        return
    with Cleanup() as stack:
        base = temp_dir(stack, "footprint")
        cluster = LocalCluster(stack, base, 1)
        watch = ReplicaWatch(cluster.etcd, tls=cluster.etcd_tls)
        stack.callback(watch.close)
        time.sleep(SETTLE)
        idle: dict[str, list[tuple[int, int]]] = {}
        for _ in range(args.samples):
            for name in ("scheduler", "etcd"):
                idle.setdefault(name, []).append(memory_of(cluster.pid(name)))
            for key, value in sample(agent_processes(cluster.pid("node1"))).items():
                idle.setdefault(key, []).append(value)
            time.sleep(1)
        table = Table(f"idle, 1-node cluster ({args.samples} samples, 1 s apart)", "MiB")
        for name, label in (("scheduler", "scheduler"), ("etcd", "etcd (reference)"),
                            ("agent", "agent, idle"), ("zygote", "agent's zygote, idle")):
            table.add(f"{label}: RSS", [r / MiB for r, _ in idle[name]])
            table.add(f"{label}: PSS", [p / MiB for _, p in idle[name]])
        breakdown(cluster.pid("node1"))
        agent0 = min(p for _, p in idle["agent"])
        zygote0 = min(p for _, p in idle["zygote"])
        agent0_rss = min(r for r, _ in idle["agent"])

        per = Table("extra per running replica: agent growth + zygote growth + monitors, "
                    "divided by replicas", "MiB", width=50)
        path = base / "fp.yaml"
        for n in levels:
            path.write_text(workload_yaml("fp", n))
            cluster.mctl("apply", "-f", str(path))
            watch.wait(f"{n} replicas Running", lambda w, n=n: running_count(w, "fp") >= n, 180)
            time.sleep(SETTLE)
            pss_per, rss_per, monitor_pss, agent_pss, zygote_pss = [], [], [], [], []
            for _ in range(args.samples):
                procs = agent_processes(cluster.pid("node1"))
                if len(procs.monitors) < n:
                    raise RuntimeError(f"{len(procs.monitors)} monitors for {n} replicas")
                s = sample(procs)
                extra_pss = (s["agent"][1] - agent0) + (s["zygote"][1] - zygote0) \
                    + s["monitors"][1]
                extra_rss = (s["agent"][0] - agent0_rss) + s["monitors"][0]
                pss_per.append(extra_pss / n / MiB)
                rss_per.append(extra_rss / n / MiB)
                monitor_pss.append(s["monitors"][1] / len(procs.monitors) / MiB)
                agent_pss.append((s["agent"][1] - agent0) / n / MiB)
                zygote_pss.append((s["zygote"][1] - zygote0) / n / MiB)
                time.sleep(1)
            per.add(f"{n:>3} replicas: PSS per replica", pss_per)
            per.add(f"{n:>3} replicas:   of which one monitor (PSS)", monitor_pss)
            per.add(f"{n:>3} replicas:   of which agent growth (PSS)", agent_pss)
            per.add(f"{n:>3} replicas:   of which zygote growth (PSS)", zygote_pss,
                    "negative: its pages are now shared with the monitors")
            per.add(f"{n:>3} replicas: RSS per replica (upper bound)", rss_per)
        cluster.mctl("delete", "-f", str(path))
        watch.wait("replicas removed", lambda w: not w.of("fp"), 120)
        if args.restarts:
            Table("agent start-up: SIGTERM, the same argv again -> \"agent serving\" "
                  "in its log", "ms", width=50).add(
                f"restart, mutual TLS ({args.restarts} runs)",
                restart_times(cluster, "node1", args.restarts))
        cluster_id = cluster.id
    import_costs()
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()
