"""What a node's status report changes in the replica records, decided purely.

An agent reports every replica it runs (phase, exit, restarts, address,
usage). Merging a report into the stored records:

- a replica the report shows gets the reported status (a replica on its
  way out stays Terminating whatever its container does meanwhile);
- a replica on its way out that a complete report no longer shows is gone
  for good: its record is removed;
- usage samples are kept aside (usage.py), never in the records;
- the node's own incidents (drift repaired: node_events) become Node
  events about the reporting node, at most MAX_REPORT_EVENTS a report.

Only changed records are written, and each change is worth the events
`mctl describe` shows: starts, restarts, completions, failures, back-off.
The controller commits the result (it is the one writer of replica records).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mctl.common.phases import phase_name, reason_name
from mctl.v1 import node_pb2, types_pb2

from .events import NORMAL, WARNING, event

log = logging.getLogger(__name__)

ReplicaKey = tuple[str, str]

# A node says at most this much per report about itself (the agent sends
# five; a hostile or broken agent gets no more room than that).
MAX_REPORT_EVENTS = 10
MAX_EVENT_REASON = 64
MAX_EVENT_MESSAGE = 256


@dataclass
class ReportMerge:
    """The record changes of one report, and what to remember and say about them."""

    updated: dict[ReplicaKey, types_pb2.Replica] = field(default_factory=dict)
    removed: list[ReplicaKey] = field(default_factory=list)
    usage: dict[ReplicaKey, types_pb2.Usage] = field(default_factory=dict)
    events: list[types_pb2.Event] = field(default_factory=list)
    # The same events by the replica whose change they tell, so that a
    # writer whose commit went through only in part records only those.
    key_events: dict[ReplicaKey, list[types_pb2.Event]] = field(default_factory=dict)


def merge_report(stored: dict[ReplicaKey, types_pb2.Replica],
                 report: node_pb2.StatusReport) -> ReportMerge:
    """Merges `report` into the stored replicas bound to its node (others are ignored)."""
    reported = {(r.namespace, r.name): r for r in report.replicas}
    out = ReportMerge()
    for key, r in stored.items():
        if r.node != report.node:
            continue
        rep = reported.get(key)
        if rep is None or rep.uid != r.metadata.uid:
            # The node does not run it (any more). A replica on its way
            # out is now gone for good.
            if report.complete and r.metadata.deletion_requested:
                out.removed.append(key)
                log.info("replica=%s/%s removed from node=%s", *key, report.node)
                out.key_events[key] = [event("Replica", *key, "Removed",
                                             f"container removed from node {report.node}")]
                out.events += out.key_events[key]
            continue
        if rep.HasField("usage"):
            out.usage[key] = rep.usage
        status = types_pb2.ReplicaStatus()
        status.CopyFrom(rep.status)
        if r.metadata.deletion_requested:
            status.phase = types_pb2.REPLICA_PHASE_TERMINATING
        if status == r.status:
            continue
        updated = types_pb2.Replica()
        updated.CopyFrom(r)
        updated.status.CopyFrom(status)
        out.updated[key] = updated
        if status.phase != r.status.phase:
            log.info("replica=%s/%s node=%s phase %s -> %s %s", *key, report.node,
                     phase_name(r.status.phase), phase_name(status.phase),
                     reason_name(status.reason))
        out.key_events[key] = status_events(key, report.node, r.status, status)
        out.events += out.key_events[key]
    return out


def combine_reports(earlier: node_pb2.StatusReport,
                    later: node_pb2.StatusReport) -> node_pb2.StatusReport:
    """One report that says what `earlier` then `later` (same node) said.

    Reports waiting to be written are folded per node, so a node that
    reports faster than the store takes the writes costs one merge, not a
    queue: a complete report replaces whatever came before it; a partial
    one overrides the replicas it names and keeps the rest.
    """
    if later.complete:
        return later
    out = node_pb2.StatusReport()
    out.CopyFrom(earlier)
    index = {(r.namespace, r.name): i for i, r in enumerate(out.replicas)}
    for r in later.replicas:
        i = index.get((r.namespace, r.name))
        if i is None:
            index[(r.namespace, r.name)] = len(out.replicas)
            out.replicas.append(r)
        else:
            out.replicas[i].CopyFrom(r)
    return out


def status_events(key: ReplicaKey, node: str, old: types_pb2.ReplicaStatus,
                  new: types_pb2.ReplicaStatus) -> list[types_pb2.Event]:
    """The events a status change on a node is worth: starts, restarts, ends."""
    events = []
    reason = reason_name(new.reason)
    detail = f" ({reason}: {new.message})" if new.message else (
        f" ({reason})" if reason else "")
    if new.restarts > old.restarts:
        why = f" (last exit: {new.last_exit})" if new.last_exit else detail
        events.append(event("Replica", *key, "Restarted",
                            f"container restarted on node {node}, restart {new.restarts}{why}",
                            WARNING))
    if (new.reason == types_pb2.REPLICA_REASON_IMAGE_PULL_ERROR
            and old.reason != types_pb2.REPLICA_REASON_IMAGE_PULL_ERROR):
        # Once per spell of failures: the agent's retries (with back-off) only
        # change the message's attempt count.
        events.append(event("Replica", *key, reason, f"image pull failed on node {node}: "
                            f"{new.message}", WARNING))
    if new.phase != old.phase:
        if new.phase == types_pb2.REPLICA_PHASE_RUNNING:
            events.append(event("Replica", *key, "Started", f"container running on node {node}",
                                NORMAL))
        elif new.phase == types_pb2.REPLICA_PHASE_SUCCEEDED:
            events.append(event("Replica", *key, "Completed",
                                f"container exited 0 on node {node}", NORMAL))
        elif new.phase == types_pb2.REPLICA_PHASE_FAILED:
            events.append(event("Replica", *key, reason or phase_name(new.phase),
                                f"container failed on node {node}, exit code {new.exit_code}"
                                f"{detail}", WARNING))
        elif new.reason == types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF:
            events.append(event("Replica", *key, "BackOff",
                                f"back-off restarting on node {node}{detail}", WARNING))
    return events


def node_events(report: node_pb2.StatusReport) -> list[types_pb2.Event]:
    """The incidents a report carries, as Node events about the reporting node.

    Whatever the agent wrote, an event is about the node that reported it,
    comes from it, and has a bounded reason and message; repeats within one
    report are kept once.
    """
    out: list[types_pb2.Event] = []
    seen: set[tuple[str, str]] = set()
    for e in report.events[:MAX_REPORT_EVENTS]:
        reason = e.reason[:MAX_EVENT_REASON] or "NodeIncident"
        message = e.message[:MAX_EVENT_MESSAGE]
        if (reason, message) in seen:
            continue
        seen.add((reason, message))
        out.append(types_pb2.Event(kind="Node", namespace="", name=report.node,
                                   type=WARNING if e.type == WARNING else NORMAL,
                                   reason=reason, message=message, unix_ms=e.unix_ms,
                                   source=f"node/{report.node}"))
    return out
