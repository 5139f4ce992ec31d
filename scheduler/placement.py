"""Placement: choosing a node for a replica.

Placement is a pipeline, the shape of Nomad's feasibility checkers and rank
iterators and of the Kubernetes scheduler framework's Filter and Score
plugins:

    filters -> scorers -> normalize -> pick

1. Filters decide feasibility. Each is a small pure function
   ``(node, request) -> reason | None``. A node is rejected by the first filter
   that returns a reason, and that reason alone is counted for it, so a
   replica that fits nowhere gets an explanation like
   ``0/3 nodes fit: 2 insufficient memory, 1 cordoned``. "Does not fit" is an
   ordinary outcome, not an error.
2. Scorers rank the feasible nodes. Each is a pure function
   ``(node, request) -> float`` bounded to [0, MAX_SCORE], so no scorer can
   drown the others by scale.
3. Normalize: the final score is the weighted mean of the scorers that apply
   to the request (Nomad's ScoreNormalizationIterator), again in
   [0, MAX_SCORE]. Because every score is bounded per node, no pass across all
   nodes is needed, which is what lets a batch re-score only the node it just
   changed.
4. Pick the highest score. Ties go to the node that comes first in a seeded
   shuffle of the nodes (sorted by name first, so the input order does not
   matter): the same nodes, requests and seed always give the same choice, and
   any decision can be replayed.

`place_one` answers "where would this go?" without changing anything.
`place_batch` places many replicas in order and records each placement on its
`NodeState`, so later replicas see the earlier ones (their resources, host
ports and the spread count).

Speed. A batch keeps, per distinct request, each node's rejection reason or
score. A placement changes only the chosen node, so the next placement of a
request re-evaluates just the nodes placed on since that request last looked
(usually one), pushes its new score on a heap of (-score, position) and
takes the top, dropping entries that a re-evaluation made stale: O(log
nodes) a placement, where a scan of every score was O(nodes). The filters
that depend only on the node and the request, never on what is placed
(ready, cordoned, node selector), run once per batch and node selector. The
first placement of a request evaluates every node: that is the cost of
`place_one` and the worst case of a batch in which every replica belongs to
another workload. Run `bench/placement_micro.py`.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from mctl.scheduler import imagescore
from mctl.scheduler.model import (
    NO_RESOURCES,
    TERMINAL_PHASES,
    HostPort,
    NodeView,
    ReplicaView,
    Resources,
    WorkloadView,
)

# Rejection reasons, phrased for `unschedulable_message`.
REASON_NOT_READY = "node not ready"
REASON_CORDONED = "cordoned"
REASON_NODE_SELECTOR = "node selector mismatch"
REASON_CPU = "insufficient cpu"
REASON_MEMORY = "insufficient memory"
REASON_PIDS = "insufficient pids"
REASON_HOST_PORT = "host port in use"

# Every scorer returns a value in [0, MAX_SCORE] (Kubernetes' MaxNodeScore).
MAX_SCORE = 100.0
_HALF_MAX_SCORE = MAX_SCORE / 2

# Scorer weights. Spread weighs twice as much as least-allocated, as the
# default Kubernetes profile weighs PodTopologySpread (2) against
# NodeResourcesFit (1): "prefer one replica per node" (SPEC.md) should win
# over packing, so a node without a replica of the workload (spread 100)
# beats one that has one (spread 50) unless the first is nearly full.
SPREAD_WEIGHT = 2.0
LEAST_ALLOCATED_WEIGHT = 1.0


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What a replica needs from a node. Equal requests are interchangeable."""

    workload_key: str
    request: Resources
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    host_ports: tuple[HostPort, ...] = ()
    spread: bool = True
    # Named volumes ("namespace/name") the replica mounts: it must go where
    # they are. `volume_node` is where the first of them lives ("" while
    # none is bound to a node yet), `volume` its name for the reason.
    volumes: tuple[str, ...] = ()
    volume_node: str = ""
    volume: str = ""
    # The pinned digest of its image ("" for none): imagescore.py prefers nodes holding it.
    image_digest: str = ""

    @classmethod
    def for_workload(cls, workload: WorkloadView) -> PlacementRequest:
        """The request of a new replica of the workload's current spec."""
        return cls(
            workload_key=workload.key,
            request=workload.request,
            node_selector=workload.node_selector,
            host_ports=workload.host_ports,
            spread=workload.spread,
        )


