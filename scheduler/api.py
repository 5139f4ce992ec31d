"""The scheduler's gRPC services: the control plane (for the CLI) and the node API.

The services translate between gRPC and the collaborators they are given;
they decide nothing themselves:

- reads (List*, the replica behind Logs and Exec, ClusterInfo) come from
  the watch cache, at a revision that holds every write committed before
  the call (`StateReader.latest`), on every scheduler, leading or not;
- workloads and node records are written here with compare-and-swap,
  retried on lost races (retry.py);
- replica records are the controller's alone: a drain and a node's status
  report are handed to it (`ReplicaWriter`), as is the wake-up after a change;
- node registration and heartbeats are nodes.py's `NodeLeases`, node
  subnets subnets.py's, usage samples usage.py's;
- Configs are stored as they come; Secrets are sealed (secretbox.py) before
  they are written and never leave through this API again: ListSecrets
  gives names and keys. A Config, Secret or named volume in use is not
  deleted (FAILED_PRECONDITION, naming the workloads).

Objects a workload names must exist when it is applied (or come in the same
apply): Kubernetes lets a pod wait for a missing ConfigMap, but a typo is far
likelier than a deliberate wait, and the apply is where a user is looking.

Store errors become status codes in one place (`_guarded`): UNAVAILABLE
when etcd is away, ABORTED when the change kept losing races, NOT_FOUND for
a missing node.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import grpc

from mctl.common import execstream, names, reasons, validation
from mctl.common.phases import is_terminal
from mctl.v1 import (
    agent_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    types_pb2,
)

from . import imagepin, objects, paging, volumes
from .events import event
from .nodes import NodeLeases, NodeNotFound, set_cordoned
from .retry import TooManyConflicts, retry_conflicts
from .secretbox import SecretBox, SecretBoxError
from .status import ReportMerge, node_events
from .store import Snapshot, Store, StoreUnavailable, Write
from .subnets import SubnetAllocator, SubnetError
from .usage import UsageCache

log = logging.getLogger(__name__)

T = TypeVar("T")


class StateReader(Protocol):
    def latest(self) -> Snapshot:
        """The state with every write committed before the call (cache.py)."""
        ...


class ReplicaWriter(Protocol):
    """The one writer of replica records (the controller), and its wake-up."""

    def wake(self) -> None: ...

    def evict(self, node: str) -> list[tuple[str, str]]: ...

    def record_status(self, report: node_pb2.StatusReport) -> ReportMerge: ...

    def forget_pushed(self, node: str) -> None: ...


class EventLog(Protocol):
    def record(self, e: types_pb2.Event) -> None: ...

    def list(self, kind: str, namespace: str, name: str) -> list[types_pb2.Event]: ...


class Leadership(Protocol):
    """Who this scheduler is in the election (leader.py)."""

    @property
    def identity(self) -> str: ...

    @property
    def leading_since_ms(self) -> int: ...


Dial = Callable[[types_pb2.Node], grpc.Channel]

T_co = TypeVar("T_co", covariant=True)


class _Stream(Protocol[T_co]):
    """A server-streaming call's answers, which the caller may cancel."""

    def __iter__(self) -> Iterator[T_co]: ...

    def cancel(self) -> bool: ...


def _guarded(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
    """Runs `fn`, turning the store's failures into the RPC's status code."""
    try:
        return fn()
    except StoreUnavailable as e:
        # The same code as "no scheduler answered": the reason tells clients which.
        reasons.attach(context, reasons.STORE_UNAVAILABLE)
        context.abort(grpc.StatusCode.UNAVAILABLE, f"the cluster store is unavailable: {e}")
    except TooManyConflicts:
        context.abort(grpc.StatusCode.ABORTED, "too many concurrent changes; try again")
    except NodeNotFound as e:
        context.abort(grpc.StatusCode.NOT_FOUND, str(e))
    except SecretBoxError as e:
        # A stored Secret this scheduler cannot open: a missing or wrong key.
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))


