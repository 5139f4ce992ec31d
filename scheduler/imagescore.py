"""Image locality: prefer nodes that already hold a replica's pinned image.

A node that holds the image starts the replica without a pull; one that
does not first fetches every layer it lacks (tens of MiB to GiB). Agents
report the pinned digests (`sha256:...`) of the registry images in their
store with their status (StatusReport.image_digests, most recently used
first, at most MAX_NODE_IMAGES); `NodeImages` keeps each node's latest list
in memory, as UsageCache keeps usage: the list is rebuilt by every agent's
next report, so storing it would be write load for nothing. A scheduler
knows the lists of the agents that report to it; one that leads without
them (agents pointed at another scheduler) scores no node for images,
which leaves placement exactly as it was without this scorer.

The scorer (`score_image_locality`) is one set lookup per node: MAX_SCORE
if the node holds the replica's pinned digest, else 0. A request without a
digest (an imported image, busybox, a registry that could not be reached at
apply) does not use it at all. Its weight (WEIGHT) is bounded below one step
of spreading: placement's spread scorer gives a node without a replica of the
workload 100 and a node with one 50, weighted 2, a difference of 100
weighted points; holding the image is worth 75. So the image never packs a
spread workload onto one node, but among nodes equal for spread (a new
workload; one that does not ask for spread; nodes that all have replicas)
it wins over the least-allocated preference unless the node holding the
image is much fuller (a difference of more than 75 points of free CPU and
memory: "when it has room"). Kubernetes' ImageLocality bounds itself the
same way, by scaling with image size and with the share of nodes holding
it; here every pull is taken as worth avoiding, whatever its size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from mctl.common import imageref

from .model import NodeView


# placement.NodeState and PlacementRequest, as far as the scorer reads them
# (placement imports this module, so this one cannot import placement).
class _Node(Protocol):
    @property
    def view(self) -> NodeView: ...


class _Request(Protocol):
    @property
    def image_digest(self) -> str: ...


# What a node may report: more images than a node keeps in practice, few
# enough that a confused agent costs little memory (64 bytes and a set slot each).
MAX_NODE_IMAGES = 256
# placement.MAX_SCORE (not imported: placement imports this module).
HELD_SCORE = 100.0
# Below placement.SPREAD_WEIGHT * (100 - 50) / HELD_SCORE = 1.0: see above.
WEIGHT = 0.75
_NOTHING: frozenset[str] = frozenset()


def digest_of(image: str, pinned: str) -> str:
    """The digest a replica runs: pinned at apply (`pinned`), or given in `image`; else ""."""
    return pinned or imageref.digest_of(image)


def score_image_locality(node: _Node, req: _Request) -> float:
    """HELD_SCORE if the node holds the request's pinned image, else 0."""
    return HELD_SCORE if req.image_digest in node.view.images else 0.0


def reportable(names: Iterable[str]) -> list[str]:
    """The digests of pinned image names (`NAME[:TAG]@sha256:...`), in order, deduplicated,
    at most MAX_NODE_IMAGES: what an agent reports."""
    out: dict[str, None] = {}
    for name in names:
        digest = imageref.digest_of(name)
        if digest:
            out.setdefault(digest, None)
            if len(out) == MAX_NODE_IMAGES:
                break
    return list(out)


class NodeImages:
    """Each node's latest report of the image digests it holds (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, frozenset[str]] = {}

    def set(self, node: str, digests: Iterable[str]) -> None:
        kept: list[str] = []
        for d in digests:
            if len(kept) == MAX_NODE_IMAGES:
                break
            # Only what a pinned reference can hold: nothing else is ever asked for.
            if imageref.reference_problem(f"a.b/c@{d}") is None:
                kept.append(d)
        with self._lock:
            if kept:
                self._nodes[node] = frozenset(kept)
            else:
                self._nodes.pop(node, None)

    def get(self, node: str) -> frozenset[str]:
        with self._lock:
            return self._nodes.get(node, _NOTHING)

    def retain(self, nodes: Iterable[str]) -> None:
        """Forgets nodes no longer registered (a bound over node churn)."""
        keep = set(nodes)
        with self._lock:
            self._nodes = {n: d for n, d in self._nodes.items() if n in keep}