@dataclass(frozen=True, slots=True)
class PlacementResult:
    """The chosen node (None: fits nowhere) and the count of nodes per
    rejection reason. The counts cover every node, also when one was chosen."""

    node: str | None
    rejections: Counter[str]

    @property
    def placed(self) -> bool:
        return self.node is not None


@dataclass(slots=True)
class NodeState:
    """A node plus what is placed on it; mutable, the planner's working copy."""

    view: NodeView
    allocated: Resources = NO_RESOURCES
    host_ports: set[HostPort] = field(default_factory=set)
    # Replicas per workload key ("namespace/name"), for the spread scorer.
    per_workload: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def free(self) -> Resources:
        return self.view.capacity - self.allocated

    def add(
        self, workload_key: str, request: Resources, host_ports: Iterable[HostPort] = ()
    ) -> None:
        """Account for one more replica on this node."""
        self.allocated = self.allocated + request
        self.host_ports.update(host_ports)
        self.per_workload[workload_key] = self.per_workload.get(workload_key, 0) + 1

    def place(self, req: PlacementRequest) -> None:
        self.add(req.workload_key, req.request, req.host_ports)


Filter = Callable[[NodeState, PlacementRequest], str | None]
Scorer = Callable[[NodeState, PlacementRequest], float]


# --- Filters ---------------------------------------------------------------
# Static filters look only at the node's registration and the request, never
# at what is placed on the node, so a batch evaluates them once per node and
# node selector. They come first, cheapest first: one attribute, one
# attribute, then a loop over the (usually empty) selector. Putting the node
# selector before the resources also gives the more useful reason: a node
# with the wrong labels will never fit, however much memory is freed.


def volume_reason(volume: str, node: str) -> str:
    return f"volume {volume} is on {node}"


def filter_volume_node(node: NodeState, req: PlacementRequest) -> str | None:
    """A named volume lives on one node's disk: its users go there or nowhere."""
    if req.volume_node and node.name != req.volume_node:
        return volume_reason(req.volume, req.volume_node)
    return None


def filter_ready(node: NodeState, req: PlacementRequest) -> str | None:
    """A node whose agent is not heartbeating would never start the replica."""
    return None if node.view.ready else REASON_NOT_READY


def filter_cordoned(node: NodeState, req: PlacementRequest) -> str | None:
    """A cordoned node keeps its replicas but takes no new ones."""
    return REASON_CORDONED if node.view.cordoned else None


def filter_node_selector(node: NodeState, req: PlacementRequest) -> str | None:
    """Every selector label must be on the node with the same value."""
    labels = node.view.labels
    for key, value in req.node_selector.items():
        if labels.get(key) != value:
            return REASON_NODE_SELECTOR
    return None


# Dynamic filters depend on what is already placed and are re-run when the
# node changes. Resources first: three integer comparisons, checked by every
# request. Host ports last: a set lookup per port, and a batch leaves this
# filter out altogether for requests that publish no port.


def filter_cpu(node: NodeState, req: PlacementRequest) -> str | None:
    if node.allocated.cpu_millis + req.request.cpu_millis > node.view.capacity.cpu_millis:
        return REASON_CPU
    return None


def filter_memory(node: NodeState, req: PlacementRequest) -> str | None:
    if node.allocated.memory_bytes + req.request.memory_bytes > node.view.capacity.memory_bytes:
        return REASON_MEMORY
    return None


def filter_pids(node: NodeState, req: PlacementRequest) -> str | None:
    if node.allocated.pids + req.request.pids > node.view.capacity.pids:
        return REASON_PIDS
    return None


def filter_host_ports(node: NodeState, req: PlacementRequest) -> str | None:
    """A (protocol, port) can be published by one replica per node."""
    used = node.host_ports
    for port in req.host_ports:
        if port in used:
            return REASON_HOST_PORT
    return None


STATIC_FILTERS: tuple[Filter, ...] = (filter_volume_node, filter_ready, filter_cordoned,
                                      filter_node_selector)
