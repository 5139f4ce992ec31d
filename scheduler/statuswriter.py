"""Writing nodes' status reports to the store in batches (group commit).

A thousand nodes whose replicas all start at once send a thousand reports
within a second. Written one by one, each is a read, a merge and a
transaction of a few writes, and a worker thread of the API held for the
round trip; under that load they also lose compare-and-swap races to each
other's revisions and to the controller, and every lost race re-reads.

Here the API thread that brings a report queues it and, if no other thread
is writing, becomes the writer: it takes every report queued so far (one
per node: a node's later report is folded into its earlier one,
status.combine_reports), reads only the replicas of those nodes (from the
watch cache, at one revision), merges each report (status.merge_report),
and commits the changes in transactions of up to MAX_TXN_OPS writes, a
node's writes kept in one transaction where they fit. Reports that arrive
meanwhile wait and go in the next batch, taken by the first of their
threads to find the writer free. Every caller returns once its report is
stored (or failed), as a lone write did: Nomad's servers batch clients'
allocation updates the same way (Node.UpdateAlloc), for the same reason.

A transaction that loses a race fails alone: the nodes it carried are
merged again on a cache that has caught up with etcd's current revision
(never a read of the whole prefix), up to retry.ATTEMPTS times. So a batch
costs O(the reporting nodes' replicas), whatever the cluster's size.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from mctl.v1 import node_pb2, types_pb2

from .cache import StateCache
from .retry import ATTEMPTS, TooManyConflicts
from .status import ReplicaKey, ReportMerge, combine_reports, merge_report
from .store import MAX_TXN_OPS, Conflict, Snapshot, Store, Write

log = logging.getLogger(__name__)


@dataclass
class _Queued:
    """A node's report waiting for the writer, and everyone waiting on it."""

    report: node_pb2.StatusReport
    futures: list[Future[ReportMerge]] = field(default_factory=list)


class StatusWriter:
    def __init__(self, store: Store, cache: StateCache | None,
                 commit: Callable[[list[Write]], None],
                 record: Callable[[list[types_pb2.Event]], None],
                 written: Callable[[], int] = lambda: 0) -> None:
        """`commit` writes unfenced compare-and-swap writes (raising Conflict);
        `record` records events once their change is stored; `written()` is
        the revision of this scheduler's last write, which reads wait for (a
        report about a replica placed a moment ago must find it bound)."""
        self.store = store
        self.cache = cache
        self._written = written
        self._commit = commit
        self._record = record
        self._cond = threading.Condition()
        self._queued: dict[str, _Queued] = {}    # at most one entry per node
        self._writing = False
        self.batches = 0       # batches written so far (tests see the grouping)

    def write(self, report: node_pb2.StatusReport) -> ReportMerge:
        """Stores what `report` changes; returns the merge once it is stored."""
        future: Future[ReportMerge] = Future()
        with self._cond:
            queued = self._queued.get(report.node)
            if queued is None:
                self._queued[report.node] = _Queued(report, [future])
            else:
                queued.report = combine_reports(queued.report, report)
                queued.futures.append(future)
            while not future.done():
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch, self._queued = self._queued, {}
                self._cond.release()
                try:
                    self._write_batch(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        return future.result()

    def _write_batch(self, batch: dict[str, _Queued]) -> None:
        try:
            results = self._merge_and_commit({node: q.report for node, q in batch.items()})
        except BaseException as e:  # noqa: BLE001 - every waiting caller must hear of it
            results = {node: e for node in batch}
        self.batches += 1
        for node, q in batch.items():
            outcome = results[node]
            for f in q.futures:
                if isinstance(outcome, BaseException):
                    f.set_exception(outcome)
                else:
                    f.set_result(outcome)

    def _read(self, nodes: set[str], fresh: bool) -> Snapshot:
        """The replicas of `nodes`; `fresh`: as of etcd's current revision."""
        if self.cache is None:
            return self.store.snapshot()
        return self.cache.nodes_snapshot(
            nodes, self.store.revision() if fresh else self._written())

    def _merge_and_commit(self, reports: dict[str, node_pb2.StatusReport]
                          ) -> dict[str, ReportMerge | BaseException]:
        done: dict[str, ReportMerge] = {}
        # What earlier attempts stored for a node whose later writes lost a race.
        stored: dict[str, ReportMerge] = {}
        todo = set(reports)
        for attempt in range(ATTEMPTS):
            snap = self._read(todo, fresh=attempt > 0)
            by_node: dict[str, dict[ReplicaKey, types_pb2.Replica]] = {n: {} for n in todo}
            for key, r in snap.replicas.items():
                mine = by_node.get(r.node)
                if mine is not None:
                    mine[key] = r
            merges = {node: merge_report(by_node[node], reports[node]) for node in sorted(todo)}
            lost: set[str] = set()
            for nodes, writes in _chunks(merges, snap, self.store):
                try:
                    self._commit(writes)
                except Conflict:
                    lost |= nodes
                    continue
                committed = {w.key for w in writes}
                for node in nodes:
                    _keep(stored.setdefault(node, ReportMerge()), merges[node], committed,
                          self.store)
            for node in todo - lost:
                final = stored.pop(node, ReportMerge())
                final.usage = merges[node].usage
                done[node] = final
                self._record(final.events)
            todo = lost
            if not todo:
                break
        out: dict[str, ReportMerge | BaseException] = dict(done)
        for node in todo:
            partial = stored.pop(node, None)
            if partial is not None:
                self._record(partial.events)
            out[node] = TooManyConflicts(f"status report of node {node} lost {ATTEMPTS} "
                                         "races to concurrent changes")
        return out


def _writes_of(merge: ReportMerge, snap: Snapshot, store: Store) -> list[Write]:
    out = []
    for key, r in merge.updated.items():
        k = store.keys.replica(*key)
        out.append(Write(k, r.SerializeToString(), snap.mod_revisions[k]))
    for key in merge.removed:
        k = store.keys.replica(*key)
        out.append(Write(k, None, snap.mod_revisions[k]))
    return out


def _chunks(merges: dict[str, ReportMerge], snap: Snapshot,
            store: Store) -> list[tuple[set[str], list[Write]]]:
    """Transactions of at most MAX_TXN_OPS writes, each node's in one where they fit."""
    out: list[tuple[set[str], list[Write]]] = []
    nodes: set[str] = set()
    batch: list[Write] = []
    for node, merge in merges.items():
        writes = _writes_of(merge, snap, store)
        if not writes:
            continue
        if batch and len(batch) + len(writes) > MAX_TXN_OPS:
            out.append((nodes, batch))
            nodes, batch = set(), []
        for i in range(0, len(writes), MAX_TXN_OPS):
            part = writes[i:i + MAX_TXN_OPS]
            if len(batch) + len(part) > MAX_TXN_OPS:
                out.append((nodes, batch))
                nodes, batch = set(), []
            nodes.add(node)
            batch += part
    if batch:
        out.append((nodes, batch))
    return out


def _keep(into: ReportMerge, merge: ReportMerge, committed: set[str], store: Store) -> None:
    """Adds to `into` the part of `merge` whose writes are in `committed`."""
    for key, r in merge.updated.items():
        if store.keys.replica(*key) in committed:
            into.updated[key] = r
            into.events += merge.key_events.get(key, [])
    for key in merge.removed:
        if store.keys.replica(*key) in committed:
            into.removed.append(key)
            into.events += merge.key_events.get(key, [])
