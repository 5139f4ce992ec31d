"""From `mctl apply` to Running containers, on a local 3-node cluster.

    .venv/bin/python bench/apply.py [--runs 5] [--replicas 30|100] [--nodes 3] [--profile]
                                    [--before DIR --rounds 3]

Not a test; needs root. `mctl cluster up --nodes 3` in a temporary --dir
(MCTL_HOME too, so the user's CLI config is untouched), then, per run, a
busybox `sleep` workload (cpu 100m, memory 16Mi) is applied with `mctl
apply -f FILE` and timed until every replica is Running, then deleted
(`mctl delete -f FILE`) and timed until every replica is gone; 30-replica
and 1-replica runs take turns. `cluster down` runs at the end, also on
error or Ctrl-C.

Progress is read from an etcd watch on the scheduler's keys (not by polling
the API, which would load the scheduler being measured); the agents' logs
say when each container started and how long its start took, so each run is
split into: the CLI (start-up and Apply), the scheduler's pass (workload
stored -> replicas placed), the push and agent (placed -> containers
started, with each container's network attach and runtime start as the
agent logs them) and the status report (started -> Running in etcd). The
CPU time the whole machine spent busy from `mctl apply` until all Running
(from /proc/stat: every process and the kernel) is the steadier figure when
the cores are saturated, as they are here: with 2 cores, the wall time is
at least half of it. With --profile, py-spy samples node1's agent and the scheduler during one more
30-replica run.

With --before DIR (a folder holding `mctl/` with agent, scheduler, cli,
common and v1 of another tree, e.g. `git archive HEAD` with symlinks), the
whole cluster runs that code (PYTHONPATH) and this tree's in turns: per
round, a cluster of each is brought up, warmed up, measured and taken down,
so load from elsewhere on the machine falls on both alike. More replicas
than fit the nodes at 100m each get a smaller CPU request (cpu_for).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from _common import (
    Cleanup,
    LocalCluster,
    ReplicaWatch,
    Table,
    check_leftovers,
    print_header,
    print_profile,
    py_spy_record,
    running_count,
    temp_dir,
    workload_yaml,
)

# Each replica's CPU limit (also its placement request): 30 fit 3 two-core nodes
# (the default, 250m, would not), and its CFS quota is what the container's
# setup runs under once it has joined its cgroup (see start.py --cpu-millis).
CPU = "100m"
# Nodes have two cores here: more replicas than fit at CPU get a smaller share.
NODE_CPU_MILLIS = 2000


def cpu_for(replicas: int, nodes: int) -> str:
    """Each replica's CPU request: CPU, or less when that many would not fit the nodes."""
    per_node = -(-replicas // nodes)
    fits = int(NODE_CPU_MILLIS * 0.9) // per_node
    return CPU if fits >= 100 else f"{max(fits // 10 * 10, 10)}m"

# "2026-11-26T15:13:59.068 INFO agent node=node1 mctl.agent.containers: container started
#  container=default_a30-1-x2k4p replica=default/a30-1-x2k4p monitor_pid=1 init_pid=2 ms=9.6"
STARTED = re.compile(r"^(\S+) INFO .* container started .*replica=(\S+)/(\S+) .* ms=([\d.]+)")
# "... mctl.agent.network: container=default_a30-1-x2k4p attached ip=10.244.1.2 ... ms=31.4"
ATTACHED = re.compile(r"^\S+ INFO .* container=(\S+?)_(\S+) attached .* ms=([\d.]+)")


def agent_logs(cluster: LocalCluster, names: set[str]) -> tuple[dict[str, tuple[float, float]],
                                                               dict[str, float]]:
    """For the replicas `names`: when each container started (wall time the agent logged
    it) with its runtime.start ms, and its network attach ms (if the agent logs one)."""
    started, attached = {}, {}
    for i in range(1, cluster.nodes + 1):
        with open(cluster.log(f"node{i}"), errors="replace") as f:
            for line in f:
                m = STARTED.match(line)
                if m and m.group(3) in names:
                    wall = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                    started[m.group(3)] = (wall, float(m.group(4)))
                m = ATTACHED.match(line)
                if m and m.group(2) in names:
                    attached[m.group(2)] = float(m.group(3))
    return started, attached


def cpu_busy() -> float:
    """Seconds of CPU time the whole machine has spent busy (not idle) since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Runs:
    def __init__(self, cluster: LocalCluster, watch: ReplicaWatch, base: Path,
                 samples: dict[str, list[float]] | None = None, prefix: str = "") -> None:
        self.cluster = cluster
        self.watch = watch
        self.base = base
        self.samples: dict[str, list[float]] = (samples if samples is not None
                                                else defaultdict(list))
        self.prefix = prefix

    def one(self, name: str, replicas: int, record: bool = True) -> None:
        path = self.base / f"{name}.yaml"
        path.write_text(workload_yaml(name, replicas, cpu=cpu_for(replicas, self.cluster.nodes)))
        busy0 = cpu_busy()
        wall0, t0 = time.time(), time.monotonic()
        cli = self.cluster.mctl("apply", "-f", str(path))
        cli_done = time.monotonic()
        if "created" not in cli.stdout:
            raise RuntimeError(f"mctl apply said: {cli.stdout.strip()}")
        done = self.watch.wait(f"{replicas} replicas of {name} Running",
                               lambda w: running_count(w, name) >= replicas, 120)
        busy = cpu_busy() - busy0
        with self.watch.cond:
            items = [(k.rsplit("/", 1)[1], p) for k, p in self.watch.replicas.items()
                     if p.workload == name]
        stored = self.watch.workloads.get(f"workloads/default/{name}", cli_done)
        logged, attached = agent_logs(self.cluster, {n for n, _ in items})
        # Remove it (timed too), so each run starts from an empty cluster.
        d0 = time.monotonic()
        self.cluster.mctl("delete", "-f", str(path))
        gone = self.watch.wait(f"replicas of {name} removed",
                               lambda w: not w.of(name), 60)
        if not record:
            return
        s = self.samples
        tag = f"{self.prefix}{replicas:>2} replica{'s' if replicas > 1 else ''}"
        s[f"{tag}: mctl apply -> all Running"].append(done - t0)
        s[f"{tag}: Apply stored -> all Running"].append(done - stored)
        s[f"{tag}: CPU time used, all processes, until all Running"].append(busy)
        s[f"{tag}:   mctl apply process (start-up + Apply)"].append(cli_done - t0)
        s[f"{tag}:   Apply stored -> all placed (scheduler)"].append(
            max(p.placed for _, p in items) - stored)
        # Log stamps are wall clock in ms; the watch's are monotonic: line them up.
        shift = wall0 - t0
        by_node: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for key, p in items:
            if key in logged:
                wall, ms = logged[key]
                by_node[p.node].append((p.placed, wall - shift, p.running, ms))
        for rows in by_node.values():
            placed = min(r[0] for r in rows)
            first, last = min(r[1] for r in rows), max(r[1] for r in rows)
            s[f"{tag}:   placed -> first container started, per node"].append(first - placed)
            s[f"{tag}:   first -> last container started, per node"].append(last - first)
            s[f"{tag}:   last started -> Running in etcd, per node"].append(
                max(r[2] for r in rows) - last)
            s[f"{tag}:   in-agent start (runtime.start), per container"] += [
                r[3] / 1e3 for r in rows]
        s[f"{tag}:   network attach (netns, veth, address), per container"] += [
            ms / 1e3 for ms in attached.values()]
        s[f"{tag}: mctl delete -> all removed"].append(gone - d0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the agent and the scheduler during one more run")
    parser.add_argument("--before", default="", metavar="DIR",
                        help="compare with the tree whose mctl/ is in DIR (PYTHONPATH)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --before: clusters of each tree, taking turns")
    args = parser.parse_args()
    print_header(f"bench/apply.py: mctl apply -> Running on a local {args.nodes}-node cluster")
    if args.before:
        compare(args)
        return
    with Cleanup() as stack:
        base = temp_dir(stack, "apply")
        cluster = LocalCluster(stack, base, args.nodes)
        print(f"  cluster up: {cluster.up_seconds:.1f} s (etcd, scheduler, {args.nodes} agents, "
              "nodes Ready)")
        watch = ReplicaWatch(cluster.etcd, tls=cluster.etcd_tls)
        stack.callback(watch.close)
        runs = Runs(cluster, watch, base)
        runs.one("warmup", args.replicas, record=False)
        for i in range(args.runs):
            runs.one(f"a{args.replicas}-{i}", args.replicas)
            runs.one(f"a1-{i}", 1)
        table = Table(f"apply -> Running, busybox sleep, {args.nodes} nodes ({args.runs} runs "
                      "each, after one warm-up run)", "ms", width=56)
        for label, values in runs.samples.items():
            if values:
                table.add(label, [v * 1e3 for v in values])
        if args.profile:
            profile(runs, cluster, base, args.replicas)
        cluster_id = cluster.id
    check_leftovers([str(base)], [cluster_id])


def cluster_warnings(cluster: LocalCluster) -> list[str]:
    """The WARNING and ERROR lines of the cluster's scheduler and agents."""
    lines = []
    for name in ["scheduler", *(f"node{i}" for i in range(1, cluster.nodes + 1))]:
        try:
            with open(cluster.log(name), errors="replace") as f:
                lines += [line.rstrip() for line in f if " WARNING " in line or " ERROR " in line]
        except OSError:
            pass
    return lines


def compare(args: argparse.Namespace) -> None:
    """Clusters of the --before tree and of this one, in turns; one table of both."""
    samples: dict[str, list[float]] = defaultdict(list)
    plain = os.environ.get("PYTHONPATH")
    try:
        for r in range(args.rounds):
            for variant in ("before", "after"):
                # The CLI, and the scheduler and agents it spawns, import from here.
                if variant == "before":
                    os.environ["PYTHONPATH"] = os.path.abspath(args.before)
                elif plain is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = plain
                with Cleanup() as stack:
                    base = temp_dir(stack, f"apply-{variant}")
                    cluster = LocalCluster(stack, base, args.nodes)
                    watch = ReplicaWatch(cluster.etcd, tls=cluster.etcd_tls)
                    stack.callback(watch.close)
                    runs = Runs(cluster, watch, base, samples, prefix=f"{variant}: ")
                    cluster_id = cluster.id
                    try:
                        runs.one("warmup", args.replicas, record=False)
                        for i in range(args.runs):
                            runs.one(f"a{args.replicas}-{r}-{i}", args.replicas)
                    except TimeoutError as e:
                        # Counted and shown with what the cluster logged, not
                        # fatal: the other rounds still compare.
                        samples[f"{variant}: runs that timed out"].append(1.0)
                        print(f"  round {r + 1} {variant}: {e}; the cluster's warnings:")
                        for line in cluster_warnings(cluster)[-15:]:
                            print(f"    {line}")
                check_leftovers([str(base)], [cluster_id])
                print(f"  round {r + 1}/{args.rounds} {variant}: done", flush=True)
    finally:
        if plain is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = plain
    table = Table(f"apply -> Running, busybox sleep, {args.nodes} nodes, {args.replicas} "
                  f"replicas ({args.rounds} rounds x {args.runs} runs per tree, in turns)",
                  "ms", width=64)
    for label in sorted(samples, key=lambda k: (k.split(": ", 1)[1], k)):
        if samples[label]:
            table.add(label, [v * 1e3 for v in samples[label]])


def profile(runs: Runs, cluster: LocalCluster, base: Path, replicas: int) -> None:
    agent_out, scheduler_out = base / "agent.pyspy", base / "scheduler.pyspy"
    with py_spy_record(cluster.pid("node1"), agent_out), \
            py_spy_record(cluster.pid("scheduler"), scheduler_out):
        runs.one("profiled", replicas, record=False)
    print_profile("node1's agent during one apply + delete", agent_out)
    print_profile("the scheduler during one apply + delete", scheduler_out)


if __name__ == "__main__":
    main()