DYNAMIC_FILTERS: tuple[Filter, ...] = (filter_cpu, filter_memory, filter_pids, filter_host_ports)
# The whole chain, in the order it is applied.
FILTERS: tuple[Filter, ...] = STATIC_FILTERS + DYNAMIC_FILTERS


def first_rejection(node: NodeState, req: PlacementRequest) -> str | None:
    """The reason of the first filter that rejects the node, or None if it fits."""
    for check in FILTERS:
        reason = check(node, req)
        if reason is not None:
            return reason
    return None


# --- Scorers -----------------------------------------------------------------


def score_spread(node: NodeState, req: PlacementRequest) -> float:
    """Fewer replicas of the same workload on the node score higher:
    100 for none, 50 for one, 33.3 for two, ... Applies only when the
    request asks for spread (see `active_scorers`)."""
    return MAX_SCORE / (1 + node.per_workload.get(req.workload_key, 0))


def score_least_allocated(node: NodeState, req: PlacementRequest) -> float:
    """Kubernetes' LeastAllocated: the mean of the free CPU and free memory
    fractions of the node after placing the replica, times MAX_SCORE. A
    resource the node has none of scores 0."""
    capacity = node.view.capacity
    allocated = node.allocated
    request = req.request
    # Written out rather than with a helper and max(): this runs for every
    # feasible node of every new request.
    cap = capacity.cpu_millis
    free_cpu = (cap - allocated.cpu_millis - request.cpu_millis) / cap if cap > 0 else 0.0
    cap = capacity.memory_bytes
    free_mem = (cap - allocated.memory_bytes - request.memory_bytes) / cap if cap > 0 else 0.0
    # Below 0 only when the node is over-committed (the filters reject it).
    if free_cpu < 0.0:
        free_cpu = 0.0
    if free_mem < 0.0:
        free_mem = 0.0
    return (free_cpu + free_mem) * _HALF_MAX_SCORE


def active_scorers(req: PlacementRequest) -> tuple[tuple[Scorer, float], ...]:
    """The (scorer, weight) pairs that apply to the request."""
    scorers: list[tuple[Scorer, float]] = []
    if req.spread:
        scorers.append((score_spread, SPREAD_WEIGHT))
    scorers.append((score_least_allocated, LEAST_ALLOCATED_WEIGHT))
    if req.image_digest:
        scorers.append((imagescore.score_image_locality, imagescore.WEIGHT))
    return tuple(scorers)


def node_score(node: NodeState, req: PlacementRequest) -> float:
    """The normalized score of a feasible node: the weighted mean of the
    active scorers, in [0, MAX_SCORE]."""
    scorers = active_scorers(req)
    total = 0.0
    for scorer, weight in scorers:
        total += weight * scorer(node, req)
    # The same float operations as the planner's, so the results are equal.
    return total * (1.0 / sum(weight for _, weight in scorers))


# --- The planner -------------------------------------------------------------

# Marks an infeasible node in the score lists; every real score is >= 0.
_INFEASIBLE = -1.0


def _node_name(node: NodeState) -> str:
    return node.view.name


