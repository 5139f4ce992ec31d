"""The cluster's state in etcd: keys, snapshots and compare-and-swap writes.

Every durable fact lives under one prefix (default `/mctl/`), laid out as
keys.py describes.

A `Snapshot` is one read of the whole prefix at one etcd revision, so every
decision is made on a consistent view. Every write that depends on what was
read compares the key's mod_revision with the one in the snapshot (0 for
"must not exist") inside a transaction: if anyone else wrote in between, the
transaction fails and the caller re-reads and decides again.

The leading scheduler's writes also carry a *fence*: they compare the create
revision of the `leader` key with the one its election produced. A deposed
leader (its lease lapsed while it was paused, say) holds an old revision, so
every late write it makes fails, even when its snapshot still looks current:
an etcd lock alone does not give mutual exclusion (Jepsen, etcd 3.4.3).

etcd holds every workload with its env, so a secured cluster's etcd speaks
mutual TLS only and accepts no certificate but those of its own CA
(`EtcdTLS`: the CA that signed etcd's server certificate and the client
certificate this scheduler presents).

The endpoint may name several members of one etcd cluster, comma-separated:
a call that finds its member unreachable is tried again on another, within
the store's timeout; a member that failed is tried again after
FAILOVER_RETRY_SECONDS. A call that timed out (no answer, or etcd's own
"request timed out") is never tried again: it may have been applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import grpc
import pyetcd
import pyetcd.exceptions
from pyetcd import etcdrpc, transactions

from mctl.common import metrics
from mctl.v1 import types_pb2

from .keepalive import KeepAliveBroken, LeaseKeeper
from .keys import KeyCodec, Kind, ParsedKey

log = logging.getLogger(__name__)

# etcd's default --max-txn-ops is 128; stay below it.
MAX_TXN_OPS = 120
# How long a member that failed a call is passed over while others remain.
FAILOVER_RETRY_SECONDS = 2.0
# Between retries of a call on the other members (an election takes ~1 s).
RETRY_PAUSE_SECONDS = 0.2


class StoreUnavailable(Exception):
    """etcd cannot be reached; callers retry or report it, nothing was written."""


class Conflict(Exception):
    """A compare-and-swap write lost to another writer."""


class NotLeader(Conflict):
    """A fenced write failed because this process no longer leads."""


@dataclass(frozen=True)
class Fence:
    """Proof of leadership: the leader key's create revision from our election."""

    key: str
    revision: int


