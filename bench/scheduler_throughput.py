"""Scheduler throughput: placements per second on a real etcd and scheduler, simulated nodes.

    .venv/bin/python bench/scheduler_throughput.py [--runs 2] [--scale 100,1000,5000]
        [--scale-replicas 1000] [--deadline 120] [--no-profile] [--compare-tree DIR]

Not a test. A real etcd (Debian's, free loopback ports, temporary data dir)
and a real scheduler process (`python -m mctl.scheduler.main`, plain text
gRPC: `--insecure` when the scheduler has it, no container network), and
one process of simulated agents (_simulated_agents.py) that registers N
nodes through the NodeService API, heartbeats for each at the interval the
scheduler asks, answers Agent.SetDesired and reports every replica Running.

Main figure: 1,000 nodes, 10,000 replicas (10 workloads of 1,000, applied in
one Apply call), timed from Apply until every replica has a node in etcd
(placements per second), and until every replica is Running in etcd (the
status reports written back); then all are deleted (timed) for the next
run. Scaling: 100, 1,000 and 5,000 nodes with 1,000 replicas. Each node
count gets a fresh etcd and scheduler. Progress is read from an etcd watch,
not the scheduler's API, and so is readiness: the fewest nodes whose
heartbeat key existed, sampled every 0.1 s from Apply until all are removed
("Ready throughout" when it equals the node count). Each phase gives up
after --deadline seconds and says how far it got. The CPU time each process used is shown, since all
share this machine's cores; py-spy samples the scheduler idle (heartbeats
only), while placing (run 1) and while taking status reports (run 2).
It takes 10 to 20 minutes today, mostly waiting for status reports and for
nodes to become Ready; `--scale '' --runs 1` measures the main figure alone.

`--compare-tree DIR` runs the scheduler of another checkout of mctl too
(e.g. `git worktree add /tmp/base HEAD`), the two taking turns run by run,
each run on a control plane of its own (fresh etcd, scheduler and nodes):
figures of one tree against the other under the same load. The simulated
nodes and this script are this checkout's either way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    PYTHON,
    ROOT,
    Cleanup,
    Etcd,
    ReplicaWatch,
    Table,
    check_leftovers,
    cpu_seconds,
    free_port,
    print_header,
    print_profile,
    py_spy,
    py_spy_record,
    stop_process,
    temp_dir,
    tree_layout,
    wait_for,
    wait_port,
)

from mctl.common import rpc
from mctl.common.phases import phase_name
from mctl.common.spec import parse_documents
from mctl.v1 import control_pb2, control_pb2_grpc, types_pb2

WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: {replicas}
  image: busybox
  command: ["sleep", "3600"]
  resources: {{cpu: 10m, memory: 16Mi}}
"""


@dataclass
class Simulator:
    """The simulated agents' process and what it last said on stdout."""

    proc: subprocess.Popen
    lines: dict[str, str] = field(default_factory=dict)
    # (time.monotonic(), stats) of the last STATS_KEPT stats lines.
    history: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            self.lines[word] = rest
            if word == "stats":
                self.history = self.history[-STATS_KEPT:] + [(time.monotonic(), self.stats())]

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, _, v in (item.partition("=") for item in
                                          self.lines.get("stats", "").split())}

    def timeline(self, since: float, until: float) -> str:
        """What the nodes were sent and reported, per STATS_EVERY, between two moments."""
        rows = [(t, st) for t, st in self.history if since - STATS_EVERY <= t <= until + 1]
        out = []
        for (_, a), (t, b) in zip(rows, rows[1:], strict=False):
            grew = {k: b.get(k, 0) - a.get(k, 0) for k in ("desired_sets", "reports",
                                                             "report_errors")}
            out.append(f"{t - since:.1f}s: +{grew['desired_sets']} sets, +{grew['reports']} "
                       "reports" + (f", +{grew['report_errors']} refused"
                                    if grew["report_errors"] else ""))
        return "; ".join(out)

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()   # the simulator's signal to stop
        stop_process(self.proc, timeout=10)


