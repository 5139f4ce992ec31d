"""`mctl` as a user runs it: whole-process time of its calls, against `python -c pass`.

    .venv/bin/python bench/cli_latency.py [--runs 30] [--nodes 3] [--replicas 10]
                                          [--compare-tree DIR] [--importtime]

Not a test; needs root (it starts a cluster). `mctl cluster up --nodes 3`
(mutual TLS, as by default) in a temporary --dir and MCTL_HOME, a workload
of --replicas busybox replicas, then each command below is run --runs times
as a whole process, from spawn to exit, through the installed `mctl` entry
script (what a shell runs). The commands take turns, run by run, so that a
change of load on the machine skews them all alike; `python -c pass` and
`python -S -c pass` of the same interpreter are the floor they are compared
with (the first pays the virtualenv's site, with the editable install's
import hook, as every mctl call does).

--compare-tree DIR also runs the CLI of another checkout of mctl (e.g. the
commit before a change, `git archive HEAD | tar -x -C DIR`), its folders
laid out under the `mctl` namespace as pyproject.toml maps them, against the
same cluster in the same run. --importtime prints `python -X importtime`'s
ten costliest imports of `get replicas` and `--help`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    Cleanup,
    LocalCluster,
    Table,
    print_header,
    temp_dir,
    tree_layout,
    wait_for,
    workload_yaml,
)


def entry_script() -> list[str]:
    """The installed `mctl` (console script) next to this interpreter, else -m."""
    script = Path(sys.executable).parent / "mctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mctl.cli.main"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    return elapsed * 1000


def importtime(argv: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mctl.cli.main", *argv],
                          env=env, capture_output=True, text=True, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print(f"\n  python -X importtime mctl {' '.join(argv)}: costliest (cumulative us)")
    for us, name in sorted(rows, reverse=True)[:10]:
        print(f"    {us:>8} {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--replicas", type=int, default=10)
    p.add_argument("--compare-tree", type=Path, default=None,
                   help="another checkout whose CLI is measured too")
    p.add_argument("--importtime", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("cli_latency.py needs root (it starts a local cluster)")
    print_header(f"mctl CLI latency: whole process, {args.runs} runs each, "
                 f"{args.nodes}-node TLS cluster, {args.replicas} replicas")
    with Cleanup() as stack:
        base = temp_dir(stack, "cli-latency")
        cluster = LocalCluster(stack, base, args.nodes)
        path = base / "w.yaml"
        path.write_text(workload_yaml("lat", args.replicas, cpu="50m"))
        cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "120", timeout=180)
        wait_for("replicas listed", lambda: cluster.mctl("get", "replicas").stdout.count(
            "Running") == args.replicas, 60)

        env = {**cluster.env, "PYTHONDONTWRITEBYTECODE": "1"}
        mctl = entry_script()
        calls = {
            "--help": ["--help"],
            "get replicas": ["get", "replicas"],
            "get replicas -n default (after the verb)": ["get", "replicas", "-n", "default"],
            "get replicas -o json": ["get", "replicas", "-o", "json"],
            "get replicas -o jsonpath=...": ["get", "replicas", "-o",
                                             "jsonpath={.items[*].metadata.name}"],
            "get nodes -o wide": ["get", "nodes", "-o", "wide"],
            "config get-contexts": ["config", "get-contexts"],
        }
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass (this venv)": ([sys.executable, "-c", "pass"], env),
            "python -S -c pass": ([sys.executable, "-S", "-c", "pass"], env),
        }
        for label, argv in calls.items():
            commands[f"mctl {label}"] = (mctl + argv, env)
        if args.compare_tree is not None:
            layout = tree_layout(base / "compare", args.compare_tree.resolve())
            other = {**env, "PYTHONPATH": str(layout)}
            launcher = [sys.executable, "-c", "import sys; from mctl.cli.main import main;"
                        " sys.argv[0] = 'mctl'; main()"]
            for label in ("--help", "get replicas"):
                commands[f"compare-tree: mctl {label}"] = (launcher + calls[label], other)
        for argv, e in commands.values():      # warm the page cache and .pyc files
            timed(argv, e)
        samples: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.runs):
            for label, (argv, e) in commands.items():
                samples[label].append(timed(argv, e))

        table = Table("whole process, spawn to exit", "ms", width=52)
        for label, values in samples.items():
            table.add(label, values)
        for label in samples:
            if label.startswith(("mctl", "compare-tree")):
                table.ratio(f"{label} / python -c pass", label, "python -c pass (this venv)")
        if args.importtime:
            importtime(["--help"], env)
            importtime(["get", "replicas"], env)


if __name__ == "__main__":
    main()
