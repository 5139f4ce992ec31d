"""The latest resource usage the agents reported, per replica and per node.

Kept in memory only, never in etcd: samples change every few seconds and
are worthless after a restart, so storing them would be write load for
nothing. Each scheduler keeps what the agents that talk to it said; `mctl
get` shows it next to what the store says.
"""

from __future__ import annotations

import threading

from mctl.v1 import types_pb2


class UsageCache:
    def __init__(self) -> None:
        # Written by report and heartbeat threads, read by list calls.
        self._lock = threading.Lock()
        self._replicas: dict[tuple[str, str], types_pb2.Usage] = {}
        self._nodes: dict[str, types_pb2.Usage] = {}

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

    def forget_replica(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._replicas.pop(key, None)