class ControlPlane(control_pb2_grpc.ControlPlaneServicer):
    def __init__(self, store: Store, reads: StateReader, replicas: ReplicaWriter,
                 usage: UsageCache, dial: Dial, events: EventLog | None = None,
                 leadership: Leadership | None = None,
                 limits: validation.Limits = validation.SERVER_LIMITS,
                 max_cluster_replicas: int = validation.DEFAULT_MAX_CLUSTER_REPLICAS,
                 secret_box: SecretBox | None = None,
                 image_resolver: imagepin.Resolver | None = None) -> None:
        self.store = store
        # Resolves registry images' tags to digests on apply (None: never pinned).
        self.image_resolver = image_resolver
        self.box = secret_box             # None: this scheduler stores no Secrets
        self.secrets = objects.SecretReader(secret_box)
        self.reads = reads
        self.replicas = replicas
        self.usage = usage
        self.dial = dial
        self.events = events
        self.leadership = leadership
        self.limits = limits
        self.max_cluster_replicas = max_cluster_replicas

    def Apply(self, request: control_pb2.ApplyRequest,
              context: grpc.ServicerContext) -> control_pb2.ApplyResponse:
        # The gate: the CLI's checks are a convenience, these hold for every
        # client, and they come before any read so a bad request costs no etcd.
        problem = validation.apply_problem(request.workloads, self.limits)
        if problem is None:
            problem = validation.objects_problem(
                request.configs, request.secrets, sum(w.ByteSize() for w in request.workloads))
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if request.secrets and self.box is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this scheduler has no --encryption-key-file, so it stores no secrets")
        # The cluster's cap depends on what is stored, not on the request:
        # a precondition. Checked on the cache (every write before this call
        # is in it); two applies racing may both pass, by at most their own
        # sizes, each of which --max-replicas bounds.
        snap = self._latest(context)
        desired = {key: w.spec.replicas for key, w in snap.workloads.items()
                   if not w.metadata.deletion_requested}
        problem = validation.cluster_replicas_problem(desired, request.workloads,
                                                      self.max_cluster_replicas)
        if problem is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
        problem = self._reference_problem(snap, request)
        if problem is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
        # Before the transaction, and once: asking a registry takes a round trip.
        pins = imagepin.pins(self.image_resolver, request.workloads, snap.workloads)
        return _guarded(context, lambda: retry_conflicts(
            lambda _: self._apply_once(request, pins), what="apply"))

    def _reference_problem(self, snap: Snapshot,
                           request: control_pb2.ApplyRequest) -> str | None:
        """A Config or Secret (or key) named by a workload that neither exists nor comes along."""
        configs: dict[tuple[str, str], set[str]] = {
            key: set(c.data) for key, c in snap.configs.items()}
        secrets: dict[tuple[str, str], set[str]] = {}
        for c in request.configs:
            configs[(c.metadata.namespace, c.metadata.name)] = set(c.data)
        for x in request.secrets:
            secrets[(x.metadata.namespace, x.metadata.name)] = set(x.data)
        for w in request.workloads:
            ns = w.metadata.namespace
            _, used, _ = validation.references(w.spec)
            for name in used:
                if (ns, name) in secrets:
                    continue
                try:
                    opened = self.secrets.open(snap, (ns, name))
                except SecretBoxError as e:
                    return f"workload {ns}/{w.metadata.name}: {e}"
                if opened is not None:
                    secrets[(ns, name)] = set(opened.data)
            found = validation.reference_problem(
                w, {n: k for (cns, n), k in configs.items() if cns == ns},
                {n: k for (sns, n), k in secrets.items() if sns == ns})
            if found is not None:
                return f"workload {ns}/{w.metadata.name}: {found}"
        return None

    def _apply_once(self, request: control_pb2.ApplyRequest,
                    pins: dict[tuple[str, str], str] | None = None) -> control_pb2.ApplyResponse:
        writes = []
        response = control_pb2.ApplyResponse()
        now = int(time.time() * 1000)
        # Configs and Secrets first: the workloads of this apply that name
        # them see them in the same transaction.
        for c in request.configs:
            writes += self._apply_config(c, now, response)
        for x in request.secrets:
            writes += self._apply_secret(x, now, response)
        for w in request.workloads:
            ns, name = w.metadata.namespace, w.metadata.name
            key = self.store.keys.workload(ns, name)
            raw, rev = self.store.get(key)
            new = types_pb2.Workload()
            new.CopyFrom(w)
            # The server's to write, as the uid (imagepin.py).
            new.spec.image_digest = (pins or {}).get((ns, name), "")
            action = "created"
            if raw is not None:
                old = types_pb2.Workload.FromString(raw)
                # The status is the controller's (the virtual IP, vips.py):
                # kept across updates, and across a re-apply of a workload
                # still being deleted, whose address it still holds.
                if old.HasField("status"):
                    new.status.CopyFrom(old.status)
                if not old.metadata.deletion_requested:
                    if (old.spec == new.spec and
                            dict(old.metadata.labels) == dict(w.metadata.labels)):
                        response.results.add(namespace=ns, name=name, action="unchanged",
                                             kind="Workload")
                        continue
                    new.metadata.uid = old.metadata.uid
                    new.metadata.created_unix_ms = old.metadata.created_unix_ms
                    new.metadata.generation = old.metadata.generation + 1
                    action = "configured"
            if action == "created":
                new.metadata.uid = uuid.uuid4().hex
                new.metadata.created_unix_ms = now
                new.metadata.generation = 1
            new.metadata.deletion_requested = False
            writes.append(Write(key, new.SerializeToString(), rev))
            response.results.add(namespace=ns, name=name, action=action, kind="Workload")
        if writes:
            self.store.commit(writes)
            self.replicas.wake()
        for r in response.results:
            log.info("%s=%s/%s %s", r.kind.lower(), r.namespace, r.name, r.action)
        return response

    @staticmethod
    def _stamp(meta: types_pb2.ObjectMeta, old: types_pb2.ObjectMeta | None, now: int) -> None:
        """The server's metadata: kept from `old`, or new; generation counts changes."""
        if old is None:
            meta.uid = uuid.uuid4().hex
            meta.created_unix_ms = now
            meta.generation = 1
        else:
            meta.uid = old.uid
            meta.created_unix_ms = old.created_unix_ms
            meta.generation = old.generation + 1
        meta.deletion_requested = False

    def _apply_config(self, c: types_pb2.Config, now: int,
                      response: control_pb2.ApplyResponse) -> list[Write]:
        ns, name = c.metadata.namespace, c.metadata.name
        key = self.store.keys.config(ns, name)
        raw, rev = self.store.get(key)
        old = types_pb2.Config.FromString(raw) if raw is not None else None
        if old is not None and (dict(old.data) == dict(c.data)
                                and dict(old.metadata.labels) == dict(c.metadata.labels)):
            response.results.add(namespace=ns, name=name, action="unchanged", kind="Config")
            return []
        new = types_pb2.Config()
        new.CopyFrom(c)
        self._stamp(new.metadata, old.metadata if old is not None else None, now)
        response.results.add(namespace=ns, name=name, kind="Config",
                             action="created" if old is None else "configured")
        return [Write(key, new.SerializeToString(), rev)]

    def _apply_secret(self, x: types_pb2.Secret, now: int,
                      response: control_pb2.ApplyResponse) -> list[Write]:
        assert self.box is not None      # Apply refused secrets without a key
        ns, name = x.metadata.namespace, x.metadata.name
        key = self.store.keys.secret(ns, name)
        raw, rev = self.store.get(key)
        old = None
        if raw is not None:
            # A value sealed under a key this scheduler lacks is refused, not
            # overwritten: the operator has lost a key, and should know.
            old = self.box.open(raw, ns, name)
        version = None
        if old is not None and dict(old.secret.data) == dict(x.data):
            if dict(old.secret.metadata.labels) == dict(x.metadata.labels):
                response.results.add(namespace=ns, name=name, action="unchanged",
                                     kind="Secret")
                return []
            version = old.version      # the data is the same: its users do not roll
        new = types_pb2.Secret()
        new.CopyFrom(x)
        self._stamp(new.metadata, old.secret.metadata if old is not None else None, now)
        response.results.add(namespace=ns, name=name, kind="Secret",
                             action="created" if old is None else "configured")
        return [Write(key, self.box.seal(new, version), rev)]

    def Delete(self, request: control_pb2.DeleteRequest,
               context: grpc.ServicerContext) -> control_pb2.DeleteResponse:
        for kind, refs in (("config", request.configs), ("secret", request.secrets),
                           ("volume", request.volumes), ("workload", request.workloads)):
            for ref in refs:
                if problem := names.validate_dns_label(ref.name):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{kind} name: {problem}")
        if request.configs or request.secrets or request.volumes:
            # Refused while used, judged on every write before this call.
            # (A workload applied at the same instant may still name one that
            # goes: its replicas then wait, saying what is missing.)
            snap = self._latest(context)
            for kind, refs in (("config", request.configs), ("secret", request.secrets),
                               ("volume", request.volumes)):
                for ref in refs:
                    ns = ref.namespace or "default"
                    users = objects.users_of(snap, kind, ns, ref.name)
                    if users:
                        context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                      f"{kind} {ns}/{ref.name} is used by workload"
                                      f"{'s' if len(users) > 1 else ''} {', '.join(users)}")
        response = _guarded(context, lambda: retry_conflicts(
            lambda _: self._delete_once(request), what="delete"))
        self.replicas.wake()
        return response

    def _delete_once(self, request: control_pb2.DeleteRequest) -> control_pb2.DeleteResponse:
        response = control_pb2.DeleteResponse()
        writes = []
        keys = self.store.keys
        for kind, refs, make in (("Config", request.configs, keys.config),
                                 ("Secret", request.secrets, keys.secret),
                                 ("Volume", request.volumes, keys.volume)):
            for ref in refs:
                key = make(ref.namespace or "default", ref.name)
                raw, rev = self.store.get(key)
                response.results.add(namespace=ref.namespace, name=ref.name,
                                     found=raw is not None, kind=kind)
                if raw is not None:
                    writes.append(Write(key, None, rev))
                    log.info("%s=%s/%s deleted", kind.lower(), ref.namespace or "default",
                             ref.name)
        for ref in request.workloads:
            key = self.store.keys.workload(ref.namespace or "default", ref.name)
            raw, rev = self.store.get(key)
            response.results.add(namespace=ref.namespace, name=ref.name, found=raw is not None,
                                 kind="Workload")
            if raw is None:
                continue
            w = types_pb2.Workload.FromString(raw)
            if w.metadata.deletion_requested:
                continue
            w.metadata.deletion_requested = True
            writes.append(Write(key, w.SerializeToString(), rev))
        self.store.commit(writes)
        return response

    # -- reads, from the watch cache ---------------------------------------------------

    def _latest(self, context: grpc.ServicerContext) -> Snapshot:
        return _guarded(context, self.reads.latest)

    def ListWorkloads(self, request: control_pb2.ListRequest,
                      context: grpc.ServicerContext) -> control_pb2.WorkloadList:
        snap = self._latest(context)
        by_workload: dict[tuple[str, str], list[types_pb2.Replica]] = {}
        for r in snap.replicas.values():
            by_workload.setdefault((r.metadata.namespace, r.workload), []).append(r)
        keys = sorted(snap.workloads)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)

        def entries() -> Iterator[tuple[paging.Key, tuple[types_pb2.Workload,
                                                            control_pb2.WorkloadSummary]]]:
            for key in keys[start:]:
                w = snap.workloads[key]
                if not _matches(request, w.metadata.namespace, w.metadata.name):
                    continue
                yield key, (w, _summary(w, by_workload.get(key, []), snap))
        page, token = paging.take(entries(), request.page_size,
                                  lambda e: e[0].ByteSize() + e[1].ByteSize())
        out = control_pb2.WorkloadList(next_page_token=token)
        for w, summary in page:
            out.items.append(w)
            out.summaries.append(summary)
        return out

    def ListReplicas(self, request: control_pb2.ListRequest,
                     context: grpc.ServicerContext) -> control_pb2.ReplicaList:
        snap = self._latest(context)
        keys = sorted(snap.replicas)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)

        def entries() -> Iterator[tuple[paging.Key, tuple[types_pb2.Replica, types_pb2.Usage]]]:
            for key in keys[start:]:
                r = snap.replicas[key]
                if not _matches(request, r.metadata.namespace, r.metadata.name):
                    continue
                if request.workload and r.workload != request.workload:
                    continue
                if (r.node and r.node not in snap.heartbeats
                        and not is_terminal(r.status.phase)):
                    # What the node last said may no longer be true: say so, as
                    # Kubernetes' NodeLost does, without writing it anywhere.
                    r = _copy(r)
                    r.status.reason = types_pb2.REPLICA_REASON_NODE_NOT_READY
                    r.status.message = (f"node {r.node} is not heartbeating;"
                                        " last known state shown")
                yield key, (r, self.usage.replica(key) or types_pb2.Usage())
        page, token = paging.take(entries(), request.page_size,
                                  lambda e: e[0].ByteSize() + e[1].ByteSize())
        out = control_pb2.ReplicaList(next_page_token=token)
        for r, usage in page:
            out.items.append(r)
            out.usage.append(usage)
        return out

    def ListConfigs(self, request: control_pb2.ListRequest,
                    context: grpc.ServicerContext) -> control_pb2.ConfigList:
        snap = self._latest(context)
        keys = sorted(snap.configs)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)
        page, token = paging.take(
            ((key, snap.configs[key]) for key in keys[start:] if _matches(request, *key)),
            request.page_size, lambda c: c.ByteSize())
        return control_pb2.ConfigList(items=page, next_page_token=token)

    def ListSecrets(self, request: control_pb2.ListRequest,
                    context: grpc.ServicerContext) -> control_pb2.SecretList:
        """Names and keys only: a value never leaves the scheduler through the API."""
        snap = self._latest(context)
        keys = sorted(snap.secrets)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)

        def entries() -> Iterator[tuple[paging.Key, control_pb2.SecretSummary]]:
            for key in keys[start:]:
                if not _matches(request, *key):
                    continue
                try:
                    opened = self.secrets.open(snap, key)
                except SecretBoxError as e:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
                if opened is None:    # no key here: the name is all that can be said
                    summary = control_pb2.SecretSummary()
                    summary.metadata.namespace, summary.metadata.name = key
                else:
                    summary = control_pb2.SecretSummary(metadata=opened.metadata,
                                                        keys=sorted(opened.data))
                yield key, summary
        page, token = paging.take(entries(), request.page_size, lambda x: x.ByteSize())
        return control_pb2.SecretList(items=page, next_page_token=token)

    def ListVolumes(self, request: control_pb2.ListRequest,
                    context: grpc.ServicerContext) -> control_pb2.VolumeList:
        snap = self._latest(context)
        keys = sorted(snap.volumes)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)
        page, token = paging.take(
            ((key, volumes.with_users(snap, snap.volumes[key],
                                      self.usage.volume(snap.volumes[key].node, key)))
             for key in keys[start:] if _matches(request, *key)),
            request.page_size, lambda v: v.ByteSize())
        return control_pb2.VolumeList(items=page, next_page_token=token)

    def ListNodes(self, request: control_pb2.ListRequest,
                  context: grpc.ServicerContext) -> control_pb2.NodeList:
        snap = self._latest(context)
        allocated: dict[str, tuple[types_pb2.Resources, int]] = {}
        for r in snap.replicas.values():
            if r.node and not is_terminal(r.status.phase):
                alloc, count = allocated.get(r.node, (types_pb2.Resources(), 0))
                alloc.cpu_millis += r.spec.resources.cpu_millis
                alloc.memory_bytes += r.spec.resources.memory_bytes
                alloc.pids += r.spec.resources.pids
                allocated[r.node] = (alloc, count + 1)
        keys = [(name,) for name in sorted(snap.nodes)]
        start = _page_start(context, keys, request.page_token, (str,))

        def entries() -> Iterator[tuple[paging.Key, tuple[types_pb2.Node, types_pb2.Resources,
                                                            types_pb2.Usage, int]]]:
            for key in keys[start:]:
                name = key[0]
                if request.name and name != request.name:
                    continue
                node = types_pb2.Node()
                node.CopyFrom(snap.nodes[name])
                node.ready = name in snap.heartbeats
                alloc, count = allocated.get(name, (types_pb2.Resources(), 0))
                yield key, (node, alloc, self.usage.node(name) or types_pb2.Usage(), count)
        page, token = paging.take(entries(), request.page_size,
                                  lambda e: e[0].ByteSize() + e[1].ByteSize() + e[2].ByteSize())
        out = control_pb2.NodeList(next_page_token=token)
        for node, alloc, usage, count in page:
            out.items.append(node)
            out.allocated.append(alloc)
            out.usage.append(usage)
            out.replicas.append(count)
        return out

    # -- nodes -------------------------------------------------------------------

    def Cordon(self, request: control_pb2.CordonRequest,
               context: grpc.ServicerContext) -> control_pb2.CordonResponse:
        changed = _guarded(context, lambda: set_cordoned(self.store, request.node,
                                                         request.cordoned))
        if changed:
            verb = "Cordoned" if request.cordoned else "Uncordoned"
            log.info("node=%s %s", request.node, verb.lower())
            self._event(event("Node", "", request.node, verb,
                              "no new replicas here" if request.cordoned
                              else "schedulable again"))
            self.replicas.wake()
        return control_pb2.CordonResponse(changed=changed)

    def Drain(self, request: control_pb2.DrainRequest,
              context: grpc.ServicerContext) -> control_pb2.DrainResponse:
        """Cordons the node, then has the controller ask each of its replicas to leave."""
        _guarded(context, lambda: set_cordoned(self.store, request.node, True))
        evicted = _guarded(context, lambda: self.replicas.evict(request.node))
        log.info("node=%s drained: %d replicas asked to leave", request.node, len(evicted))
        self._event(event("Node", "", request.node, "Drained",
                          f"cordoned; {len(evicted)} replicas asked to move"))
        self.replicas.wake()
        return control_pb2.DrainResponse(
            evicted=[control_pb2.ObjectRef(namespace=ns, name=n) for ns, n in evicted])

    # -- history and the cluster ----------------------------------------------------

    def ListEvents(self, request: control_pb2.EventsRequest,
                   context: grpc.ServicerContext) -> control_pb2.EventList:
        events = self.events
        if events is None:
            return control_pb2.EventList()
        # History is not in the cache (it is not state): read etcd.
        items = _guarded(context, lambda: events.list(request.kind, request.namespace,
                                                      request.name))
        # Oldest first; events of one millisecond keep the store's order, so
        # (time, position within that millisecond) is a stable key while
        # new events are appended and old ones expire.
        keys: list[paging.Key] = []
        for i, e in enumerate(items):
            same_ms = i > 0 and items[i - 1].unix_ms == e.unix_ms
            keys.append((e.unix_ms, int(keys[-1][1]) + 1 if same_ms else 0))
        start = _page_start(context, keys, request.page_token, (int, int))
        page, token = paging.take(zip(keys[start:], items[start:], strict=True),
                                  request.page_size, lambda e: e.ByteSize())
        return control_pb2.EventList(items=page, next_page_token=token)

    def ClusterInfo(self, request: control_pb2.ClusterInfoRequest,
                    context: grpc.ServicerContext) -> control_pb2.ClusterInfoResponse:
        snap = self._latest(context)
        me = self.leadership
        return control_pb2.ClusterInfoResponse(
            leader=snap.leader, served_by=me.identity if me is not None else "",
            leader_since_unix_ms=me.leading_since_ms if me is not None else 0)

    def _event(self, e: types_pb2.Event) -> None:
        if self.events is not None:
            self.events.record(e)

    # -- relays to a replica's node ---------------------------------------------------

    def Logs(self, request: control_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[control_pb2.LogChunk]:
        node = self._node_of(request.namespace or "default", request.replica, context)
        yield from self._relay(node, context, lambda stub: stub.Logs(request, timeout=None))

    def Exec(self, request_iterator: Iterator[control_pb2.ExecInput],
             context: grpc.ServicerContext) -> Iterator[control_pb2.ExecOutput]:
        first = execstream.take_start(request_iterator)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, execstream.BAD_START)
        start = first.start
        node = self._node_of(start.namespace or "default", start.replica, context)
        log.info("replica=%s/%s node=%s exec %s", start.namespace or "default", start.replica,
                 node.name, " ".join(start.command)[:200])
        inputs = itertools.chain([first], request_iterator)
        yield from self._relay(node, context, lambda stub: stub.Exec(inputs, timeout=None))

    def _node_of(self, ns: str, replica_name: str,
                 context: grpc.ServicerContext) -> types_pb2.Node:
        """The node a replica is placed on, or the RPC aborts saying why not."""
        snap = self._latest(context)
        replica = snap.replicas.get((ns, replica_name))
        if replica is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"replica {replica_name} not found in namespace {ns}")
        node = snap.nodes.get(replica.node) if replica.node else None
        if node is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"replica {replica_name} is not placed on a node yet")
        return node

    def _relay(self, node: types_pb2.Node, context: grpc.ServicerContext,
               call: Callable[[agent_pb2_grpc.AgentStub], _Stream[T]]) -> Iterator[T]:
        """Streams an agent call's responses back to our caller; their hang-up ends it."""
        channel = self.dial(node)
        try:
            stream = call(agent_pb2_grpc.AgentStub(channel))

            def hang_up() -> None:
                stream.cancel()
            context.add_callback(hang_up)
            yield from stream
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.CANCELLED:
                return
            code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNAVAILABLE
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            if code == grpc.StatusCode.UNAVAILABLE:
                # We answered; the node did not: not "no scheduler at that address".
                reasons.attach(context, reasons.NODE_UNAVAILABLE)
            context.abort(code, f"node {node.name}: {details}")
        finally:
            channel.close()


