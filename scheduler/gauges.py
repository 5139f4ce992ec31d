"""The scheduler's state gauges, computed from its watch cache at each scrape.

Pending replicas by reason, nodes by state and the leader flag are facts of
the cluster state the cache already holds; computing them when Prometheus
asks (common/metrics.py's sources) keeps the controller free of bookkeeping
and the series exactly as many as the states (every state is given, at 0 if
none, so a graph of one does not vanish when it empties).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mctl.common.metrics import Sample
from mctl.common.phases import reason_name
from mctl.v1 import types_pb2

from .cache import StateCache

NODE_STATES = ("Ready", "NotReady", "Ready,SchedulingDisabled", "NotReady,SchedulingDisabled")
_PENDING = (types_pb2.REPLICA_PHASE_UNSPECIFIED, types_pb2.REPLICA_PHASE_PENDING)


def node_state(ready: bool, cordoned: bool) -> str:
    """kubectl's spelling of a node's state."""
    return ("Ready" if ready else "NotReady") + (",SchedulingDisabled" if cordoned else "")


def source(cache: StateCache, leading: Callable[[], bool]) -> Callable[[], Iterator[Sample]]:
    def samples() -> Iterator[Sample]:
        yield "leader", {}, 1.0 if leading() else 0.0
        snap = cache.snapshot()
        nodes = dict.fromkeys(NODE_STATES, 0)
        for name, node in snap.nodes.items():
            nodes[node_state(name in snap.heartbeats, node.cordoned)] += 1
        for state, count in nodes.items():
            yield "nodes", {"state": state}, float(count)
        pending: dict[str, int] = {}
        for r in snap.replicas.values():
            if r.status.phase in _PENDING and not r.metadata.deletion_requested:
                # No reason yet: created and not placed, or placed and not started.
                why = reason_name(r.status.reason) or ("Scheduled" if r.node else "Unscheduled")
                pending[why] = pending.get(why, 0) + 1
        for why, count in sorted(pending.items()):
            yield "pending_replicas", {"reason": why}, float(count)
    return samples
