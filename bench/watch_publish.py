"""Micro-benchmark of the watch hub (scheduler/watchstream.py): the cost of one publish.

Not a test. Run with the project's interpreter:

    .venv/bin/python bench/watch_publish.py [--replicas 20000] [--workloads 1000] [--nodes 100]
        [--compare-tree DIR --alternate 3]

While anyone watches, each change the scheduler's etcd watch brings costs
the hub one pass. Measured here in memory, through the real watch cache
(scheduler/cache.py) over a store that only holds the built state, without
gRPC or etcd:

- first list: a pass that builds every row (what the first stream of a
  scheduler costs, and a pass after the cache reloaded), in time, memory
  (tracemalloc) and bytes sent to a new stream;
- publish, one change: one replica's record changed (its row, its
  workload's and its node's are rebuilt), fanned out to 12 streams, half
  of them filtered by namespace and by a label selector that the changed
  replica does not match.

--compare-tree DIR runs DIR's own copy of this script (another checkout,
e.g. `git worktree add /tmp/base HEAD`) and this one in turn, --alternate
times each, in fresh processes, and prints the ratio of their medians.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import tree_layout

from mctl.common import selectors
from mctl.scheduler.cache import StateCache
from mctl.scheduler.keys import KeyCodec
from mctl.scheduler.store import Snapshot
from mctl.scheduler.watchstream import MAX_STREAMS, Filter, Stream, WatchHub
from mctl.v1 import types_pb2

PUBLISH_LINE = re.compile(r"publish of one replica change to \d+ streams: median ([0-9.]+) ms")


@dataclass
class _Put:
    """The shape of one put in an etcd watch response, as cache.py reads it."""

    key: bytes
    value: bytes
    mod_revision: int


@dataclass
class _Header:
    revision: int


@dataclass
class _Response:
    header: _Header
    events: list[_Put] = field(default_factory=list)


class MemoryStore:
    """Just enough of store.Store for the watch cache: the built state, and its watch."""

    def __init__(self, snap: Snapshot, keys: KeyCodec) -> None:
        self.snap = snap
        self.keys = keys
        self.callback: Callable[[object], None] | None = None

    def snapshot(self) -> Snapshot:
        return self.snap.copy()

    def revision(self) -> int:
        return self.snap.revision

    def watch_events(self, callback: Callable[[object], None],
                     start_revision: int) -> Callable[[], None]:
        self.callback = callback
        return lambda: None

    def put(self, key: str, value: bytes) -> None:
        """One write, told to the cache as etcd's watch would."""
        self.snap.revision += 1
        assert self.callback is not None
        self.callback(_Response(_Header(self.snap.revision),
                                [_Put(key.encode(), value, self.snap.revision)]))


def build(replicas: int, workloads: int, nodes: int, keys: KeyCodec) -> Snapshot:
    snap = Snapshot(revision=1)
    rev = 1
    for n in range(nodes):
        snap.nodes[f"node-{n:03d}"] = types_pb2.Node(name=f"node-{n:03d}", address="10.0.0.1:1")
        snap.heartbeats.add(f"node-{n:03d}")
        snap.mod_revisions[keys.node(f"node-{n:03d}")] = rev
        rev += 1
    for w in range(workloads):
        wl = types_pb2.Workload()
        wl.metadata.namespace, wl.metadata.name = "default", f"web-{w:04d}"
        wl.spec.image, wl.spec.replicas = "busybox", replicas // workloads
        wl.spec.command.extend(["sleep", "3600"])
        snap.workloads[("default", wl.metadata.name)] = wl
        snap.mod_revisions[keys.workload("default", wl.metadata.name)] = rev
        rev += 1
    for i in range(replicas):
        r = types_pb2.Replica(workload=f"web-{i % workloads:04d}", node=f"node-{i % nodes:03d}")
        r.metadata.namespace, r.metadata.name = "default", f"web-{i % workloads:04d}-{i:06d}"
        r.metadata.labels["app"] = r.workload
        r.spec.CopyFrom(snap.workloads[("default", r.workload)].spec)
        r.spec.resources.cpu_millis = 100
        r.status.phase = types_pb2.REPLICA_PHASE_RUNNING
        snap.replicas[("default", r.metadata.name)] = r
        snap.mod_revisions[keys.replica("default", r.metadata.name)] = rev
        rev += 1
    snap.revision = rev
    return snap


