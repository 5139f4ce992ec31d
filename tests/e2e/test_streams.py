"""Streams from a real two-scheduler cluster: get -w, events -w, logs options, version.

`get -w` is a server stream: the header once, then a row per change, and it
goes on across the death of the scheduler it was reading from (the leader,
killed with SIGKILL) without printing a row twice.
"""

from __future__ import annotations

import calendar
import json
import queue
import re
import subprocess
import threading
import time

import pytest
from conftest import MCTL, Cluster

TICKER = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: 1
  image: busybox
  command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
"""

CRASHER = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: crasher
spec:
  image: busybox
  restartPolicy: Always
  command: ["sh", "-c", "echo run $(cat /proc/uptime); sleep 1; exit 3"]
"""


@pytest.fixture(scope="module")
def two(cluster_factory) -> Cluster:
    return cluster_factory(1, "--schedulers", "2")


class Output:
    """A child's stdout lines, read on a thread so a test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, what: str, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the stream ended before {what}: {self.lines}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"timed out waiting for {what}; got {self.lines}")

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err


def apply(cluster: Cluster, tmp_path, text: str, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    cluster.mctl("apply", "-f", str(path))
    return str(path)


def leader(cluster: Cluster) -> str:
    out = cluster.mctl("cluster", "status").stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("leader:"))


def address_of(cluster: Cluster, name: str) -> str:
    argv = next(p for p in cluster.state()["processes"] if p["name"] == name)["argv"]
    return argv[argv.index("--listen") + 1]


def watch(cluster: Cluster, *args: str) -> Output:
    return Output(subprocess.Popen(MCTL + list(args), env=cluster.env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))


def shown(row: str) -> tuple[str, ...]:
    """A replica row without its columns that move on their own (AGE, CPU, MEMORY)."""
    cells = row.split()
    return tuple(cells[:4])


def test_get_w_streams_rows_and_survives_a_leader_kill_without_duplicates(two, tmp_path):
    old = leader(two)
    assert old in ("scheduler", "scheduler2")
    other = "scheduler2" if old == "scheduler" else "scheduler"
    # The leader's address first: the stream is read from it until it dies.
    server = f"{address_of(two, old)},{address_of(two, other)}"
    out = watch(two, "--server", server, "get", "replicas", "-w")
    first = apply(two, tmp_path, TICKER.format(name="ticker"), "ticker")
    row = out.wait_for("the new replica's row, running", r"^ticker-\w{5} .* Running ")
    before_kill = len(out.lines)
    rows_before = {shown(line) for line in out.lines[1:]}

    two.kill(old)
    second = apply(two, tmp_path, TICKER.format(name="after"), "after")
    out.wait_for("a replica made after the kill", r"^after-\w{5} .* Running ", timeout=60)
    assert out.proc.poll() is None, "the watch ended with its scheduler"
    assert [line for line in out.lines if line.startswith("NAME")] == [out.lines[0]]
    # Rows before the kill are not printed again after it unless they changed.
    again = [line for line in out.lines[before_kill:] if shown(line) in rows_before]
    assert not again, f"printed twice: {again}"
    after_rows = [shown(line) for line in out.lines[before_kill:]]
    assert len(after_rows) == len(set(after_rows)), out.lines
    assert row.split()[0] in {line.split()[0] for line in out.lines[1:before_kill]}
    assert out.stop() == ""
    two.mctl("delete", "-f", first, "--timeout", "30")
    two.mctl("delete", "-f", second, "--timeout", "30")
    two.restart(old)
    two.wait_for("both schedulers serving", lambda: two.mctl(
        "--server", address_of(two, old), "version", check=False).returncode == 0, timeout=30)


LABELLED = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
  labels: {labels}
spec:
  replicas: 0
  image: busybox
  command: ["sleep", "3600"]
"""


