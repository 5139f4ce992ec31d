"""Recovery: a killed agent's replicas Running elsewhere; a killed leader replaced.

    .venv/bin/python bench/failure.py [--runs 3] [--node-grace SECONDS]

Not a test; needs root. On a local 3-node cluster (`mctl cluster up` in a
temporary --dir and MCTL_HOME; with `--schedulers 2` when the CLI offers it):

- node failure: a 6-replica busybox `sleep` workload (two per node), then
  SIGKILL to one agent (by the pid in <dir>/cluster.json); timed from the
  kill until the node's heartbeat lapsed (NotReady), until its first replica
  was placed elsewhere, and until all 6 replicas are Running on the other
  nodes. The agent is then started again (as `cluster up` started it) for
  the next run. `--node-grace` is passed to `cluster up` when given; the
  figure depends on it and on the heartbeat lease.
- leader failure: the scheduler holding the leader key gets SIGKILL, a
  1-replica workload is applied right after through the surviving
  scheduler, and the time from the kill until that replica is placed is
  taken, with the time until another scheduler holds the leader key.

Either is printed as "not supported yet" when this checkout cannot do it
(no --node-grace / --schedulers in `mctl cluster up --help`, no leader key,
or nothing happened within the deadline), instead of failing.
"""

from __future__ import annotations

import argparse
import subprocess
from collections import defaultdict

from _common import (
    MCTL,
    Cleanup,
    LocalCluster,
    ReplicaWatch,
    Table,
    check_leftovers,
    print_header,
    running_count,
    temp_dir,
    wait_for,
    wait_port,
    workload_yaml,
)

REPLICAS = 6


def cluster_flags() -> str:
    return subprocess.run(MCTL + ["cluster", "up", "--help"], capture_output=True, text=True,
                          check=False).stdout


def node_failure(cluster: LocalCluster, watch: ReplicaWatch, run: int, victim: str,
                 deadline: float) -> dict[str, float] | str:
    """One node-failure run; returns its timings, or why it could not be measured."""
    name = f"f{run}"
    path = cluster.dir.parent / f"{name}.yaml"
    path.write_text(workload_yaml(name, REPLICAS))
    cluster.mctl("apply", "-f", str(path))
    watch.wait(f"{REPLICAS} replicas Running", lambda w: running_count(w, name) >= REPLICAS, 60)
    on_victim = [p for p in watch.of(name) if p.node == victim]
    if not on_victim:
        return f"no replica landed on {victim}; nothing to move"
    t0 = cluster.kill(victim)
    heartbeat = f"heartbeats/{victim}"

    def moved(w: ReplicaWatch) -> bool:
        return any(p.node != victim and p.placed > t0 for p in w.of(name))

    def recovered(w: ReplicaWatch) -> bool:
        return sum(1 for p in w.of(name) if p.node != victim and p.running) >= REPLICAS
    try:
        first = watch.wait("a replica placed elsewhere", moved, deadline) - t0
        done = watch.wait("all replicas Running elsewhere", recovered, deadline) - t0
    except TimeoutError:
        return (f"replicas of the killed node were not Running elsewhere within "
                f"{deadline:.0f} s")
    finally:
        cluster.restart(victim)
    result = {"kill -> all 6 Running on the other nodes": done,
              "kill -> first replica placed elsewhere": first}
    lapsed = watch.deleted.get(heartbeat, 0.0)
    if lapsed > t0:
        result["kill -> heartbeat lapsed (node NotReady)"] = lapsed - t0
    cluster.mctl("delete", "-f", str(path))
    watch.wait("replicas removed", lambda w: not w.of(name), 60)
    watch.wait(f"{victim} heartbeating again", lambda w: heartbeat in w.keys, 60)
    return result


def leader_failure(cluster: LocalCluster, watch: ReplicaWatch, run: int,
                   deadline: float) -> dict[str, float] | str:
    entry = watch.keys.get("leader")
    if entry is None:
        return "no scheduler holds a leader key"
    leader = entry[0].decode()
    names = {p["name"] for p in cluster.state["processes"]}
    if leader not in names:
        return f"the leader {leader!r} is not a process of this cluster"
    name = f"l{run}"
    path = cluster.dir.parent / f"{name}.yaml"
    path.write_text(workload_yaml(name, 1))
    t0 = cluster.kill(leader)
    try:
        # Applied through whichever scheduler still answers (the CLI is given all).
        cluster.mctl("apply", "-f", str(path), timeout=deadline)
        placed = watch.wait("the new replica placed",
                            lambda w: any(p.placed for p in w.of(name)), deadline) - t0
        watch.wait("another scheduler holding the leader key",
                   lambda w: "leader" in w.keys and w.keys["leader"][0].decode() != leader,
                   deadline)
        took_over = watch.keys["leader"][1] - t0
    except (TimeoutError, RuntimeError) as e:
        return f"no new leader placed the replica ({e})"
    finally:
        cluster.restart(leader)
        argv = cluster.process(leader)["argv"]
        host, _, port = argv[argv.index("--listen") + 1].rpartition(":")
        wait_port(int(port), 30, leader, host=host)
    cluster.mctl("delete", "-f", str(path))
    watch.wait("replica removed", lambda w: not w.of(name), 60)
    return {"leader killed -> next placement": placed,
            "leader killed -> another scheduler leads": took_over}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--node-grace", type=float, default=None,
                        help="passed to `mctl cluster up` (default: the CLI's default)")
    parser.add_argument("--deadline", type=float, default=90.0,
                        help="seconds to wait for a recovery before calling it unsupported")
    args = parser.parse_args()
    print_header("bench/failure.py: recovery from a killed agent and a killed leader")
    flags = cluster_flags()
    node_grace = "--node-grace" in flags
    ha = "--schedulers" in flags
    extra = ["--schedulers", "2"] if ha else []
    if node_grace and args.node_grace is not None:
        extra += ["--node-grace", str(args.node_grace)]
    samples: dict[str, list[float]] = defaultdict(list)
    unsupported: dict[str, str] = {}
    with Cleanup() as stack:
        base = temp_dir(stack, "failure")
        cluster = LocalCluster(stack, base, 3, extra=extra)
        argv = cluster.process("scheduler")["argv"]
        grace = argv[argv.index("--node-grace") + 1] if "--node-grace" in argv else "none"
        print(f"  cluster: 3 nodes, {2 if ha else 1} scheduler(s), node grace {grace} s")
        watch = ReplicaWatch(cluster.etcd, tls=cluster.etcd_tls)
        stack.callback(watch.close)
        for run in range(args.runs):
            result = node_failure(cluster, watch, run, f"node{run % 3 + 1}", args.deadline)
            if isinstance(result, str):
                unsupported["node failure"] = result
                break
            for k, v in result.items():
                samples[k].append(v)
        if not ha:
            unsupported["leader failure"] = "`mctl cluster up` has no --schedulers"
        else:
            wait_for("a leader", lambda: "leader" in watch.keys, 15)
            for run in range(args.runs):
                result = leader_failure(cluster, watch, run, args.deadline)
                if isinstance(result, str):
                    unsupported["leader failure"] = result
                    break
                for k, v in result.items():
                    samples[k].append(v)
        cluster_id = cluster.id
    table = Table(f"recovery, 3-node local cluster ({args.runs} runs each)", "s")
    for label, values in samples.items():
        table.add(label, values)
    for what, why in unsupported.items():
        table.note(f"{what}: not supported yet ({why})")
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()