class ControlPlane:
    """etcd, one scheduler and N simulated nodes, all Ready."""

    def __init__(self, stack: Cleanup, base: Path, nodes: int,
                 env: dict[str, str] | None = None) -> None:
        """`env`: the scheduler's environment (PYTHONPATH naming another tree)."""
        self.base = base
        self.nodes = nodes
        self.etcd = Etcd(base)
        stack.callback(self.etcd.close)
        flags = subprocess.run([PYTHON, "-m", "mctl.scheduler.main", "--help"],
                               capture_output=True, text=True, check=True, env=env).stdout
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        argv = [PYTHON, "-m", "mctl.scheduler.main", "--etcd", self.etcd.endpoint,
                "--listen", self.address, "--log-file", str(base / "scheduler.log")]
        if "--insecure" in flags:
            argv.append("--insecure")
        if "--cluster-cidr" in flags:
            argv += ["--cluster-cidr", ""]   # no subnets: 5,000 nodes would exhaust a /16
        argv += SCHEDULER_FLAGS
        with open(base / "scheduler.out", "wb") as out:
            self.scheduler = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=out, env=env)
        stack.callback(stop_process, self.scheduler)
        wait_port(port, 30, "scheduler", self.scheduler)
        self.watch = ReplicaWatch(self.etcd.endpoint)
        stack.callback(self.watch.close)
        if "leader" in flags:
            self.watch.wait("the scheduler to lead", lambda w: "leader" in w.keys, 30)
        self.stub = control_pb2_grpc.ControlPlaneStub(rpc.make_channel(self.address))

        start = time.monotonic()
        sim = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "_simulated_agents.py"), "--scheduler", self.address,
             "--nodes", str(nodes), "--stats-every", str(STATS_EVERY)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.sim = Simulator(sim)
        stack.callback(self.sim.stop)
        threading.Thread(target=self.sim.read, daemon=True).start()
        wait_for(f"{nodes} simulated nodes registered",
                 lambda: "registered" in self.sim.lines or sim.poll() is not None,
                 60 + nodes / 20)
        if sim.poll() is not None:
            raise RuntimeError(f"the simulated agents exited with {sim.returncode}")
        self.register_seconds = float(self.sim.lines["registered"].split()[1])
        try:
            self.watch.wait(f"{nodes} nodes Ready", lambda w: self.ready() >= nodes, 60)
        except TimeoutError:
            # Heartbeats the scheduler cannot keep up with: measure with the Ready ones.
            print(f"  only {self.ready()} of {nodes} nodes Ready after 60 s; going on "
                  f"(simulator: {self.sim.lines.get('stats', '')})", file=sys.stderr)
        self.ready_seconds = time.monotonic() - start
        # The simulator's counters once every node has had a pass to be sent
        # its (empty) set: how many sets registration cost per node.
        time.sleep(3.0)
        self.at_ready = self.sim.stats()

    def ready(self) -> int:
        with self.watch.cond:      # the watch thread changes the keys meanwhile
            return sum(1 for k in self.watch.keys if k.startswith("heartbeats/"))

    @contextlib.contextmanager
    def fewest_ready(self, into: list[int]) -> Iterator[None]:
        """Appends to `into` the fewest Ready nodes seen (every 0.1 s) while inside."""
        done = threading.Event()
        low = [self.ready()]

        def sample() -> None:
            while not done.wait(0.1):
                low[0] = min(low[0], self.ready())
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            into.append(min(low[0], self.ready()))

    def cpu(self) -> dict[str, float]:
        pids = {"scheduler": self.scheduler.pid, "etcd": self.etcd.proc.pid,
                "simulated agents": self.sim.proc.pid, "this benchmark": 0}
        out = {}
        for name, pid in pids.items():
            try:
                out[name] = cpu_seconds(pid) if pid else time.process_time()
            except OSError:
                out[name] = 0.0
        return out


@dataclass
class RunResult:
    """One run; a phase that did not finish within its deadline is None, with how far
    it got in `reached`."""

    replicas: int
    ready_at_apply: int
    ready_fewest: int = 0      # from Apply until all removed, sampled every 0.1 s
    placed: float | None = None
    running: float | None = None
    deleted: float | None = None
    reached: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


