"""How soon `mctl get -w` prints a change, and how soon it resumes after its scheduler dies.

    .venv/bin/python bench/watch_latency.py [--runs 10]

Not a test; needs root. `mctl cluster up --nodes 1 --schedulers 2` in a
temporary --dir, then `mctl get nodes -w` reading from one scheduler:

- change: node1 cordoned and uncordoned in turns (the Cordon call, made
  in-process); from the call's start to the node's row printed with its new
  status (the row comes about when the call returns: the scheduler's watch
  sees the write while the call still records its event).
  This is the path etcd watch -> scheduler cache -> watch hub -> stream ->
  CLI; the poll it replaced printed within 1 s plus a full list per second.
- resume: the scheduler the stream reads from is killed (SIGKILL), a
  cordon goes through the other one; from the kill to the row printed (the
  CLI notices, watches again on the other address, skips what it showed).

`cluster down` runs at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import threading
import time

from _common import MCTL, Cleanup, LocalCluster, print_header, temp_dir


class Rows:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put((time.monotonic(), line))

    def wait(self, needle: str, timeout: float = 60) -> float:
        """When a row with `needle` was read."""
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if needle in line:
                return at


def listen_address(cluster: LocalCluster, name: str) -> str:
    argv = cluster.process(name)["argv"]
    return str(argv[argv.index("--listen") + 1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    with Cleanup() as stack:
        base = temp_dir(stack, "watch")
        cluster = LocalCluster(stack, base, nodes=1, extra=("--schedulers", "2"))
        print_header("get -w: change to printed row, and resume after a scheduler dies")
        first, second = listen_address(cluster, "scheduler"), listen_address(cluster,
                                                                               "scheduler2")
        proc = subprocess.Popen(MCTL + ["--server", f"{first},{second}", "get", "nodes", "-w"],
                                env=cluster.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        stack.callback(proc.kill)
        rows = Rows(proc)
        rows.wait("node1")
        # The CLI's own connection, in this process: a CLI start-up is not measured.
        os.environ["MCTL_HOME"] = str(cluster.home)
        from mctl.cli.client import stub
        from mctl.cli.main import build_parser
        from mctl.v1 import control_pb2
        s = stub(build_parser().parse_args(["--server", second, "cordon", "node1"]))
        latencies = []
        for i in range(args.runs):
            cordon = i % 2 == 0
            start = time.monotonic()
            s.Cordon(control_pb2.CordonRequest(node="node1", cordoned=cordon), timeout=10)
            latencies.append(rows.wait("SchedulingDisabled" if cordon else "Ready ") - start)
        print(f"Cordon call -> row: median {statistics.median(latencies) * 1000:.0f} ms,"
              f" max {max(latencies) * 1000:.0f} ms over {args.runs}")
        killed = cluster.kill("scheduler")
        s.Cordon(control_pb2.CordonRequest(node="node1", cordoned=True), timeout=10)
        resumed = rows.wait("SchedulingDisabled") - killed
        print(f"scheduler killed -> change printed from the other: {resumed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