@dataclass
class Snapshot:
    revision: int = 0
    workloads: dict[tuple[str, str], types_pb2.Workload] = field(default_factory=dict)
    replicas: dict[tuple[str, str], types_pb2.Replica] = field(default_factory=dict)
    nodes: dict[str, types_pb2.Node] = field(default_factory=dict)
    heartbeats: set[str] = field(default_factory=set)
    leader: str = ""
    mod_revisions: dict[str, int] = field(default_factory=dict)   # key -> mod_revision
    # Virtual IP claims (vips.py): ip -> owner "<namespace>/<name>".
    vip_claims: dict[str, str] = field(default_factory=dict)
    configs: dict[tuple[str, str], types_pb2.Config] = field(default_factory=dict)
    # Secrets as stored: sealed (secretbox.py). The store holds no key; the
    # scheduler opens them where it needs the values (objects.py).
    secrets: dict[tuple[str, str], bytes] = field(default_factory=dict)
    volumes: dict[tuple[str, str], types_pb2.VolumeRecord] = field(default_factory=dict)

    def put(self, key: ParsedKey, value: bytes) -> None:
        """Takes in the stored value of one key (a whole read and a watch both do)."""
        if key.kind is Kind.WORKLOAD:
            self.workloads[(key.namespace, key.name)] = types_pb2.Workload.FromString(value)
        elif key.kind is Kind.REPLICA:
            self.replicas[(key.namespace, key.name)] = types_pb2.Replica.FromString(value)
        elif key.kind is Kind.NODE:
            self.nodes[key.name] = types_pb2.Node.FromString(value)
        elif key.kind is Kind.HEARTBEAT:
            self.heartbeats.add(key.name)
        elif key.kind is Kind.LEADER:
            self.leader = value.decode(errors="replace")
        elif key.kind is Kind.VIP:
            self.vip_claims[key.name] = value.decode(errors="replace")
        elif key.kind is Kind.CONFIG:
            self.configs[(key.namespace, key.name)] = types_pb2.Config.FromString(value)
        elif key.kind is Kind.SECRET:
            self.secrets[(key.namespace, key.name)] = bytes(value)
        elif key.kind is Kind.VOLUME:
            self.volumes[(key.namespace, key.name)] = types_pb2.VolumeRecord.FromString(value)

    def remove(self, key: ParsedKey) -> None:
        """Forgets one deleted key."""
        if key.kind is Kind.WORKLOAD:
            self.workloads.pop((key.namespace, key.name), None)
        elif key.kind is Kind.REPLICA:
            self.replicas.pop((key.namespace, key.name), None)
        elif key.kind is Kind.NODE:
            self.nodes.pop(key.name, None)
        elif key.kind is Kind.HEARTBEAT:
            self.heartbeats.discard(key.name)
        elif key.kind is Kind.LEADER:
            self.leader = ""
        elif key.kind is Kind.VIP:
            self.vip_claims.pop(key.name, None)
        elif key.kind is Kind.CONFIG:
            self.configs.pop((key.namespace, key.name), None)
        elif key.kind is Kind.SECRET:
            self.secrets.pop((key.namespace, key.name), None)
        elif key.kind is Kind.VOLUME:
            self.volumes.pop((key.namespace, key.name), None)

    def copy(self) -> Snapshot:
        """A shallow copy: new maps, the same (never mutated) records."""
        return Snapshot(revision=self.revision, workloads=dict(self.workloads),
                        replicas=dict(self.replicas), nodes=dict(self.nodes),
                        heartbeats=set(self.heartbeats), leader=self.leader,
                        mod_revisions=dict(self.mod_revisions),
                        vip_claims=dict(self.vip_claims), configs=dict(self.configs),
                        secrets=dict(self.secrets), volumes=dict(self.volumes))


@dataclass
class Write:
    """One compare-and-swap op: put `value` (or delete if None) if `key` is at `expect`."""

    key: str
    value: bytes | None
    expect: int                   # mod_revision seen; 0 = must not exist
    lease: int | None = None


P = ParamSpec("P")
R = TypeVar("R")


def _rpc_error(e: BaseException) -> grpc.RpcError | None:
    """The gRPC error behind `e` (pyetcd raises its own exception from it)."""
    if isinstance(e, grpc.RpcError):
        return e
    return e.__context__ if isinstance(e.__context__, grpc.RpcError) else None


def _rpc_details(e: BaseException) -> str:
    """The status message of the gRPC error behind `e` ("" if none)."""
    rpc = _rpc_error(e)
    return (getattr(rpc, "details", lambda: "")() or "") if rpc is not None else ""


def _server_timed_out(e: Exception) -> bool:
    """Whether etcd itself gave up on the call ("etcdserver: request timed out").

    etcd answers UNAVAILABLE, the code of a member never reached, when a
    proposal outlives the caller's deadline (a follower still forwarding to
    a leader that died): the call reached etcd and may have been applied.
    """
    rpc = _rpc_error(e)
    if rpc is None or rpc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return "request timed out" in _rpc_details(rpc)


def _unreached(e: Exception) -> bool:
    """Whether a call failed before reaching etcd: the member is down or refused us."""
    if _server_timed_out(e):
        return False
    if isinstance(e, pyetcd.exceptions.NoServerAvailableError):
        return True     # every member failed a call lately; none was tried
    if isinstance(e, pyetcd.exceptions.ConnectionFailedError | ValueError):
        return True     # ValueError: pyetcd's "Trying to use a failed node"
    return isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE


def _timed_out(e: Exception) -> bool:
    """Whether the call may have reached etcd and got no answer in time."""
    if _server_timed_out(e) or isinstance(e, pyetcd.exceptions.ConnectionTimeoutError):
        return True
    return isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _member_down(e: Exception) -> bool:
    """Whether the member in use looks down or cut off (unreached, or no answer in time)."""
    if isinstance(e, pyetcd.exceptions.NoServerAvailableError):
        return False    # no member is in use
    return _unreached(e) or _timed_out(e)