def run_once(cp: ControlPlane, tag: str, replicas: int, deadline: float,
             per_workload: int = 1000, profile: dict[str, Path] | None = None) -> RunResult:
    """Apply `replicas` in workloads of `per_workload`, wait placed and Running, delete.

    Each wait gives up after `deadline` seconds. `profile` may name py-spy
    outputs for the phases "placing" (Apply -> all placed), "deleting" (Delete
    -> all removed) and "reporting"
    (all placed -> all Running).
    """
    profile = profile or {}
    names = [f"{tag}-{i}" for i in range((replicas + per_workload - 1) // per_workload)]
    text = "---\n".join(WORKLOAD.format(name=n, replicas=min(per_workload,
                                                               replicas - i * per_workload))
                        for i, n in enumerate(names))
    workloads = parse_documents(text, "throughput.yaml")
    w = cp.watch

    def total(counts: dict[str, int]) -> int:
        return sum(counts[n] for n in names)

    def until(what: str, counts: dict[str, int], target: int, since: float) -> float | None:
        try:
            return w.wait(f"{target} replicas {what}",
                          lambda w: total(counts) == target, deadline) - since
        except TimeoutError:
            result.reached[what] = total(counts)
            return None
    result = RunResult(replicas, cp.ready())
    fewest: list[int] = []
    t0 = time.monotonic()
    with cp.fewest_ready(fewest):
        _phases(cp, result, workloads, names, until, profile)
    result.ready_fewest = fewest[0]
    print(f"  run {tag}: placed {result.placed or 0:.2f} s, Running {result.running or 0:.2f} s,"
          f" removed {result.deleted or 0:.2f} s after its Delete; from Apply on, per "
          f"{STATS_EVERY} s: {cp.sim.timeline(t0, time.monotonic())}", flush=True)
    return result


def _phases(cp: ControlPlane, result: RunResult, workloads: list[types_pb2.Workload],
            names: list[str], until: Callable[[str, dict[str, int], int, float], float | None],
            profile: dict[str, Path]) -> None:
    w = cp.watch
    replicas = result.replicas
    cpu0 = cp.cpu()
    with contextlib.ExitStack() as phase:
        if "placing" in profile:
            phase.enter_context(py_spy_record(cp.scheduler.pid, profile["placing"]))
        t0 = time.monotonic()
        cp.stub.Apply(control_pb2.ApplyRequest(workloads=workloads), timeout=60)
        result.placed = until("placed", w.placed_n, replicas, t0)
    with contextlib.ExitStack() as phase:
        if "reporting" in profile:
            phase.enter_context(py_spy_record(cp.scheduler.pid, profile["reporting"]))
        result.running = until(phase_name(types_pb2.REPLICA_PHASE_RUNNING), w.running_n,
                               replicas, t0)
    cpu1 = cp.cpu()
    result.cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    with contextlib.ExitStack() as phase:
        if "deleting" in profile:
            phase.enter_context(py_spy_record(cp.scheduler.pid, profile["deleting"]))
        d0 = time.monotonic()
        cp.stub.Delete(control_pb2.DeleteRequest(workloads=[
            control_pb2.ObjectRef(namespace="default", name=n) for n in names]), timeout=60)
        result.deleted = until("removed", w.count_n, 0, d0)


def report_runs(label: str, results: list[RunResult]) -> None:
    """One table per configuration, printed as soon as its runs are done."""
    replicas = results[0].replicas
    table = Table(f"{label} ({len(results)} run{'s' if len(results) > 1 else ''})", "",
                  width=52)

    def add(what: str, values: list[float | None]) -> None:
        done = [v for v in values if v is not None]
        if done:
            table.add(what, done)
    add("placements/s", [replicas / r.placed if r.placed else None for r in results])
    add("  Apply -> all placed (s)", [r.placed for r in results])
    add("  Apply -> all Running (s)", [r.running for r in results])
    add("  Running replicas/s", [replicas / r.running if r.running else None for r in results])
    add("  Delete -> all removed (s)", [r.deleted for r in results])
    for name in results[0].cpu:
        add(f"  CPU s, {name}, Apply -> Running", [r.cpu.get(name) for r in results])
    for r in results:
        for what, count in r.reached.items():
            table.note(f"not all {what} within the deadline: "
                       f"{count if what != 'removed' else replicas - count} of {replicas}")
    ready = min(r.ready_at_apply for r in results)
    fewest = min(r.ready_fewest for r in results)
    table.note(f"nodes Ready at Apply: {ready}, fewest from Apply to all removed: {fewest}"
               + (" (least of the runs)" if len(results) > 1 else ""))


# How often the simulator reports its counters (s), and how many reports are kept.
STATS_EVERY = 0.5
STATS_KEPT = 2000

# Extra flags for the scheduler process, from the command line.
SCHEDULER_FLAGS: list[str] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--scale", default="100,1000,5000",
                        help="node counts for the scaling runs ('' = none)")
    parser.add_argument("--scale-replicas", type=int, default=1000)
    parser.add_argument("--scale-runs", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=120,
                        help="seconds each phase (placed, Running, removed) may take")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--node-lease-ttl", type=int, default=0,
                        help="the scheduler's --node-lease-ttl (0: its default); Kubernetes "
                             "renews node leases every 10 s of 40 s")
    parser.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="also run the scheduler of this checkout, runs alternated")
    args = parser.parse_args()
    if args.node_lease_ttl:
        SCHEDULER_FLAGS.extend(["--node-lease-ttl", str(args.node_lease_ttl)])
    print_header("bench/scheduler_throughput.py: placements per second, simulated nodes")
    scale = [int(x) for x in args.scale.split(",") if x]
    with Cleanup() as stack:
        base = temp_dir(stack, "throughput")
        for nodes in sorted(set(scale) | {args.nodes}):
            if args.compare_tree is not None:
                compare(base, nodes, args)
                continue
            with Cleanup() as inner:   # one control plane per node count, then gone
                measure(inner, base, nodes, args, scale)
    check_leftovers([str(base)])