def test_get_w_with_a_selector_shows_labels_and_each_labels_change(two, tmp_path):
    out = watch(two, "get", "workloads", "-w", "-l", "tier=demo", "--show-labels")
    other = apply(two, tmp_path, LABELLED.format(name="plain", labels="{tier: other}"), "plain")
    first = apply(two, tmp_path, LABELLED.format(name="shown", labels="{tier: demo}"), "shown")
    out.wait_for("the labelled workload", r"^shown .* tier=demo$")
    assert re.match(r"^NAME .* LABELS$", out.lines[0]), out.lines   # with the first row
    apply(two, tmp_path, LABELLED.format(name="shown", labels="{tier: demo, x: y}"), "shown")
    out.wait_for("its new labels", r"^shown .* tier=demo,x=y$")
    assert not [line for line in out.lines if line.startswith("plain ")]
    assert out.stop() == ""
    two.mctl("delete", "-f", first, "--timeout", "30")
    two.mctl("delete", "-f", other, "--timeout", "30")


def test_events_w_shows_new_events_as_they_happen(two, tmp_path):
    out = watch(two, "events", "-w")
    path = apply(two, tmp_path, TICKER.format(name="evented"), "evented")
    line = out.wait_for("the replica's Scheduled event", r"\bScheduled\b.*replica/evented-")
    assert line.split()[1] == "Normal"
    assert out.lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert out.stop() == ""
    listed = two.mctl("events", "--for", f"replica/{line.split()[3].split('/')[1]}").stdout
    assert "Scheduled" in listed
    two.mctl("delete", "-f", path, "--timeout", "30")


def test_logs_since_timestamps_and_previous_after_a_crash_restart(two, tmp_path):
    path = apply(two, tmp_path, CRASHER, "crasher")
    name = two.wait_for("a restart", lambda: next(
        (r["metadata"]["name"] for r in two.replicas("crasher")
         if r.get("status", {}).get("restarts", 0) >= 1), None), timeout=60)
    previous = two.wait_for("the previous run's log", lambda: (
        p if (p := two.mctl("logs", "--previous", name, check=False)).returncode == 0 else None))
    assert previous.stdout.count("run ") == 1, previous.stdout
    current = two.wait_for("the current run's line", lambda: (
        out if (out := two.mctl("logs", name).stdout).count("run ") == 1 else None))
    assert current != previous.stdout           # another run, another uptime

    stamped = two.mctl("logs", "--timestamps", "--previous", name).stdout.strip()
    stamp = stamped.split(" ", 1)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp), stamped
    secs = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    # --since just after the previous run's line: not shown; just before: shown.
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs + 1))
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))
    assert two.mctl("logs", "--previous", "--since", after, name).stdout == ""
    assert two.mctl("logs", "--previous", "--since", before, name).stdout.count("run ") == 1
    assert two.mctl("logs", "--since", "1h", name).stdout.count("run ") >= 1
    two.mctl("delete", "-f", path, "--timeout", "30")

    ticker = apply(two, tmp_path, TICKER.format(name="fresh"), "fresh")
    two.wait_for("fresh running", lambda: any(
        r.get("status", {}).get("phase") == "Running" for r in two.replicas("fresh")))
    fresh = two.replicas("fresh")[0]["metadata"]["name"]
    none = two.mctl("logs", "--previous", fresh, check=False)
    assert none.returncode == 1
    assert none.stderr == (f"mctl: node node1: replica {fresh} has no previous container:"
                           " it has not restarted\n")
    two.mctl("delete", "-f", ticker, "--timeout", "30")


def test_version_of_client_and_server(two):
    out = two.mctl("version").stdout.splitlines()
    assert out[0].startswith("Client Version: ") and out[1].startswith("Server Version: ")
    assert out[0].split(": ")[1] == out[1].split(": ")[1] != "unknown"
    doc = json.loads(two.mctl("version", "-o", "json").stdout)
    assert doc["serverVersion"]["servedBy"]
    client = two.mctl("--server", "127.0.0.1:1", "version", "--client").stdout
    assert client.startswith("Client Version: ")