class _Candidates:
    """One distinct request's view of every node during a batch: the first
    rejection reason or the normalized score, per node in planner order, and
    the count of rejections per reason."""

    __slots__ = (
        "req",
        "static",
        "filters",
        "scorers",
        "inverse_weight",
        "reasons",
        "scores",
        "rejections",
        "seen",
        "best",
    )

    def __init__(self, req: PlacementRequest, static: list[str | None]) -> None:
        self.req = req
        self.static = static
        # Per request, not per node: which dynamic filters and scorers apply.
        self.filters: tuple[Filter, ...] = (
            DYNAMIC_FILTERS if req.host_ports else DYNAMIC_FILTERS[:-1]
        )
        self.scorers = active_scorers(req)
        self.inverse_weight = 1.0 / sum(weight for _, weight in self.scorers)
        self.reasons: list[str | None] = [None] * len(static)
        self.scores: list[float] = [_INFEASIBLE] * len(static)
        self.rejections: Counter[str] = Counter()
        # How far into the planner's change log this view is up to date.
        self.seen = 0
        # (-score, position) of feasible nodes, a heap: the best node is on
        # top. An entry whose score is no longer the node's (re-evaluated
        # since) is dropped when it reaches the top.
        self.best: list[tuple[float, int]] = []

    def evaluate_all(self, order: Sequence[NodeState]) -> None:
        """The first evaluation of every node: `evaluate` for a fresh view,
        unrolled into one loop of local names because it is the hot path for
        place_one and for each new request in a batch."""
        req = self.req
        static = self.static
        filters = self.filters
        scorers = self.scorers
        inverse_weight = self.inverse_weight
        reasons = self.reasons
        scores = self.scores
        rejections = self.rejections
        for index, node in enumerate(order):
            reason = static[index]
            if reason is None:
                for check in filters:
                    reason = check(node, req)
                    if reason is not None:
                        break
                else:
                    total = 0.0
                    for scorer, weight in scorers:
                        total += weight * scorer(node, req)
                    scores[index] = total * inverse_weight
                    continue
            reasons[index] = reason
            rejections[reason] += 1
        self.best = [(-score, index) for index, score in enumerate(scores) if score >= 0.0]
        heapq.heapify(self.best)

    def evaluate(self, index: int, node: NodeState) -> None:
        """(Re)compute the node's reason or score, keeping the counts right."""
        req = self.req
        reason = self.static[index]
        if reason is None:
            for check in self.filters:
                reason = check(node, req)
                if reason is not None:
                    break
        previous = self.reasons[index]
        if previous is not None:
            self.rejections[previous] -= 1
            if not self.rejections[previous]:
                del self.rejections[previous]
        self.reasons[index] = reason
        if reason is not None:
            self.rejections[reason] += 1
            self.scores[index] = _INFEASIBLE
            return
        total = 0.0
        for scorer, weight in self.scorers:
            total += weight * scorer(node, req)
        score = self.scores[index] = total * self.inverse_weight
        heapq.heappush(self.best, (-score, index))

    def top(self) -> int:
        """The position of the best feasible node (-1: none), first of equals."""
        best, scores = self.best, self.scores
        while best:
            negative, index = best[0]
            if scores[index] == -negative:
                return index
            heapq.heappop(best)      # stale: the node was re-evaluated since
        return -1


class _Planner:
    """The working state of one place_one/place_batch call."""

    __slots__ = ("order", "changed", "_static", "_candidates")

    def __init__(self, nodes: Iterable[NodeState], seed: int) -> None:
        # Sort first so that the caller's order does not matter, then shuffle
        # with the seed: the position in `order` is the tie-break.
        order = sorted(nodes, key=_node_name)
        random.Random(seed).shuffle(order)
        self.order = order
        # Positions in `order` of the nodes changed by placements, in order.
        self.changed: list[int] = []
        self._static: dict[tuple[frozenset[tuple[str, str]], str, str],
                           list[str | None]] = {}
        self._candidates: dict[PlacementRequest, _Candidates] = {}

    def _static_reasons(self, req: PlacementRequest) -> list[str | None]:
        key = (frozenset(req.node_selector.items()), req.volume_node, req.volume)
        reasons = self._static.get(key)
        if reasons is None:
            reasons = []
            for node in self.order:
                reason = None
                for check in STATIC_FILTERS:
                    reason = check(node, req)
                    if reason is not None:
                        break
                reasons.append(reason)
            self._static[key] = reasons
        return reasons

    def _up_to_date(self, req: PlacementRequest) -> _Candidates:
        order = self.order
        view = self._candidates.get(req)
        if view is None:
            view = _Candidates(req, self._static_reasons(req))
            self._candidates[req] = view
            view.evaluate_all(order)
        else:
            # A node placed on several times since this view last looked needs
            # evaluating once.
            for index in set(self.changed[view.seen :]):
                view.evaluate(index, order[index])
        view.seen = len(self.changed)
        return view

    def choose(self, req: PlacementRequest) -> tuple[int, Counter[str]]:
        """The position of the best node (-1 if none fits) and the rejections."""
        view = self._up_to_date(req)
        # The heap's order (-score, position) makes the first of equal best
        # scores win: the seeded tie-break. O(log nodes) per placement where
        # a scan of every score was O(nodes).
        return view.top(), Counter(view.rejections)

    def record(self, index: int, req: PlacementRequest) -> None:
        self.order[index].place(req)
        self.changed.append(index)