# The key of workloads and replicas in their pages: (namespace, name).
_NAME_KEY = (str, str)


def _page_start(context: grpc.ServicerContext, keys: Sequence[paging.Key], token: str,
                shape: Sequence[type]) -> int:
    try:
        return paging.after(keys, token, shape)
    except paging.BadPageToken as e:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))


def _summary(w: types_pb2.Workload, replicas: list[types_pb2.Replica],
             snap: Snapshot) -> control_pb2.WorkloadSummary:
    current = objects.workload_hash(w, snap)
    live = [r for r in replicas if not r.metadata.deletion_requested]
    return control_pb2.WorkloadSummary(
        desired=w.spec.replicas,
        running=sum(r.status.phase == types_pb2.REPLICA_PHASE_RUNNING for r in live),
        up_to_date=sum(r.spec_hash == current for r in live),
        present=len(replicas))


def _matches(request: control_pb2.ListRequest, namespace: str, name: str) -> bool:
    if request.namespace and namespace != request.namespace:
        return False
    return not request.name or name == request.name


def _copy(r: types_pb2.Replica) -> types_pb2.Replica:
    out = types_pb2.Replica()
    out.CopyFrom(r)
    return out


class NodeService(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, leases: NodeLeases, replicas: ReplicaWriter, usage: UsageCache,
                 subnets: SubnetAllocator | None = None,
                 events: EventLog | None = None) -> None:
        self.leases = leases
        self.replicas = replicas
        self.usage = usage
        self.subnets = subnets
        self.events = events

    def Register(self, request: node_pb2.RegisterRequest,
                 context: grpc.ServicerContext) -> node_pb2.RegisterResponse:
        node = request.node
        problem = names.validate_dns_label(node.name)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node name: {problem}")
        # The node's subnet is the scheduler's to give, never the agent's to say.
        node.pod_subnet = self._subnet_for(node.name, context)
        was_not_ready = _guarded(context, lambda: self.leases.register(node))
        log.info("node=%s registered address=%s cpu_millis=%d memory_bytes=%d", node.name,
                 node.address, node.capacity.cpu_millis, node.capacity.memory_bytes)
        message = f"agent at {node.address}"
        if was_not_ready:
            message += f", back after {was_not_ready / 1000:.1f}s NotReady"
        if self.events is not None:
            self.events.record(event("Node", "", node.name, "Registered", message))
        self.replicas.forget_pushed(node.name)
        return node_pb2.RegisterResponse(
            heartbeat_interval_ms=self.leases.lease_ttl * 1000 // 3, pod_subnet=node.pod_subnet,
            cluster_cidr=self.subnets.cluster_cidr if self.subnets is not None else "")

    def _subnet_for(self, node: str, context: grpc.ServicerContext) -> str:
        subnets = self.subnets
        if subnets is None:
            return ""
        try:
            return _guarded(context, lambda: subnets.subnet_for(node))
        except SubnetError as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))

    def Heartbeat(self, request: node_pb2.HeartbeatRequest,
                  context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        self.usage.set_node(request.node, request.usage)
        registered = _guarded(context, lambda: self.leases.heartbeat(request.node))
        return node_pb2.HeartbeatResponse(reregister=not registered)

    def ReportStatus(self, request: node_pb2.StatusReport,
                     context: grpc.ServicerContext) -> node_pb2.StatusAck:
        merge = _guarded(context, lambda: self.replicas.record_status(request))
        for key, usage in merge.usage.items():
            self.usage.set_replica(key, usage)
        for key in merge.removed:
            self.usage.forget_replica(key)
        if request.complete or request.volumes:
            # A complete report says every volume the node keeps; a partial one
            # without volumes says nothing about them.
            self.usage.set_volumes(request.node, list(request.volumes))
        if self.events is not None:
            for e in node_events(request):
                self.events.record(e)
        return node_pb2.StatusAck()