def compare(base: Path, nodes: int, args: argparse.Namespace) -> None:
    """Runs of this tree's scheduler and the other's, taking turns, each on its own
    control plane."""
    replicas = args.replicas if nodes == args.nodes else args.scale_replicas
    other = tree_layout(base / f"tree-n{nodes}", args.compare_tree.resolve())
    envs = {"this tree": None,
            f"{args.compare_tree}": {**os.environ, "PYTHONPATH": str(other)}}
    results: dict[str, list[RunResult]] = {label: [] for label in envs}
    for i in range(args.runs):
        order = list(envs) if i % 2 == 0 else list(envs)[::-1]
        for label in order:
            cp_dir = base / f"n{nodes}-r{i}-{'this' if envs[label] is None else 'other'}"
            cp_dir.mkdir()
            print(f"\n{nodes} nodes, run {i + 1}, {label}: starting etcd, the scheduler and "
                  "the simulated agents", flush=True)
            with Cleanup() as stack:
                cp = ControlPlane(stack, cp_dir, nodes, envs[label])
                stats = cp.at_ready
                print(f"  registered in {cp.register_seconds:.1f} s; {cp.ready()} Ready after "
                      f"{cp.ready_seconds:.1f} s; desired sets 3 s later "
                      f"{stats.get('desired_sets', 0) / nodes:.2f} per node; failed heartbeats "
                      f"{stats.get('heartbeat_errors', 0)}", flush=True)
                results[label].append(run_once(cp, f"m{i}", replicas, args.deadline))
    for label, found in results.items():
        report_runs(f"{nodes} nodes, {replicas} replicas, {label}", found)


def measure(stack: Cleanup, base: Path, nodes: int, args: argparse.Namespace,
            scale: list[int]) -> None:
    cp_dir = base / f"n{nodes}"
    cp_dir.mkdir()
    print(f"\n{nodes} nodes: starting etcd, the scheduler and the simulated agents",
          flush=True)
    cp = ControlPlane(stack, cp_dir, nodes)
    stats = cp.at_ready
    print(f"  registered in {cp.register_seconds:.1f} s ({nodes / cp.register_seconds:.0f}/s); "
          f"{cp.ready()} Ready after {cp.ready_seconds:.1f} s; simulator 3 s later: heartbeats "
          f"{stats.get('heartbeats', 0)}, failed {stats.get('heartbeat_errors', 0)}, "
          f"re-registered {stats.get('reregistered', 0)}, desired sets "
          f"{stats.get('desired_sets', 0)} ({stats.get('desired_sets', 0) / nodes:.2f} per "
          "node)", flush=True)
    profiles: dict[str, Path] = {}
    if nodes == args.nodes and not args.no_profile and py_spy():
        profiles = {"idle": cp_dir / "idle.pyspy", "placing": cp_dir / "placing.pyspy",
                    "reporting": cp_dir / "reporting.pyspy",
                    "deleting": cp_dir / "deleting.pyspy"}
        with py_spy_record(cp.scheduler.pid, profiles["idle"]):
            time.sleep(5)
    if nodes == args.nodes:
        results = []
        for i in range(args.runs):
            # Run 0 profiles placing, run 1 reporting (py-spy's attach pause then
            # falls outside the phase it times).
            wanted = ("placing", "deleting") if i == 0 else ("reporting",) if i == 1 else ()
            phase = {k: v for k, v in profiles.items() if k in wanted}
            results.append(run_once(cp, f"m{i}", args.replicas, args.deadline,
                                    profile=phase))
            if results[-1].deleted is None:
                break   # replicas are left: later runs would not start from empty
        report_runs(f"{nodes} nodes, {args.replicas} replicas", results)
    if nodes in scale and cp.watch.count_n and sum(cp.watch.count_n.values()):
        print(f"  {nodes} nodes: replicas of an earlier run are left; no scaling run")
    elif nodes in scale:
        results = [run_once(cp, f"s{i}", args.scale_replicas, args.deadline)
                   for i in range(args.scale_runs)]
        report_runs(f"{nodes} nodes, {args.scale_replicas} replicas", results)
    titles = {"idle": f"the scheduler with {nodes} nodes heartbeating, nothing to place "
                      "(5 s)",
              "placing": f"the scheduler placing {args.replicas} replicas "
                         "(Apply -> all placed)",
              "reporting": "the scheduler taking status reports (all placed -> all Running)",
              "deleting": "the scheduler deleting them (Delete -> all removed)"}
    for key, path in profiles.items():
        if path.exists():
            print_profile(titles[key], path, count=12)
    stats = cp.sim.stats()
    print(f"  simulator, at its last report (every 2 s): heartbeats "
          f"{stats.get('heartbeats', 0)}, failed "
          f"{stats.get('heartbeat_errors', 0)}, re-registered {stats.get('reregistered', 0)}, "
          f"desired sets {stats.get('desired_sets', 0)}, reports {stats.get('reports', 0)}",
          flush=True)


if __name__ == "__main__":
    main()