def place_one(req: PlacementRequest, nodes: Sequence[NodeState], seed: int) -> PlacementResult:
    """Where the replica would go. Does not change the NodeStates."""
    planner = _Planner(nodes, seed)
    index, rejections = planner.choose(req)
    return PlacementResult(planner.order[index].name if index >= 0 else None, rejections)


def place_batch(
    reqs: Sequence[tuple[str, PlacementRequest]], nodes: Sequence[NodeState], seed: int,
    volume_nodes: dict[str, str] | None = None,
) -> dict[str, PlacementResult]:
    """Place many replicas in the order given, keyed by replica id.

    Each placement is recorded on its NodeState before the next one is made.
    A replica that fits nowhere gets `node=None` and takes nothing.

    `volume_nodes` maps each named volume ("namespace/name") that has a node
    to it, and is filled in as the batch binds new ones: the first replica
    placed with an unbound volume takes it to its node, and every later
    request naming it, in this batch or the next, is pinned there. Two
    users of one volume can therefore never land on different nodes.
    """
    planner = _Planner(nodes, seed)
    order = planner.order
    results: dict[str, PlacementResult] = {}
    bound = volume_nodes if volume_nodes is not None else {}
    for replica_id, req in reqs:
        if req.volumes:
            where = {v: bound[v] for v in req.volumes if v in bound}
            if len(set(where.values())) > 1:
                first, second = sorted(where)[:2]
                reason = (f"volumes {first.partition('/')[2]} and {second.partition('/')[2]}"
                          f" are on different nodes ({where[first]}, {where[second]})")
                results[replica_id] = PlacementResult(None, Counter({reason: len(order)}))
                continue
            if where and not req.volume_node:
                volume = sorted(where)[0]
                req = replace(req, volume_node=where[volume], volume=volume.partition("/")[2])
        index, rejections = planner.choose(req)
        if index < 0:
            results[replica_id] = PlacementResult(None, rejections)
            continue
        planner.record(index, req)
        results[replica_id] = PlacementResult(order[index].name, rejections)
        for volume in req.volumes:
            bound.setdefault(volume, order[index].name)
    return results


def build_node_states(
    nodes: Iterable[NodeView], replicas: Iterable[ReplicaView]
) -> dict[str, NodeState]:
    """Node states keyed by node name, with every replica bound to a node that
    still holds it: any phase but Succeeded and Failed. Terminating replicas
    and those whose deletion was requested count: their resources and host
    ports are not free until their container is gone. Replicas bound to a node
    that is not in `nodes` are ignored."""
    states = {node.name: NodeState(node) for node in nodes}
    for replica in replicas:
        if not replica.node or replica.phase in TERMINAL_PHASES:
            continue
        state = states.get(replica.node)
        if state is not None:
            state.add(replica.workload_key, replica.request, replica.host_ports)
    return states


def volume_message(volume: str, node: str, rejections: Counter[str], lost: bool) -> str:
    """Why a replica pinned to its volume's node waits: that node's own reason.

    `volume api-data is on node2: insufficient memory` (SPEC.md), rather than
    a count of the nodes that are not node2.
    """
    if lost:
        return (f"volume {volume} is on {node}, which is lost: its data is gone with the"
                f" node (mctl delete volume {volume} to start it anew elsewhere)")
    own = volume_reason(volume, node)
    reasons = sorted(reason for reason, count in rejections.items()
                     if count > 0 and reason != own)
    if not reasons:
        return f"{own}, which is not registered"
    return f"{own}: {reasons[0]}"


def unschedulable_message(rejections: Counter[str], total_nodes: int) -> str:
    """`0/3 nodes fit: 2 insufficient memory, 1 cordoned`: the most common
    reason first, equal counts by reason."""
    if total_nodes == 0:
        return "0/0 nodes fit: no nodes registered"
    counts = sorted(
        ((reason, count) for reason, count in rejections.items() if count > 0),
        key=lambda item: (-item[1], item[0]),
    )
    fitting = max(0, total_nodes - sum(count for _, count in counts))
    head = f"{fitting}/{total_nodes} nodes fit"
    if not counts:
        return head
    return head + ": " + ", ".join(f"{count} {reason}" for reason, count in counts)
