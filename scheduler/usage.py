"""The latest resource usage the agents reported, per replica and per node.

Kept in memory only, never in etcd: samples change every few seconds and
are worthless after a restart, so storing them would be write load for
nothing. Each scheduler keeps what the agents that talk to it said; `mctl
get` shows it next to what the store says.
"""

from __future__ import annotations

import threading

from mctl.v1 import node_pb2, types_pb2

# What one node's report may say about its named volumes: more than any node
# keeps, few enough that a confused agent costs little memory.
MAX_VOLUMES_PER_NODE = 1024


class UsageCache:
    def __init__(self) -> None:
        # Written by report and heartbeat threads, read by list calls.
        self._lock = threading.Lock()
        self._replicas: dict[tuple[str, str], types_pb2.Usage] = {}
        self._nodes: dict[str, types_pb2.Usage] = {}
        # node -> {(namespace, volume): bytes}, the node's latest word on its volumes
        self._volumes: dict[str, dict[tuple[str, str], int]] = {}

    def replica(self, key: tuple[str, str]) -> types_pb2.Usage | None:
        with self._lock:
            return self._replicas.get(key)

    def node(self, name: str) -> types_pb2.Usage | None:
        with self._lock:
            return self._nodes.get(name)

    def set_node(self, name: str, usage: types_pb2.Usage) -> None:
        with self._lock:
            self._nodes[name] = usage

    def set_replica(self, key: tuple[str, str], usage: types_pb2.Usage) -> None:
        with self._lock:
            self._replicas[key] = usage

    def set_volumes(self, node: str, volumes: list[node_pb2.VolumeUsage]) -> None:
        """The named volumes a node keeps and their sizes (replacing what it said before)."""
        with self._lock:
            self._volumes[node] = {(v.namespace, v.name): v.used_bytes
                                   for v in volumes[:MAX_VOLUMES_PER_NODE]}

    def volume(self, node: str, key: tuple[str, str]) -> int:
        """What `node` last said the volume takes on its disk (0: nothing said)."""
        with self._lock:
            return self._volumes.get(node, {}).get(key, 0)

    def forget_replica(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._replicas.pop(key, None)
