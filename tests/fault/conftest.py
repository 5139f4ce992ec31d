"""The fault suite's fixtures: the e2e tier's local clusters, shared rather than copied.

tests/e2e/conftest.py makes a real local cluster per module and asserts that
`cluster down` leaves no kernel state; the fault tests use the same fixtures
(loaded here under the name `e2e_fixtures`, so that both folders' conftest
modules can be imported in one run), and the helpers below compare a
cluster before and after a fault.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "e2e_fixtures", Path(__file__).resolve().parent.parent / "e2e" / "conftest.py")
assert _spec is not None and _spec.loader is not None
e2e_fixtures = importlib.util.module_from_spec(_spec)
sys.modules["e2e_fixtures"] = e2e_fixtures
_spec.loader.exec_module(e2e_fixtures)

Cluster = e2e_fixtures.Cluster
cluster_factory = e2e_fixtures.cluster_factory

Replicas = dict[str, tuple[str, str, int, str]]


def replicas(cluster, workload: str) -> Replicas:
    """name -> (uid, node, restarts, phase) of every replica of `workload`."""
    return {r["metadata"]["name"]: (r["metadata"]["uid"], r["node"],
                                    r.get("status", {}).get("restarts", 0),
                                    r.get("status", {}).get("phase", ""))
            for r in cluster.replicas(workload)}


def container_pids(cluster, reps: Replicas) -> dict[str, int]:
    """name -> the container's first process (init_pid of its state.json on its node)."""
    out = {}
    for name, (_, node, _, _) in reps.items():
        state = json.loads((cluster.bundle(node, name) / "state.json").read_text())
        out[name] = state["init_pid"]
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(cluster, workload: str, count: int, timeout: float = 60) -> Replicas:
    """Waits for exactly `count` replicas of `workload`, all Running; returns them."""
    try:
        reps = cluster.wait_for(f"{count} Running replicas of {workload}", lambda: (
            r if len(r := replicas(cluster, workload)) == count
            and all(v[3] == "Running" for v in r.values()) else None), timeout=timeout)
    except AssertionError as e:
        # What was not Running, and why, is what a failure here needs to say.
        statuses = {r["metadata"]["name"]: (r.get("node", ""), r.get("status", {}))
                    for r in cluster.replicas(workload)}
        raise AssertionError(f"{e}: {statuses}") from None
    assert isinstance(reps, dict)
    return reps


def bundles(cluster, nodes: list[str], workload: str) -> dict[str, list[str]]:
    """node -> the workload's container bundles there: a replica on two nodes shows twice."""
    return {n: sorted(d.name for d in (cluster.dir / "nodes" / n / "containers").iterdir()
                      if d.name.startswith(f"default_{workload}-"))
            for n in nodes}


def one_line_error(proc) -> None:
    """A failed CLI call: exit 1 and one line on stderr, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


# What the fault tests measured (recovery times, latencies), printed at the
# end of the run: docs/reliability.md quotes these figures.
MEASURED: list[str] = []


def measured(line: str) -> None:
    MEASURED.append(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("fault suite: measured")
        for line in MEASURED:
            terminalreporter.write_line(line)