def measure(args: argparse.Namespace) -> None:
    keys = KeyCodec()
    store = MemoryStore(build(args.replicas, args.workloads, args.nodes, keys), keys)
    print(f"watch hub: {args.replicas} replicas, {args.workloads} workloads, {args.nodes} nodes")
    cache = StateCache(store)  # type: ignore[arg-type]
    cache.snapshot()
    t0 = time.perf_counter()
    WatchHub(cache, keys)._publish(cache.snapshot())    # every row built once
    first = time.perf_counter() - t0
    hub = WatchHub(cache, keys, max_streams=MAX_STREAMS, queue_limit=10**6)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    hub._publish(cache.snapshot())      # again, to see what it keeps
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert hub._rows is not None
    listed = sum(c.ByteSize() for _, c in hub._rows["replicas"].values())
    print(f"first list, every row built: {first * 1000:.1f} ms")
    print(f"rows kept while anyone watches: {grown / 2**20:.1f} MiB")
    print(f"first list of replicas sent to a new stream: {listed / 2**20:.1f} MiB")

    other = selectors.parse("app=nothing")
    streams = [Stream(Filter("replicas", "default", "", other if i % 2 else selectors.EVERYTHING),
                      10**6) for i in range(MAX_STREAMS)]
    hub._object_streams.update(streams)
    key, stored = next(iter(cache.snapshot().replicas.items()))
    record = types_pb2.Replica()
    record.CopyFrom(stored)         # the cache's records are never changed in place
    times = []
    for i in range(args.rounds):
        record.status.restarts = i + 1
        store.put(keys.replica(*key), record.SerializeToString())
        t0 = time.perf_counter()
        hub.publish()
        times.append(time.perf_counter() - t0)
    sent = [m for s in streams for m in s.take(0)]
    assert len(sent) == args.rounds * MAX_STREAMS // 2, "the filtered half is sent nothing"
    assert all(len(m.changes) == 1 for m in sent), "one row per change"
    print(f"publish of one replica change to {MAX_STREAMS} streams: median"
          f" {statistics.median(times) * 1000:.3f} ms")


def run_one(script: Path, argv: list[str], pythonpath: str | None) -> float:
    env = {"PATH": "/usr/bin:/bin"} | ({"PYTHONPATH": pythonpath} if pythonpath else {})
    out = subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True,
                         text=True, check=True).stdout
    found = PUBLISH_LINE.search(out)
    if found is None:
        raise RuntimeError(f"{script}: no publish figure in its output:\n{out}")
    return float(found.group(1))


def compare(args: argparse.Namespace) -> None:
    tree = args.compare_tree.resolve()
    argv = [f"--replicas={args.replicas}", f"--workloads={args.workloads}",
            f"--nodes={args.nodes}", f"--rounds={args.rounds}"]
    with tempfile.TemporaryDirectory(prefix="watch-publish-") as tmp:
        layout = str(tree_layout(Path(tmp), tree))
        theirs: list[float] = []
        ours: list[float] = []
        for _ in range(args.alternate):
            theirs.append(run_one(tree / "bench" / "watch_publish.py", argv, layout))
            ours.append(run_one(Path(__file__).resolve(), argv, None))
    old, new = statistics.median(theirs), statistics.median(ours)
    print(f"{args.replicas} replicas: publish of one change, {args.compare_tree}: {old:.3f} ms,"
          f" this tree: {new:.3f} ms (medians of {args.alternate} runs each, alternated);"
          f" {old / new:.0f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=20_000)
    p.add_argument("--workloads", type=int, default=1_000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--compare-tree", type=Path, default=None)
    p.add_argument("--alternate", type=int, default=3)
    args = p.parse_args()
    if args.compare_tree is not None:
        compare(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
