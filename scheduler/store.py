"""The cluster's state in etcd: keys, snapshots and compare-and-swap writes.

Every durable fact lives under one prefix (default `/mctl/`):

    workloads/<namespace>/<name>    Workload     (protobuf)
    replicas/<namespace>/<name>     Replica      (protobuf)
    nodes/<name>                    Node         (protobuf)
    heartbeats/<name>               lease-bound  (present while the node heartbeats)

A `Snapshot` is one read of the whole prefix at one etcd revision, so every
decision is made on a consistent view. Every write that depends on what was
read compares the key's mod_revision with the one in the snapshot (0 for
"must not exist") inside a transaction: if anyone else wrote in between, the
transaction fails and the caller re-reads and decides again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
import pyetcd
import pyetcd.exceptions
from pyetcd import transactions

from mctl.v1 import types_pb2

log = logging.getLogger(__name__)

# etcd's default --max-txn-ops is 128; stay below it.
MAX_TXN_OPS = 120


class StoreUnavailable(Exception):
    """etcd cannot be reached; callers retry or report it, nothing was written."""


class Conflict(Exception):
    """A compare-and-swap write lost to another writer."""


@dataclass
class Snapshot:
    revision: int = 0
    workloads: dict[tuple[str, str], types_pb2.Workload] = field(default_factory=dict)
    replicas: dict[tuple[str, str], types_pb2.Replica] = field(default_factory=dict)
    nodes: dict[str, types_pb2.Node] = field(default_factory=dict)
    heartbeats: set[str] = field(default_factory=set)
    mod_revisions: dict[str, int] = field(default_factory=dict)   # key -> mod_revision


@dataclass
class Write:
    """One compare-and-swap op: put `value` (or delete if None) if `key` is at `expect`."""

    key: str
    value: bytes | None
    expect: int                   # mod_revision seen; 0 = must not exist
    lease: int | None = None


def _translate(fn: Callable[..., object]) -> Callable[..., object]:
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except pyetcd.exceptions.Etcd3Exception as e:
            raise StoreUnavailable(f"etcd unreachable: {e}") from None
        except grpc.RpcError as e:
            raise StoreUnavailable(f"etcd error: {e}") from None
        except ValueError as e:  # pyetcd's "Trying to use a failed node"
            raise StoreUnavailable(f"etcd unreachable: {e}") from None
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Store:
    def __init__(self, endpoint: str, prefix: str = "/mctl/", timeout: float = 5.0) -> None:
        host, _, port = endpoint.rpartition(":")
        self.endpoint = endpoint
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.client = pyetcd.client(host=host or "127.0.0.1", port=int(port), timeout=timeout)
        for ep in self.client.endpoints.values():
            # pyetcd shuns an endpoint for 300 s after one failed call; with a
            # single etcd that turns a blip into a five-minute outage. gRPC
            # reconnects by itself, so never shun.
            ep.time_retry = 0
        self._lock = threading.Lock()

    # -- keys -----------------------------------------------------------------

    def workload_key(self, namespace: str, name: str) -> str:
        return f"{self.prefix}workloads/{namespace}/{name}"

    def replica_key(self, namespace: str, name: str) -> str:
        return f"{self.prefix}replicas/{namespace}/{name}"

    def node_key(self, name: str) -> str:
        return f"{self.prefix}nodes/{name}"

    def heartbeat_key(self, name: str) -> str:
        return f"{self.prefix}heartbeats/{name}"

    # -- reads ----------------------------------------------------------------

    @_translate
    def snapshot(self) -> Snapshot:
        resp = self.client.get_prefix_response(self.prefix)
        snap = Snapshot(revision=resp.header.revision)
        cut = len(self.prefix)
        for kv in resp.kvs:
            key = kv.key.decode()
            snap.mod_revisions[key] = kv.mod_revision
            kind, _, rest = key[cut:].partition("/")
            if kind == "workloads":
                w = types_pb2.Workload.FromString(kv.value)
                snap.workloads[(w.metadata.namespace, w.metadata.name)] = w
            elif kind == "replicas":
                r = types_pb2.Replica.FromString(kv.value)
                snap.replicas[(r.metadata.namespace, r.metadata.name)] = r
            elif kind == "nodes":
                n = types_pb2.Node.FromString(kv.value)
                snap.nodes[n.name] = n
            elif kind == "heartbeats":
                snap.heartbeats.add(rest)
        return snap

    @_translate
    def get(self, key: str) -> tuple[bytes | None, int]:
        value, meta = self.client.get(key)
        return value, (meta.mod_revision if meta is not None else 0)

    # -- writes ---------------------------------------------------------------

    @_translate
    def commit(self, writes: Iterable[Write]) -> None:
        """Applies `writes` in transactions of at most MAX_TXN_OPS; raises Conflict.

        Writes that must succeed together must fit one transaction; callers
        split independent work (each replica's write stands alone).
        """
        batch: list[Write] = []
        for w in writes:
            batch.append(w)
            if len(batch) >= MAX_TXN_OPS:
                self._commit_batch(batch)
                batch = []
        if batch:
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[Write]) -> None:
        compare = [transactions.Mod(w.key) == w.expect for w in batch]
        success = [
            transactions.Put(w.key, w.value, lease=w.lease) if w.value is not None
            else transactions.Delete(w.key)
            for w in batch
        ]
        ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
        if not ok:
            raise Conflict(f"{len(batch)} writes lost to a concurrent change "
                           f"(first key {batch[0].key})")

    @_translate
    def grant_lease(self, ttl: int) -> int:
        return self.client.lease(ttl).id

    @_translate
    def refresh_lease(self, lease_id: int) -> int:
        """Refreshes a lease; returns its remaining TTL (0 = it had expired)."""
        for resp in self.client.refresh_lease(lease_id):
            return int(resp.TTL)
        return 0

    @_translate
    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        self.client.put(key, value, lease=lease)

    @_translate
    def delete(self, key: str) -> None:
        self.client.delete(key)

    @_translate
    def ping(self) -> None:
        self.client.status()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls `callback` (with no arguments) on every change under the prefix."""
        def on_event(_response: object) -> None:
            callback()
        try:
            watch_id = self.client.add_watch_prefix_callback(self.prefix, on_event)
        except Exception as e:  # noqa: BLE001 - pyetcd raises several kinds here
            raise StoreUnavailable(f"cannot watch etcd: {e}") from None
        return lambda: self.client.cancel_watch(watch_id)

    def close(self) -> None:
        self.client.close()