def _translate(fn: Callable[P, R]) -> Callable[P, R]:
    """Turns the etcd client's many failure types into StoreUnavailable.

    With several members, a call that did not reach its member (or that a
    member refused while the raft group has no leader) is tried again on
    the others, a little apart, for up to the store's timeout: one member
    down, even the leader, costs callers an election (about a second), not
    an error. A call that timed out is not tried again (it may have been
    applied).
    """
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, Store)
        # Bounded by the timeout; the count only caps a pathological loop. A
        # member that refused a call is passed over for FAILOVER_RETRY_SECONDS,
        # so when every member refused (no raft leader yet) the calls wait
        # for the first to come back.
        attempts = 50 if store.members > 1 else 1
        deadline = time.monotonic() + store.timeout
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except (pyetcd.exceptions.Etcd3Exception, grpc.RpcError, ValueError) as e:
                metrics.inc("etcd_request_errors_total", op=fn.__name__)
                if _member_down(e):
                    store.member_failed()
                if attempt < attempts and _unreached(e) and time.monotonic() < deadline:
                    # The first retry goes at once to the next member; later
                    # ones wait out an election a little, and when every
                    # member failed lately, for the first to be tried again.
                    if attempt > 1 or isinstance(e, pyetcd.exceptions.NoServerAvailableError):
                        time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                if _timed_out(e):
                    raise StoreUnavailable(f"etcd timeout: {_rpc_details(e) or e} "
                                           "(the call may have been applied)") from None
                if isinstance(e, grpc.RpcError):
                    raise StoreUnavailable(f"etcd error: {e}") from None
                raise StoreUnavailable(f"etcd unreachable: {e}") from None
            finally:
                metrics.time_since("etcd_request_seconds", started, op=fn.__name__)
        raise AssertionError("unreachable: the last attempt returns or raises")
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@dataclass(frozen=True)
class EtcdTLS:
    """Files of the scheduler's etcd identity: the etcd CA, its client certificate and key."""

    ca: str
    cert: str
    key: str


