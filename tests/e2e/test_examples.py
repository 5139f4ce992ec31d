"""Every file in examples/ does what its opening comment promises, on a 3-node local cluster.

All examples are applied at once (`mctl apply -f examples/`), as the tour in
examples/README.md does, and watched together until each has reached its
promised state. Each example file must have a check here: a new example
without one fails the test, so the examples cannot rot unnoticed.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cluster  # the e2e fixtures module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The examples' time-stamped "starting" line (`date +%T`), one per run.
RUN_LINE = re.compile(r"\b(\d\d):(\d\d):(\d\d) starting")
# No proxy from the environment: node addresses are on this machine's bridge.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(3)


def status(replica: dict) -> dict:
    return replica.get("status", {})


def by_workload(replicas: list[dict], workload: str) -> list[dict]:
    return [r for r in replicas if r.get("workload") == workload]


def fetch(url: str) -> str:
    try:
        with HTTP.open(url, timeout=3) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return f"<{e}>"


def check_web(cluster: Cluster, replicas: list[dict]) -> str:
    """"" when three replicas run on three nodes and each node's hostPort serves its own."""
    running = [r for r in by_workload(replicas, "web") if status(r).get("phase") == "Running"]
    nodes = {r["node"]: r["metadata"]["name"] for r in running}
    if len(running) != 3 or len(nodes) != 3:
        return f"want 3 Running replicas on 3 nodes, have {sorted(nodes.items())}"
    for node, name in sorted(nodes.items()):
        page = fetch(f"http://{cluster.node_ip(node)}:18080/")
        if not page.startswith(f"hello from {name} at "):
            return f"http://{cluster.node_ip(node)}:18080/ ({node}) answered {page[:80]!r}"
        peers = set(nodes.values()) - {name}
        if not all(p in page for p in peers):
            return f"{name}'s page does not list its peers {sorted(peers)} yet: {page!r}"
    return ""


def check_api(cluster: Cluster, replicas: list[dict]) -> str:
    ready = [r for r in by_workload(replicas, "api") if status(r).get("phase") == "Running"
             and status(r).get("ready")]
    if len(ready) != 3:
        return f"want 3 ready replicas, have {len(ready)}"
    wide = cluster.mctl("get", "workloads", "-o", "wide").stdout
    return "" if re.search(r"^api\s.*\b10\.96\.\d+\.\d+\b", wide, re.M) else \
        f"no virtual IP for api in {wide!r}"


API_ANSWER = re.compile(r'^(front-\w+) asked http://api:8080/: \{"replica": "(api-\w+)", '
                        r'"ip": "10\.244\.[\d.]+"\}$')


def check_front(cluster: Cluster, replicas: list[dict]) -> str:
    """"" when every node's hostPort answers with a front replica's fetch of the API by name.

    Twelve fetches (four per node) must be answered by at least two api
    replicas: balanced at random over three, all twelve on one would
    happen once in 177,000 runs.
    """
    running = {r["node"]: r["metadata"]["name"] for r in by_workload(replicas, "front")
               if status(r).get("phase") == "Running"}
    apis = {r["metadata"]["name"] for r in by_workload(replicas, "api")
            if status(r).get("phase") == "Running"}
    if len(running) != 3:
        return f"want 3 Running front replicas on 3 nodes, have {sorted(running.items())}"
    answered: set[str] = set()
    for node, name in sorted(running.items()) * 4:
        page = fetch(f"http://{cluster.node_ip(node)}:18081/").strip()
        m = API_ANSWER.match(page)
        if not m or m.group(1) != name or m.group(2) not in apis:
            return f"http://{cluster.node_ip(node)}:18081/ ({node}) answered {page[:120]!r}"
        answered.add(m.group(2))
    return "" if len(answered) >= 2 else f"only {answered} answered through the virtual IP"


def check_hello(cluster: Cluster, replicas: list[dict]) -> str:
    running = [r for r in by_workload(replicas, "hello") if status(r).get("phase") == "Running"]
    if len(running) != 2:
        return f"want 2 Running replicas, have {len(running)}"
    logs = cluster.mctl("logs", "workload/hello").stdout
    missing = [r["metadata"]["name"] for r in running
               if f"hello from {r['metadata']['name']}" not in logs]
    return f"no greeting in the log of {missing}" if missing else ""


def check_batch(cluster: Cluster, replicas: list[dict]) -> str:
    reps = by_workload(replicas, "primes")
    if len(reps) != 1 or status(reps[0]).get("phase") != "Succeeded":
        return f"want 1 Succeeded replica, have {[status(r) for r in reps]}"
    st = status(reps[0])
    if st.get("exitCode", 0) != 0 or st.get("restarts", 0) != 0:
        return f"Succeeded but {st}"
    logs = cluster.mctl("logs", "workload/primes").stdout
    return "" if "2262 primes below 20000" in logs else f"log without the answer: {logs!r}"


