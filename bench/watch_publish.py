"""Micro-benchmark of the watch hub (scheduler/watchstream.py): the cost of one publish.

Not a test. Run with the project's interpreter:

    .venv/bin/python bench/watch_publish.py [--replicas 20000] [--workloads 1000] [--nodes 100]

While anyone watches, each change the scheduler's etcd watch brings costs
one publish: the row versions of the whole snapshot (`view`), compared with
the last ones, and rows built only for what differs. Measured here in
memory, without gRPC or etcd:

- view: computing every row's version (the first time, then with the
  records' fields remembered by mod revision);
- publish, one change: one replica's record changed (its row, its
  workload's and its node's are rebuilt), fanned out to 12 streams;
- first list: what a new stream is sent (every replica row), in bytes;
- rows: the hub's memory for its rows (tracemalloc).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

from mctl.scheduler.keys import KeyCodec
from mctl.scheduler.store import Snapshot
from mctl.scheduler.watchstream import MAX_STREAMS, Filter, Stream, Versions, WatchHub
from mctl.v1 import types_pb2


class Cache:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def snapshot(self, min_revision: int = 0) -> Snapshot:
        return self.snap

    def latest(self) -> Snapshot:
        return self.snap


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
        r.spec.CopyFrom(snap.workloads[("default", r.workload)].spec)
        r.spec.resources.cpu_millis = 100
        r.status.phase = types_pb2.REPLICA_PHASE_RUNNING
        snap.replicas[("default", r.metadata.name)] = r
        snap.mod_revisions[keys.replica("default", r.metadata.name)] = rev
        rev += 1
    snap.revision = rev
    return snap


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--replicas", type=int, default=20_000)
    p.add_argument("--workloads", type=int, default=1_000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    keys = KeyCodec()
    snap = build(args.replicas, args.workloads, args.nodes, keys)
    print(f"watch hub: {args.replicas} replicas, {args.workloads} workloads, {args.nodes} nodes")

    versions = Versions(keys)
    times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        versions.view(snap)
        times.append(time.perf_counter() - t0)
    print(f"view (every row's version), first: {times[0] * 1000:.1f} ms, then median"
          f" {statistics.median(times[1:]) * 1000:.1f} ms")

    hub = WatchHub(Cache(snap), keys, max_streams=MAX_STREAMS, queue_limit=10**6)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    hub._publish(snap)          # the first stream's list: every row built once
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"rows kept while anyone watches: {grown / 2**20:.1f} MiB")
    assert hub._rows is not None
    listed = sum(c.ByteSize() for _, c in hub._rows["replicas"].values())
    print(f"first list of replicas sent to a new stream: {listed / 2**20:.1f} MiB")

    streams = [Stream(Filter("replicas", "", ""), 10**6) for _ in range(MAX_STREAMS)]
    hub._object_streams.update(streams)
    times = []
    key = next(iter(snap.replicas))
    for i in range(args.rounds):
        changed = types_pb2.Replica()
        changed.CopyFrom(snap.replicas[key])
        changed.status.restarts = i + 1
        snap.replicas[key] = changed
        snap.revision += 1
        snap.mod_revisions[keys.replica(*key)] = snap.revision
        t0 = time.perf_counter()
        hub._publish(snap)
        times.append(time.perf_counter() - t0)
    sent = [m for s in streams for m in s.take(0)]
    assert all(len(m.changes) == 1 for m in sent), "one row per change"
    print(f"publish of one replica change to {MAX_STREAMS} streams: median"
          f" {statistics.median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