class Store:
    def __init__(self, endpoint: str, prefix: str = "/mctl/", timeout: float = 5.0,
                 tls: EtcdTLS | None = None) -> None:
        """`endpoint`: host:port of etcd, or of several members, comma-separated."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.keys = KeyCodec(prefix)
        self.prefix = self.keys.prefix
        members = parse_endpoints(endpoint)
        creds = (pyetcd.MultiEndpointEtcd3Client.get_secure_creds(tls.ca, tls.key, tls.cert)
                 if tls else None)
        # pyetcd shuns an endpoint for 300 s after one failed call; with a
        # single etcd that turns a blip into a five-minute outage. gRPC
        # reconnects by itself, so a lone member is never shunned; one of
        # several only briefly, so that the next call tries another.
        retry = FAILOVER_RETRY_SECONDS if len(members) > 1 else 0
        self.members = len(members)
        self.client = pyetcd.MultiEndpointEtcd3Client(
            endpoints=[pyetcd.Endpoint(host, port, secure=tls is not None, creds=creds,
                                       time_retry=retry) for host, port in members],
            timeout=timeout, failover=len(members) > 1)
        self._lock = threading.Lock()
        self._keeper = LeaseKeeper(self.client, timeout)

    # -- reads ----------------------------------------------------------------

    @_translate
    def subnet_claims(self) -> dict[str, tuple[str, int]]:
        """subnet -> (node holding it, the claim's mod_revision)."""
        out = {}
        for value, meta in self.client.get_prefix(self.keys.subnets_prefix):
            parsed = self.keys.parse(meta.key.decode())
            if parsed is not None:
                out[parsed.name] = (value.decode(errors="replace"), int(meta.mod_revision))
        return out

    @_translate
    def snapshot(self) -> Snapshot:
        # Everything under the prefix but events/ and revisions/ (history,
        # not state), read as three ranges at one revision.
        events = self.keys.events_prefix()
        revisions = self.keys.revisions_prefix()
        first = self.client.get_range_response(self.prefix, events)
        revision = first.header.revision
        second = self.client.get_range_response(
            _prefix_end(events), revisions, revision=revision)
        third = self.client.get_range_response(
            _prefix_end(revisions), _prefix_end(self.prefix), revision=revision)
        snap = Snapshot(revision=int(revision))
        for kv in [*first.kvs, *second.kvs, *third.kvs]:
            key = kv.key.decode()
            parsed = self.keys.parse(key)
            if parsed is None:
                continue
            snap.mod_revisions[key] = int(kv.mod_revision)
            snap.put(parsed, kv.value)
        return snap

    @_translate
    def revision(self) -> int:
        """etcd's current revision, from the cheapest read there is (one small key).

        A reader that waits for its cache to reach this revision sees every
        write committed before the call, whoever made it.
        """
        return int(self.client.get_response(self.keys.leader).header.revision)

    @_translate
    def get(self, key: str) -> tuple[bytes | None, int]:
        value, meta = self.client.get(key)
        return value, (int(meta.mod_revision) if meta is not None else 0)

    # -- writes ---------------------------------------------------------------

    @_translate
    def commit(self, writes: Iterable[Write], fence: Fence | None = None) -> int:
        """Applies `writes` in transactions of at most MAX_TXN_OPS; raises Conflict.

        Writes that must succeed together must fit one transaction; callers
        split independent work (each replica's write stands alone). With a
        `fence`, every transaction also requires that leadership; losing it
        raises NotLeader. Returns the revision of the last transaction (0:
        nothing to write), so that readers of a cache can wait for it.
        """
        batch: list[Write] = []
        revision = 0
        for w in writes:
            batch.append(w)
            if len(batch) >= MAX_TXN_OPS:
                revision = self._commit_batch(batch, fence)
                batch = []
        if batch:
            revision = self._commit_batch(batch, fence)
        return revision

    def _commit_batch(self, batch: list[Write], fence: Fence | None) -> int:
        compare = [transactions.Mod(w.key) == w.expect for w in batch]
        failure = []
        if fence is not None:
            compare.append(transactions.Create(fence.key) == fence.revision)
            failure.append(transactions.Get(fence.key))
        success = [
            transactions.Put(w.key, w.value, lease=w.lease) if w.value is not None
            else transactions.Delete(w.key)
            for w in batch
        ]
        ok, responses, revision = self._txn(compare, success, failure)
        if ok:
            return revision
        if fence is not None:
            held = [meta.create_revision for _, meta in responses[0]]
            if held != [fence.revision]:
                raise NotLeader(f"leadership (revision {fence.revision}) lost; "
                                f"{len(batch)} writes refused")
        raise Conflict(f"{len(batch)} writes lost to a concurrent change "
                       f"(first key {batch[0].key})")

    def _txn(self, compare: list[Any], success: list[Any],
             failure: list[Any]) -> tuple[bool, list[list[tuple[bytes, Any]]], int]:
        """pyetcd's transaction(), plus the revision it produced (its header's)."""
        c = self.client
        request = etcdrpc.TxnRequest(compare=[x.build_message() for x in compare],
                                     success=c._ops_to_requests(success),
                                     failure=c._ops_to_requests(failure))
        response = c.kvstub.Txn(request, c.timeout, credentials=c.call_credentials,
                                metadata=c.metadata)
        ranges = [list(r.response_range.kvs) for r in response.responses
                  if r.WhichOneof("response") == "response_range"]
        return bool(response.succeeded), [[(kv.value, kv) for kv in kvs] for kvs in ranges], \
            int(response.header.revision)

    @_translate
    def create(self, key: str, value: bytes, lease: int) -> tuple[bool, int, bytes]:
        """Puts `key` only if it does not exist, bound to `lease`.

        Returns (created, the key's create revision, its value) either way.
        """
        ok, responses = self.client.transaction(
            compare=[transactions.Create(key) == 0],
            success=[transactions.Put(key, value, lease=lease), transactions.Get(key)],
            failure=[transactions.Get(key)])
        found = responses[-1]   # the Get's [(value, meta)]
        if not found:   # lapsed between the two ops: someone may try again
            return False, 0, b""
        value, meta = found[0]
        return bool(ok), int(meta.create_revision), value

    @_translate
    def get_meta(self, key: str) -> tuple[bytes | None, int]:
        """A key's value and create revision (0 if absent)."""
        resp = self.client.get_response(key)
        if not resp.kvs:
            return None, 0
        return resp.kvs[0].value, int(resp.kvs[0].create_revision)

    @_translate
    def revoke_lease(self, lease_id: int) -> None:
        self.client.revoke_lease(lease_id)

    @_translate
    def get_prefix(self, prefix: str) -> list[bytes]:
        return [value for value, _ in self.client.get_prefix(prefix)]

    @_translate
    def get_prefix_meta(self, prefix: str) -> list[tuple[str, bytes, int]]:
        """(key, value, mod_revision) of every key under `prefix`, in key order."""
        return [(meta.key.decode(), value, int(meta.mod_revision))
                for value, meta in self.client.get_prefix(prefix)]

    @_translate
    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Keys under `prefix` in key order."""
        return [meta.key.decode() for _, meta in self.client.get_prefix(prefix, keys_only=True)]

    @_translate
    def put_many(self, items: list[tuple[str, bytes]], lease: int | None = None) -> None:
        """Unconditional puts (history such as events, never state), in few transactions."""
        for i in range(0, len(items), MAX_TXN_OPS):
            chunk = items[i:i + MAX_TXN_OPS]
            self.client.transaction(
                compare=[], success=[transactions.Put(k, v, lease=lease) for k, v in chunk],
                failure=[])

    @_translate
    def delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), MAX_TXN_OPS):
            self.client.transaction(
                compare=[], success=[transactions.Delete(k) for k in keys[i:i + MAX_TXN_OPS]],
                failure=[])

    @_translate
    def grant_lease(self, ttl: int) -> int:
        return int(self.client.lease(ttl).id)

    @_translate
    def refresh_lease(self, lease_id: int) -> int:
        """Refreshes a lease; returns its remaining TTL (0 = it had expired).

        Over one long-lived keep-alive stream (keepalive.py), not a stream per call.
        """
        try:
            return self._keeper.refresh(lease_id)
        except KeepAliveBroken as e:
            raise StoreUnavailable(f"etcd lease keep-alive: {e}") from None

    def refresh_lease_nowait(self, lease_id: int, on_answer: Callable[[int], None]) -> None:
        """Queues a refresh on the keep-alive stream; `on_answer(ttl)` gets the
        remaining TTL (0: expired; -1: the stream ended first) on another thread."""
        try:
            self._keeper.refresh_nowait(lease_id, on_answer)
        except (grpc.RpcError, ValueError) as e:
            raise StoreUnavailable(f"etcd lease keep-alive: {e}") from None

    @_translate
    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        self.client.put(key, value, lease=lease)

    @_translate
    def delete(self, key: str) -> None:
        self.client.delete(key)

    @_translate
    def ping(self) -> None:
        self.client.status()

    def member_failed(self) -> None:
        """The member in use is down: the next call goes to another (with several)."""
        if self.members > 1:
            self.client.endpoint_in_use.fail()
            # Stubs (the watcher too) are bound to the member's channel: the
            # next call makes new ones on another member's. pyetcd does the
            # same for the calls it wraps; transactions and watches it does not.
            self.client._clear_old_stubs()

    def watch_events(self, callback: Callable[[object], None],
                     start_revision: int) -> Callable[[], None]:
        """Calls `callback` with each watch response (or the error that ended the watch)."""
        try:
            watch_id = self.client.add_watch_prefix_callback(
                self.prefix, callback, start_revision=start_revision)
        except Exception as e:  # noqa: BLE001 - pyetcd raises several kinds here
            self.member_failed()
            raise StoreUnavailable(f"cannot watch etcd: {e}") from None
        return lambda: self.client.cancel_watch(watch_id)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls `callback` (with no arguments) on every change under the prefix."""
        def on_event(_response: object) -> None:
            callback()
        try:
            watch_id = self.client.add_watch_prefix_callback(self.prefix, on_event)
        except Exception as e:  # noqa: BLE001 - pyetcd raises several kinds here
            self.member_failed()
            raise StoreUnavailable(f"cannot watch etcd: {e}") from None
        return lambda: self.client.cancel_watch(watch_id)

    def close(self) -> None:
        self._keeper.close()
        self.client.close()


def parse_endpoints(endpoint: str) -> list[tuple[str, int]]:
    """"h:p[,h:p...]" -> [(host, port)]; a missing host is loopback."""
    out = []
    for item in endpoint.split(","):
        host, _, port = item.strip().rpartition(":")
        try:
            out.append((host or "127.0.0.1", int(port)))
        except ValueError:
            raise ValueError(f"etcd endpoint {item.strip()!r}: want host:port") from None
    return out


def _prefix_end(prefix: str) -> str:
    """The first key after every key that starts with `prefix` (ASCII prefixes)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