def check_oom(cluster: Cluster, replicas: list[dict]) -> str:
    reps = by_workload(replicas, "hog")
    st = status(reps[0]) if len(reps) == 1 else {}
    if (st.get("phase"), st.get("reason"), st.get("exitCode")) != ("Failed", "OOMKilled", 137):
        return f"want Failed, OOMKilled, exit code 137, have {st}"
    logs = cluster.mctl("logs", "workload/hog").stdout
    return "" if "holding 1 MiB" in logs else f"log without progress: {logs!r}"


def check_crashloop(cluster: Cluster, replicas: list[dict]) -> str:
    """Restarted 3 times, in CrashLoopBackOff, and the back-off has grown past its first 1 s.

    `logs` shows the current run and `logs --previous` the one before (as
    kubectl): after the third restart their starts are one back-off apart
    (2 s or 4 s, plus the run), where a back-off that did not grow would
    leave about 1 s.
    """
    reps = by_workload(replicas, "crasher")
    st = status(reps[0]) if len(reps) == 1 else {}
    if st.get("restarts", 0) < 3:
        return f"want 3 restarts, have {st}"
    if st.get("phase") != "Running" and st.get("reason") != "CrashLoopBackOff":
        return f"restarting, but not in CrashLoopBackOff: {st}"
    name = reps[0]["metadata"]["name"]
    runs = []
    for which in ((), ("--previous",)):
        logs = cluster.mctl("logs", name, *which).stdout
        found = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in RUN_LINE.findall(logs)]
        if len(found) != 1 or "no settings, giving up" not in logs:
            return f"want one run in logs {' '.join(which)}, have {logs!r}"
        runs += found
    gap = runs[0] - runs[1]
    if gap < 2:
        return f"the back-off does not grow: {gap}s between the last two runs"
    return ""


def check_health(cluster: Cluster, replicas: list[dict]) -> str:
    reps = by_workload(replicas, "flaky")
    st = status(reps[0]) if len(reps) == 1 else {}
    if st.get("restarts", 0) < 1 or not st.get("lastExit", "").startswith("Unhealthy"):
        return f"want a restart after failed health checks, have {st}"
    return ""


def check_counter(cluster: Cluster, replicas: list[dict]) -> str:
    """"" once the second run found the count the first left in the named volume."""
    reps = by_workload(replicas, "counter")
    st = status(reps[0]) if len(reps) == 1 else {}
    if st.get("phase") != "Running" or st.get("restarts", 0) < 1:
        return f"want Running after a restart, have {st}"
    logs = cluster.mctl("logs", "workload/counter").stdout
    if "start number 2" not in logs:
        return f"the second run did not find the count: {logs!r}"
    volumes = cluster.mctl("get", "volumes").stdout
    node = reps[0]["node"]
    return "" if re.search(rf"^counter-data\s+{node}\b", volumes, re.M) else \
        f"counter-data not shown on {node}: {volumes!r}"


def check_secret(cluster: Cluster, replicas: list[dict]) -> str:
    reps = by_workload(replicas, "reader")
    if len(reps) != 1 or status(reps[0]).get("phase") != "Running":
        return f"want 1 Running replica, have {[status(r) for r in reps]}"
    logs = cluster.mctl("logs", "workload/reader").stdout
    if "env and file agree: yes" not in logs or "-r--------" not in logs:
        return f"log without the agreement and 0400 files: {logs!r}"
    listed = cluster.mctl("get", "secrets", "-o", "yaml").stdout
    if "correct-horse" in listed or "correct-horse" in logs:
        return "the secret's value was printed"
    return "" if "db-login" in listed else f"db-login not listed: {listed!r}"


CHECKS: dict[str, Callable[[Cluster, list[dict]], str]] = {
    "counter.yaml": check_counter,
    "secret.yaml": check_secret,
    "web.yaml": check_web,
    "api.yaml": check_api,
    "front.yaml": check_front,
    "hello.yaml": check_hello,
    "batch.yaml": check_batch,
    "oom.yaml": check_oom,
    "crashloop.yaml": check_crashloop,
    "health.yaml": check_health,
}


def test_every_example_has_a_check_and_says_what_to_run():
    files = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml"))
    assert files == sorted(CHECKS), "examples/ and this test's CHECKS differ"
    for name in files:
        text = (EXAMPLES / name).read_text()
        assert text.startswith("# "), f"{name}: must open with a comment saying what it shows"
        assert f"mctl apply -f examples/{name}" in text, f"{name}: its comment says how to run it"


def test_examples_reach_the_states_their_comments_promise(cluster: Cluster):
    cluster.mctl("apply", "-f", str(EXAMPLES))
    pending = dict(CHECKS)
    why: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        replicas = cluster.replicas()
        for name, check in list(pending.items()):
            why[name] = check(cluster, replicas)
            if not why[name]:
                del pending[name]
        time.sleep(0.5)
    assert not pending, "examples not in their promised state:\n" + "\n".join(
        f"  {name}: {why[name]}" for name in sorted(pending))

    cluster.mctl("delete", "-f", str(EXAMPLES), "--timeout", "60")
    cluster.wait_for("every replica to go", lambda: not cluster.replicas(), timeout=60)
