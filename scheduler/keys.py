"""The etcd key layout: making keys and parsing them back, in one place.

Every durable fact lives under one prefix (default `/mctl/`):

    workloads/<namespace>/<name>    Workload     (protobuf)
    replicas/<namespace>/<name>     Replica      (protobuf)
    nodes/<name>                    Node         (protobuf)
    heartbeats/<name>               lease-bound  (present while the node heartbeats)
    leader                          lease-bound  (the leading scheduler's id)
    subnets/<a.b.c.d>-<len>         node name    (the node's container subnet, subnets.py)
    vips/<a.b.c.d>                  "<ns>/<name>" (the workload's virtual IP, vips.py)
    events/<kind>/<ns>/<name>/<ms>-<n>  Event    (kept for an hour; not in snapshots)
    configs/<namespace>/<name>      Config       (protobuf)
    secrets/<namespace>/<name>      sealed Secret (secretbox.py: AES-GCM, never in clear)
    volumes/<namespace>/<name>      VolumeRecord (protobuf; its node once placed, volumes.py)
    revisions/<ns>/<name>/<n>       WorkloadRevision (the last few spec revisions,
                                    revisions.py; history: not in snapshots)

The store (which reads whole ranges) and the cache (which follows a watch)
both turn keys back into objects; they share this codec so the two can
never disagree on where a replica or a node lives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    WORKLOAD = "workloads"
    REPLICA = "replicas"
    NODE = "nodes"
    HEARTBEAT = "heartbeats"
    LEADER = "leader"
    SUBNET = "subnets"
    VIP = "vips"
    EVENT = "events"
    CONFIG = "configs"
    SECRET = "secrets"
    VOLUME = "volumes"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """What a key names: its kind, and the namespace ("" if none) and name."""

    kind: Kind
    namespace: str
    name: str


class KeyCodec:
    def __init__(self, prefix: str = "/mctl/") -> None:
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._cut = len(self.prefix)

    # -- making keys -------------------------------------------------------------

    def workload(self, namespace: str, name: str) -> str:
        return f"{self.prefix}workloads/{namespace}/{name}"

    def replica(self, namespace: str, name: str) -> str:
        return f"{self.prefix}replicas/{namespace}/{name}"

    def config(self, namespace: str, name: str) -> str:
        return f"{self.prefix}configs/{namespace}/{name}"

    def secret(self, namespace: str, name: str) -> str:
        return f"{self.prefix}secrets/{namespace}/{name}"

    def volume(self, namespace: str, name: str) -> str:
        return f"{self.prefix}volumes/{namespace}/{name}"

    def node(self, name: str) -> str:
        return f"{self.prefix}nodes/{name}"

    def heartbeat(self, name: str) -> str:
        return f"{self.prefix}heartbeats/{name}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    def subnet(self, subnet: str) -> str:
        return f"{self.prefix}subnets/{subnet.replace('/', '-')}"

    @property
    def subnets_prefix(self) -> str:
        return f"{self.prefix}subnets/"

    def vip(self, ip: str) -> str:
        return f"{self.prefix}vips/{ip}"

    def events_prefix(self, kind: str = "", namespace: str = "", name: str = "") -> str:
        """Where events live; narrowed to one kind, or one object when all are given."""
        key = f"{self.prefix}events/"
        if kind:
            key += f"{kind}/"
            if name:
                key += f"{namespace}/{name}/"
        return key

    def revisions_prefix(self, namespace: str = "", name: str = "") -> str:
        """Where spec revisions live; narrowed to one workload's when a name is given."""
        key = f"{self.prefix}revisions/"
        if name:
            key += f"{namespace}/{name}/"
        return key

    def revision(self, namespace: str, name: str, number: int) -> str:
        # Zero-padded, so that etcd's key order is the revisions' order.
        return f"{self.revisions_prefix(namespace, name)}{number:012d}"

    # -- parsing keys ------------------------------------------------------------

    def parse(self, key: str) -> ParsedKey | None:
        """What `key` names; None for a key outside the layout (or the prefix).

        Revisions are history that no snapshot holds: None for them too.
        """
        if not key.startswith(self.prefix):
            return None
        head, _, rest = key[self._cut:].partition("/")
        try:
            kind = Kind(head)
        except ValueError:
            return None
        if kind in (Kind.WORKLOAD, Kind.REPLICA, Kind.CONFIG, Kind.SECRET, Kind.VOLUME):
            namespace, _, name = rest.partition("/")
            return ParsedKey(kind, namespace, name)
        if kind is Kind.SUBNET:
            return ParsedKey(kind, "", rest.replace("-", "/"))
        return ParsedKey(kind, "", rest)
