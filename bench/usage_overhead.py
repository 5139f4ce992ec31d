"""The agent's own CPU use: idle, and while it runs and samples 100 replicas.

    .venv/bin/python bench/usage_overhead.py [--replicas 100] [--windows 6] [--window 10]

Not a test; needs root. On a local 1-node cluster (`mctl cluster up` in a
temporary --dir and MCTL_HOME), the agent's CPU time (utime + stime of all
its threads, from /proc/PID/stat) is read over several windows of wall
time, first with no replica, then with a busybox `sleep` workload of 100
replicas Running (the agent samples each container's cgroup every 5 s and
sends status reports and heartbeats). The zygote and the monitors are
measured the same way, as the rest of the per-node overhead. CPU use is in
percent of one core; the spread is over the windows. /proc/PID/stat counts
in clock ticks (1/100 s here), so a window of 10 s resolves 0.1 %.
"""

from __future__ import annotations

import argparse
import time

from _common import (
    Cleanup,
    LocalCluster,
    ReplicaWatch,
    Table,
    agent_processes,
    check_leftovers,
    cpu_seconds,
    print_header,
    print_profile,
    py_spy_record,
    running_count,
    temp_dir,
    workload_yaml,
)

SETTLE = 6.0   # seconds: starting 100 containers is over, the sampler has run once


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass   # exited meanwhile
    return total


def windows(agent_pid: int, count: int, seconds: float) -> dict[str, list[float]]:
    """Per window: CPU % of one core of the agent, its zygote and all monitors."""
    out: dict[str, list[float]] = {"agent": [], "zygote": [], "monitors": []}
    for _ in range(count):
        procs = agent_processes(agent_pid)
        groups = {"agent": [procs.agent], "zygote": [procs.zygote], "monitors": procs.monitors}
        before = {k: total_cpu(v) for k, v in groups.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        for key, pids in groups.items():
            out[key].append((total_cpu(pids) - before[key]) / wall * 100)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the agent for two more windows with the replicas")
    args = parser.parse_args()
    print_header("bench/usage_overhead.py: the agent's own CPU use")
    with Cleanup() as stack:
        base = temp_dir(stack, "usage")
        cluster = LocalCluster(stack, base, 1)
        watch = ReplicaWatch(cluster.etcd, tls=cluster.etcd_tls)
        stack.callback(watch.close)
        agent = cluster.pid("node1")
        time.sleep(SETTLE)
        idle = windows(agent, args.windows, args.window)
        path = base / "load.yaml"
        path.write_text(workload_yaml("load", args.replicas))
        cluster.mctl("apply", "-f", str(path))
        watch.wait(f"{args.replicas} replicas Running",
                   lambda w: running_count(w, "load") >= args.replicas, 180)
        time.sleep(SETTLE)
        busy = windows(agent, args.windows, args.window)
        if args.profile:
            with py_spy_record(agent, base / "agent.pyspy"):
                time.sleep(args.window * 2)
            print_profile(f"the agent with {args.replicas} replicas, {args.window * 2:.0f} s",
                          base / "agent.pyspy")
        cluster.mctl("delete", "-f", str(path))
        watch.wait("replicas removed", lambda w: not w.of("load"), 180)
        cluster_id = cluster.id

    table = Table(f"CPU use, % of one core ({args.windows} windows of {args.window:.0f} s)", "%",
                  width=50)
    table.add("agent, idle (no replica)", idle["agent"])
    table.add(f"agent, {args.replicas} replicas Running", busy["agent"])
    table.add(f"zygote, {args.replicas} replicas Running", busy["zygote"])
    table.add(f"all {args.replicas} monitors together", busy["monitors"])
    table.ratio("agent with replicas / idle", f"agent, {args.replicas} replicas Running",
                "agent, idle (no replica)")
    extra = table.rows[f"agent, {args.replicas} replicas Running"].median - \
        table.rows["agent, idle (no replica)"].median
    table.note(f"extra agent CPU per replica: {extra / args.replicas * 10:.3f} ms per second "
               f"({extra / args.replicas:.4f} % of a core)")
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()
