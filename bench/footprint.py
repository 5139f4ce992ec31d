"""Memory: the scheduler, an idle agent, and what each running replica adds on a node.

    .venv/bin/python bench/footprint.py [--levels 1,10,100] [--samples 5]

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
"""

from __future__ import annotations

import argparse
import subprocess
import time

from _common import (
    PYTHON,
    AgentProcesses,
    Cleanup,
    LocalCluster,
    ReplicaWatch,
    Table,
    agent_processes,
    check_leftovers,
    memory_of,
    print_header,
    running_count,
    temp_dir,
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
# each group of modules, in the order the agent imports them.
IMPORTS = [
    ("python alone", ""),
    ("+ grpc", "import grpc"),
    ("+ protobuf and mctl's API", "import grpc, mctl.v1.agent_pb2_grpc, mctl.v1.node_pb2_grpc"),
    ("+ pyroute2", "import grpc, mctl.v1.agent_pb2_grpc, mctl.v1.node_pb2_grpc, pyroute2"),
    ("+ cryptography (TLS certificates)",
     "import grpc, mctl.v1.agent_pb2_grpc, mctl.v1.node_pb2_grpc, pyroute2, cryptography.x509"),
    ("mctl.agent.main (everything the agent imports)", "import mctl.agent.main"),
    ("mctl.agent.runtime.zygote (the zygote)", "import mctl.agent.runtime.zygote"),
]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,10,100")
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    print_header("bench/footprint.py: memory of the control plane and per running replica")
    with Cleanup() as stack:
        base = temp_dir(stack, "footprint")
        cluster = LocalCluster(stack, base, 1)
        watch = ReplicaWatch(cluster.etcd)
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
        cluster_id = cluster.id
    import_costs()
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()
