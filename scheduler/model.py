"""The scheduler's view of the cluster: small immutable values, no protobuf.

Placement (`placement.py`) and reconcile (`reconcile.py`) are pure functions.
They never see etcd records or protobuf messages; the store layer converts
what it read into these values, the pure code decides, and a planner writes
the decision back (Nomad's "the scheduler reads an immutable snapshot and only
a planner writes"). Keeping the values this small also keeps the decision
logic testable with plain constructors.

The values are frozen dataclasses. Mapping fields (labels, node selectors)
are taken as given and must not be mutated afterwards; they are left out of
the hash so that the values stay hashable.

Resources are integers in the units the kernel limits use: CPU in
millicores (1000 = one core, the "500m" of the workload file), memory in
bytes and a count of processes (pids). A capacity is always a real number:
there is no "0 means unlimited"; a request of 0 simply asks for nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Phase(enum.Enum):
    """Where a replica is in its life (SPEC.md "Replicas"):
    PENDING -> STARTING -> RUNNING -> (SUCCEEDED | FAILED), plus TERMINATING.

    The decision code's own copy of types.proto's ReplicaPhase, so that it
    needs no protobuf; the member names match the proto names without their
    prefix, and converters.py maps one to the other by name.
    """

    PENDING = enum.auto()
    STARTING = enum.auto()
    RUNNING = enum.auto()
    SUCCEEDED = enum.auto()
    FAILED = enum.auto()
    TERMINATING = enum.auto()


# A replica in a terminal phase holds no container any more: its resources
# and host ports are free again.
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})

# A published port as (protocol, port), e.g. ("TCP", 18080). The protocol is
# part of the identity: TCP 53 and UDP 53 do not conflict.
HostPort = tuple[str, int]


def workload_key(namespace: str, name: str) -> str:
    """The cluster-wide key of a workload: "namespace/name"."""
    return f"{namespace}/{name}"


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of CPU (millicores), memory (bytes) and processes (pids)."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pids: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
            self.pids + other.pids,
        )

    def __sub__(self, other: Resources) -> Resources:
        # May go negative (an over-committed node); callers that need a floor
        # apply it themselves.
        return Resources(
            self.cpu_millis - other.cpu_millis,
            self.memory_bytes - other.memory_bytes,
            self.pids - other.pids,
        )

    def fits_in(self, other: Resources) -> bool:
        """True when every component of self is at most that of other."""
        return (
            self.cpu_millis <= other.cpu_millis
            and self.memory_bytes <= other.memory_bytes
            and self.pids <= other.pids
        )


NO_RESOURCES = Resources()


@dataclass(frozen=True, slots=True)
class NodeView:
    """A registered node: what it offers and whether it takes new replicas."""

    name: str
    capacity: Resources
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # ready: the agent's heartbeat is current. cordoned: an operator said
    # "no new replicas here" (mctl cordon/drain); running ones stay.
    ready: bool = True
    cordoned: bool = False
    # Pinned image digests the node holds, as its agent last reported them
    # (scheduler/imagescore.py).
    images: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica of a workload, as last recorded in the store.

    `node` is "" while the replica is unplaced. `spec_hash` identifies the
    workload spec the replica was made from; a rolling update replaces the
    replicas whose hash differs from the workload's. `request` and
    `host_ports` are the replica's own (from its spec), which may differ from
    the workload's current ones during an update.
    """

    namespace: str
    name: str
    workload: str
    spec_hash: str
    node: str = ""
    phase: Phase = Phase.PENDING
    created_ms: int = 0
    deletion_requested: bool = False
    request: Resources = NO_RESOURCES
    host_ports: tuple[HostPort, ...] = ()
    finished_ms: int = 0         # when it ended (terminal phases), 0 if unknown

    @property
    def workload_key(self) -> str:
        return workload_key(self.namespace, self.workload)

    @property
    def placed(self) -> bool:
        return self.node != ""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """A workload's desired state: how many replicas of which spec, and where.

    `max_unavailable` and `max_surge` are absolute counts (the store layer
    resolves any other form); validation rejects both being 0.
    """

    namespace: str
    name: str
    spec_hash: str
    replicas: int = 1
    request: Resources = NO_RESOURCES
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    host_ports: tuple[HostPort, ...] = ()
    spread: bool = True
    max_unavailable: int = 1
    max_surge: int = 1
    deletion_requested: bool = False
    replace_failed: bool = False

    @property
    def key(self) -> str:
        return workload_key(self.namespace, self.name)
