"""What scale, rollout and diff cost, end to end, on a local 3-node cluster.

    .venv/bin/python bench/rollout.py [--runs 5] [--replicas 12] [--nodes 3]

Not a test; needs root. `mctl cluster up` in a temporary --dir (MCTL_HOME
too), a busybox `sleep` workload of --replicas (cpu 10m, memory 8Mi,
maxUnavailable 3, maxSurge 3) applied and waited for, then, per run, each
timed as a user sees it (a fresh `mctl` process each, start-up included):

- `mctl apply -f` of the unchanged file (the reference: one Apply call);
- `mctl apply --dry-run -f` and `mctl diff -f` of a changed file (the
  server plans, nothing is stored);
- `mctl rollout restart` followed by `mctl rollout status`, until every
  replica has been replaced and is ready;
- `mctl rollout undo` (between two templates) followed by `rollout status`,
  twice per run;
- `mctl scale` up by 3, then `rollout status` until the new ones are ready,
  and back down.

`cluster down` runs at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import Cleanup, LocalCluster, Table, check_leftovers, print_header, temp_dir


def workload(replicas: int, version: str) -> str:
    return f"""\
apiVersion: mctl/v1
kind: Workload
metadata: {{name: roll}}
spec:
  replicas: {replicas}
  image: busybox
  command: ["/bin/sh", "-c", "exec sleep 3600", "{version}"]
  update: {{maxUnavailable: 3, maxSurge: 3}}
  resources: {{cpu: 10m, memory: 8Mi}}
"""


def timed(cluster: LocalCluster, *commands: tuple[str, ...]) -> float:
    """Seconds for the commands, run one after the other (each must succeed)."""
    start = time.perf_counter()
    for args in commands:
        proc = cluster.mctl(*args, timeout=300, check=False)
        # diff's 1 means "there are differences": what this run expects.
        if proc.returncode not in ((0, 1) if args[0] == "diff" else (0,)):
            raise RuntimeError(f"mctl {' '.join(args)} exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=12)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    print_header("bench/rollout.py: apply --dry-run, diff, rollout restart/undo, scale")
    samples: dict[str, list[float]] = {}
    with Cleanup() as stack:
        base = temp_dir(stack, "rollout")
        cluster = LocalCluster(stack, base, args.nodes)
        cluster_id = cluster.id
        v1, v2 = Path(base / "v1.yaml"), Path(base / "v2.yaml")
        v1.write_text(workload(args.replicas, "v1"))
        v2.write_text(workload(args.replicas, "v2"))
        cluster.mctl("apply", "-f", str(v1), "--wait", "--timeout", "120", timeout=180)
        cluster.mctl("apply", "-f", str(v2))          # a second revision to undo between
        status = ("rollout", "status", "workload", "roll", "--timeout", "5m")
        cluster.mctl(*status, timeout=330)
        more, back = str(args.replicas + 3), str(args.replicas)
        for _ in range(args.runs):
            for label, commands in [
                ("apply, unchanged (reference)", [("apply", "-f", str(v2))]),
                ("apply --dry-run, a changed template", [("apply", "-f", str(v1), "--dry-run")]),
                ("diff, a changed template", [("diff", "-f", str(v1))]),
                ("rollout restart + status", [("rollout", "restart", "workload", "roll"),
                                              status]),
                ("rollout undo + status", [("rollout", "undo", "workload", "roll"), status]),
                # Twice: back to v2, which the reference apply expects.
                ("rollout undo + status", [("rollout", "undo", "workload", "roll"), status]),
                (f"scale {back} -> {more} + status",
                 [("scale", "workload", "roll", "--replicas", more), status]),
                (f"scale {more} -> {back}", [("scale", "workload", "roll", "--replicas", back)]),
            ]:
                samples.setdefault(label, []).append(timed(cluster, *commands))
            time.sleep(2)       # the scale-down's replicas leave before the next run
    table = Table(f"{args.replicas} replicas on {args.nodes} nodes, maxUnavailable 3,"
                  f" maxSurge 3: from the command's start to its end (status: rolled out)",
                  "s")
    for label, values in samples.items():
        table.add(label, values)
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()
