"""The scheduler's gRPC services: the control plane (for the CLI) and the node API.

The services translate between gRPC and the collaborators they are given;
they decide nothing themselves:

- reads (List*, the replica behind Logs and Exec, ClusterInfo) come from
  the watch cache, at a revision that holds every write committed before
  the call (`StateReader.latest`), on every scheduler, leading or not;
- watch streams (WatchObjects, WatchEvents: `get -w`, `events`) are
  watchstream.py's, fed by the same cache;
- workloads and node records are written here with compare-and-swap,
  retried on lost races (retry.py);
- an apply with `dry_run` takes the same path, validation and plan
  included, and commits nothing; its results carry the object as stored
  and as it would be (Secrets masked) for `diff`;
- a workload's spec revisions (revisions.py) are written in the
  transaction of its spec change and deleted with its deletion request;
  scale, rollout undo and restart are rollout.py's;
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

import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import grpc

from mctl.common import execstream, names, reasons, selectors, validation
from mctl.common.phases import is_terminal
from mctl.common.spec import spec_hash
from mctl.common.version import version
from mctl.v1 import (
    agent_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    types_pb2,
)

from . import imagepin, objects, paging, revisions, rollout, volumes
from .events import event
from .nodes import NodeLeases, NodeNotFound, NodesBusy, set_cordoned
from .retry import TooManyConflicts, retry_conflicts
from .secretbox import SecretBox, SecretBoxError
from .status import ReportMerge, node_events
from .store import MAX_TXN_OPS, Snapshot, Store, StoreUnavailable, Write
from .subnets import SubnetAllocator, SubnetError
from .usage import UsageCache
from .watchstream import WatchHub

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
                 image_resolver: imagepin.Resolver | None = None,
                 watches: WatchHub | None = None) -> None:
        self.store = store
        # Revisions kept per workload (revisions.py), and scale/rollout's writes.
        self.history_limit = revisions.DEFAULT_LIMIT
        self.rollouts = rollout.Rollouts(store)
        # `get -w` and `events -w` (watchstream.py); None: this server offers no watch.
        self.watches = watches
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
        for w in request.workloads:
            # The restart marker is the server's (rollout.py): the spec is
            # judged with the stored one, so a restart does not make the
            # next apply look like a new template to imagepin.
            old = snap.workloads.get((w.metadata.namespace, w.metadata.name))
            w.spec.restarted_at_unix_ms = (old.spec.restarted_at_unix_ms if old is not None
                                           and not old.metadata.deletion_requested else 0)
        # Before the transaction, and once: asking a registry takes a round trip.
        pins = imagepin.pins(self.image_resolver, request.workloads, snap.workloads,
                             lambda ns, name: self._secret_of(snap, request, ns, name))
        return _guarded(context, lambda: retry_conflicts(
            lambda _: self._apply_once(request, pins, snap), what="apply"))

    def _secret_of(self, snap: Snapshot, request: control_pb2.ApplyRequest, namespace: str,
                   name: str) -> types_pb2.Secret | None:
        """A Secret as this apply leaves it: one it carries, else the stored one (opened)."""
        for x in request.secrets:
            if (x.metadata.namespace, x.metadata.name) == (namespace, name):
                return x
        try:
            return self.secrets.open(snap, (namespace, name))
        except SecretBoxError:
            return None

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
                    pins: dict[tuple[str, str], str] | None = None,
                    snap: Snapshot | None = None) -> control_pb2.ApplyResponse:
        # Each group is one object's writes (a workload and its revision
        # records): committed in one transaction, never split across two.
        groups: list[list[Write]] = []
        response = control_pb2.ApplyResponse()
        now = int(time.time() * 1000)
        dry_run = request.dry_run
        users = snap if snap is not None else Snapshot()
        # Configs and Secrets first: the workloads of this apply that name
        # them see them in the same transaction.
        for c in request.configs:
            groups.append(self._apply_config(c, now, response, users, dry_run))
        for x in request.secrets:
            groups.append(self._apply_secret(x, now, response, users, dry_run))
        for w in request.workloads:
            ns, name = w.metadata.namespace, w.metadata.name
            key = self.store.keys.workload(ns, name)
            raw, rev = self.store.get(key)
            new = types_pb2.Workload()
            new.CopyFrom(w)
            # The server's to write, as the uid (imagepin.py).
            new.spec.image_digest = (pins or {}).get((ns, name), "")
            action = "created"
            old = None
            if raw is not None:
                old = types_pb2.Workload.FromString(raw)
                # The status is the controller's (the virtual IP, vips.py):
                # kept across updates, and across a re-apply of a workload
                # still being deleted, whose address it still holds.
                if old.HasField("status"):
                    new.status.CopyFrom(old.status)
                if old.metadata.deletion_requested:
                    old = None
                else:
                    # The restart marker is the server's too (rollout.py): an
                    # apply keeps it, as kubectl apply keeps restartedAt.
                    new.spec.restarted_at_unix_ms = old.spec.restarted_at_unix_ms
                    if (old.spec == new.spec and
                            dict(old.metadata.labels) == dict(w.metadata.labels)):
                        response.results.add(namespace=ns, name=name, action="unchanged",
                                             kind="Workload")
                        continue
                    new.metadata.uid = old.metadata.uid
                    new.metadata.created_unix_ms = old.metadata.created_unix_ms
                    new.metadata.generation = old.metadata.generation + 1
                    action = "configured"
            if old is None:
                new.spec.restarted_at_unix_ms = 0
                new.metadata.uid = uuid.uuid4().hex
                new.metadata.created_unix_ms = now
                new.metadata.generation = 1
            new.metadata.deletion_requested = False
            group = [Write(key, new.SerializeToString(), rev)]
            if not dry_run and (old is None or revisions.template_hash(old.spec)
                                != revisions.template_hash(new.spec)):
                # A new template: a revision, in the same transaction.
                group += revisions.record(
                    revisions.read(self.store, ns, name), new.spec, "apply", now,
                    functools.partial(self.store.keys.revision, ns, name),
                    self.history_limit)[0]
            groups.append(group)
            result = response.results.add(
                namespace=ns, name=name, action=action, kind="Workload",
                rolls=old is not None and spec_hash(old.spec) != spec_hash(new.spec))
            if dry_run:
                if old is not None:
                    result.stored_workload.CopyFrom(old)
                result.planned_workload.CopyFrom(new)
        if dry_run:
            return response
        batches = list(_packed([], groups))
        for batch in batches:
            self.store.commit(batch)
        if batches:
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
                      response: control_pb2.ApplyResponse, snap: Snapshot,
                      dry_run: bool = False) -> list[Write]:
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
        result = response.results.add(namespace=ns, name=name, kind="Config",
                                      action="created" if old is None else "configured")
        if old is not None and dict(old.data) != dict(c.data):
            # Its users' hash covers its data (objects.py): they roll.
            result.rolled_workloads.extend(objects.users_of(snap, "config", ns, name))
            result.rolls = bool(result.rolled_workloads)
        if dry_run:
            if old is not None:
                result.stored_config.CopyFrom(old)
            result.planned_config.CopyFrom(new)
        return [Write(key, new.SerializeToString(), rev)]

    def _apply_secret(self, x: types_pb2.Secret, now: int,
                      response: control_pb2.ApplyResponse, snap: Snapshot,
                      dry_run: bool = False) -> list[Write]:
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
        result = response.results.add(namespace=ns, name=name, kind="Secret",
                                      action="created" if old is None else "configured")
        if old is not None and version is None:
            result.rolled_workloads.extend(objects.users_of(snap, "secret", ns, name,
                                                            rolling=True))
            result.rolls = bool(result.rolled_workloads)
        if dry_run:
            # Masked: a dry run shows which keys change, never a value.
            before = old.secret if old is not None else None
            if before is not None:
                result.stored_secret.CopyFrom(_masked(before, new, "before"))
            result.planned_secret.CopyFrom(_masked(new, before, "after"))
            return []
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
        groups: list[list[Write]] = []
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
            # Its history goes with the request (also on a second request,
            # should a transaction of the first have failed).
            gone = revisions.deletes(revisions.read(self.store, ref.namespace or "default",
                                                    ref.name))
            if not w.metadata.deletion_requested:
                w.metadata.deletion_requested = True
                gone.insert(0, Write(key, w.SerializeToString(), rev))
            groups.append(gone)
        for batch in _packed(writes, groups):
            self.store.commit(batch)
        return response

    # -- scale and rollout (rollout.py) ------------------------------------------------

    def Scale(self, request: control_pb2.ScaleRequest,
              context: grpc.ServicerContext) -> control_pb2.ScaleResponse:
        ns = self._workload_ref(request.namespace, request.name, context)

        def check(w: types_pb2.Workload) -> None:
            # The bounds of apply, for the one field that changes.
            if found := validation.workload_problem(w, self.limits):
                raise rollout.Invalid(f"workload {ns}/{request.name}: {found}")
            snap = self.reads.latest()
            desired = {key: x.spec.replicas for key, x in snap.workloads.items()
                       if not x.metadata.deletion_requested}
            if problem := validation.cluster_replicas_problem(desired, [w],
                                                              self.max_cluster_replicas):
                raise rollout.Precondition(problem)
        response = self._rollout(context, "scale", lambda: self.rollouts.scale(
            ns, request.name, request.replicas, check))
        if response.changed:
            message = f"replicas {response.previous} -> {request.replicas}"
            log.info("workload=%s/%s scaled: %s", ns, request.name, message)
            self._event(event("Workload", ns, request.name, "Scaled", message))
            self.replicas.wake()
        return response

    def RolloutHistory(self, request: control_pb2.RolloutHistoryRequest,
                       context: grpc.ServicerContext) -> control_pb2.RolloutHistoryResponse:
        ns = self._workload_ref(request.namespace, request.name, context)
        # History is not in the cache: read etcd, as ListEvents does.
        return self._rollout(context, "history", lambda: self.rollouts.history(ns, request.name))

    def RolloutUndo(self, request: control_pb2.RolloutUndoRequest,
                    context: grpc.ServicerContext) -> control_pb2.RolloutChangeResponse:
        ns = self._workload_ref(request.namespace, request.name, context)
        if request.to_revision < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"to_revision: must be 0 (the previous) or a revision number,"
                          f" not {request.to_revision}")

        def check(w: types_pb2.Workload) -> None:
            # An old template meets today's rules, and what it names must exist.
            if found := validation.workload_problem(w, self.limits):
                raise rollout.Invalid(f"revision of workload {ns}/{request.name}: {found}")
            if problem := self._reference_problem(self.reads.latest(),
                                                  control_pb2.ApplyRequest(workloads=[w])):
                raise rollout.Precondition(problem)
        response = self._rollout(context, "undo", lambda: self.rollouts.undo(
            ns, request.name, request.to_revision, check))
        if response.changed:
            log.info("workload=%s/%s %s", ns, request.name, response.message)
            self._event(event("Workload", ns, request.name, "RolledBack", response.message))
            self.replicas.wake()
        return response

    def RolloutRestart(self, request: control_pb2.RolloutRestartRequest,
                       context: grpc.ServicerContext) -> control_pb2.RolloutChangeResponse:
        ns = self._workload_ref(request.namespace, request.name, context)
        response = self._rollout(context, "restart",
                                 lambda: self.rollouts.restart(ns, request.name))
        log.info("workload=%s/%s restart requested", ns, request.name)
        self._event(event("Workload", ns, request.name, "Restarted",
                          "every replica is replaced under the update strategy"))
        self.replicas.wake()
        return response

    @staticmethod
    def _workload_ref(namespace: str, name: str, context: grpc.ServicerContext) -> str:
        """The namespace ("" is default), once both names are valid; else the call aborts."""
        ns = namespace or "default"
        for what, value in (("namespace", ns), ("name", name)):
            if problem := names.validate_dns_label(value):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {problem}")
        return ns

    def _rollout(self, context: grpc.ServicerContext, what: str, fn: Callable[[], T]) -> T:
        """`fn` retried on lost races, its refusals as status codes."""
        try:
            return _guarded(context, lambda: retry_conflicts(lambda _: fn(), what=what))
        except rollout.NotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except rollout.Invalid as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except rollout.Precondition as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))

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
        selector = _selector(context, request)

        def entries() -> Iterator[tuple[paging.Key, tuple[types_pb2.Workload,
                                                            control_pb2.WorkloadSummary]]]:
            for key in keys[start:]:
                w = snap.workloads[key]
                if (not _matches(request, w.metadata.namespace, w.metadata.name)
                        or not selector.matches(w.metadata.labels)):
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
        selector = _selector(context, request)

        def entries() -> Iterator[tuple[paging.Key, tuple[types_pb2.Replica, types_pb2.Usage]]]:
            for key in keys[start:]:
                r = snap.replicas[key]
                if (not _matches(request, r.metadata.namespace, r.metadata.name)
                        or not selector.matches(r.metadata.labels)):
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
        selector = _selector(context, request)
        page, token = paging.take(
            ((key, snap.configs[key]) for key in keys[start:]
             if _matches(request, *key) and selector.matches(snap.configs[key].metadata.labels)),
            request.page_size, lambda c: c.ByteSize())
        return control_pb2.ConfigList(items=page, next_page_token=token)

    def ListSecrets(self, request: control_pb2.ListRequest,
                    context: grpc.ServicerContext) -> control_pb2.SecretList:
        """Names and keys only: a value never leaves the scheduler through the API."""
        snap = self._latest(context)
        keys = sorted(snap.secrets)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)
        selector = _selector(context, request)

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
                if selector.matches(summary.metadata.labels):
                    yield key, summary
        page, token = paging.take(entries(), request.page_size, lambda x: x.ByteSize())
        return control_pb2.SecretList(items=page, next_page_token=token)

    def ListVolumes(self, request: control_pb2.ListRequest,
                    context: grpc.ServicerContext) -> control_pb2.VolumeList:
        snap = self._latest(context)
        keys = sorted(snap.volumes)
        start = _page_start(context, keys, request.page_token, _NAME_KEY)
        selector = _selector(context, request)
        page, token = paging.take(
            ((key, volumes.with_users(snap, snap.volumes[key],
                                      self.usage.volume(snap.volumes[key].node, key)))
             for key in keys[start:]
             if _matches(request, *key) and selector.matches(snap.volumes[key].metadata.labels)),
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
        selector = _selector(context, request)

        def entries() -> Iterator[tuple[paging.Key, tuple[types_pb2.Node, types_pb2.Resources,
                                                            types_pb2.Usage, int]]]:
            for key in keys[start:]:
                name = key[0]
                if (request.name and name != request.name
                        or not selector.matches(snap.nodes[name].labels)):
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
            leader_since_unix_ms=me.leading_since_ms if me is not None else 0,
            server_version=version())

    def WatchObjects(self, request: control_pb2.WatchObjectsRequest,
                     context: grpc.ServicerContext
                     ) -> Iterator[control_pb2.WatchObjectsResponse]:
        yield from self._watches(context).watch_objects(request, context)

    def WatchEvents(self, request: control_pb2.WatchEventsRequest,
                    context: grpc.ServicerContext) -> Iterator[control_pb2.WatchEventsResponse]:
        yield from self._watches(context).watch_events(request, context)

    def _watches(self, context: grpc.ServicerContext) -> WatchHub:
        if self.watches is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this scheduler serves no watch streams")
        return self.watches

    def _event(self, e: types_pb2.Event) -> None:
        if self.events is not None:
            self.events.record(e)

    # -- relays to a replica's node ---------------------------------------------------

    def Logs(self, request: control_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[control_pb2.LogChunk]:
        if request.since_unix_ns < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "since_unix_ns: must be 0 (all) or a time after 1970")
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


def _selector(context: grpc.ServicerContext,
              request: control_pb2.ListRequest) -> selectors.Selector:
    try:
        return selectors.parse(request.label_selector)
    except selectors.SelectorError as e:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"label_selector: {e}")


def _summary(w: types_pb2.Workload, replicas: list[types_pb2.Replica],
             snap: Snapshot) -> control_pb2.WorkloadSummary:
    current = objects.workload_hash(w, snap)
    live = [r for r in replicas if not r.metadata.deletion_requested]
    return control_pb2.WorkloadSummary(
        desired=w.spec.replicas,
        running=sum(r.status.phase == types_pb2.REPLICA_PHASE_RUNNING for r in live),
        up_to_date=sum(r.spec_hash == current for r in live),
        present=len(replicas),
        up_to_date_ready=sum(r.spec_hash == current and r.status.ready for r in live))


def _masked(secret: types_pb2.Secret, other: types_pb2.Secret | None,
            when: str) -> types_pb2.Secret:
    """`secret` with every value "***"; one that differs from `other`'s says `when`."""
    out = types_pb2.Secret()
    out.CopyFrom(secret)
    out.ClearField("data")
    for key, value in secret.data.items():
        changed = other is not None and key in other.data and other.data[key] != value
        out.data[key] = f"*** ({when})".encode() if changed else b"***"
    return out


def _packed(writes: list[Write], groups: list[list[Write]]) -> Iterator[list[Write]]:
    """Transactions of at most MAX_TXN_OPS writes: `writes` one by one, each group whole."""
    batch: list[Write] = []
    for group in [[w] for w in writes] + [g for g in groups if g]:
        if batch and len(batch) + len(group) > MAX_TXN_OPS:
            yield batch
            batch = []
        batch += group
    if batch:
        yield batch


def _matches(request: control_pb2.ListRequest, namespace: str, name: str) -> bool:
    if request.namespace and namespace != request.namespace:
        return False
    return not request.name or name == request.name


def _copy(r: types_pb2.Replica) -> types_pb2.Replica:
    out = types_pb2.Replica()
    out.CopyFrom(r)
    return out


# Status reports waiting for their batch to be stored (statuswriter.py) at
# once, at most: 28 of the scheduler's 32 API threads, so reports alone never
# hold every thread that heartbeats and the control API need (registrations
# and heartbeats that need etcd have bounds of 4 each). A report beyond it
# is refused at once
# (RESOURCE_EXHAUSTED; the agent sends it again on its next pass), as
# Kubernetes' API priority and fairness keeps a share of the server for node
# leases. Refusing early costs more than it saves: with 24, a thousand nodes
# reporting together took 10 s to be stored instead of 7, since every refused
# report waits for its node's next pass.
MAX_REPORTS_IN_FLIGHT = 28
# Registrations in progress at once (each is several etcd round trips); the
# agent retries a refused one with its back-off. Nodes whose lease needs
# etcd have their own bound (nodes.MAX_SLOW_HEARTBEATS).
MAX_REGISTERS_IN_FLIGHT = 4


class NodeService(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, leases: NodeLeases, replicas: ReplicaWriter, usage: UsageCache,
                 subnets: SubnetAllocator | None = None,
                 events: EventLog | None = None, service_cidr: str = "") -> None:
        self.leases = leases
        self.replicas = replicas
        self.usage = usage
        self.subnets = subnets
        # Told to every node on registration: it routes the VIPs into its bridge.
        self.service_cidr = service_cidr
        self.events = events
        self._reporting = threading.BoundedSemaphore(MAX_REPORTS_IN_FLIGHT)
        self._registering = threading.BoundedSemaphore(MAX_REGISTERS_IN_FLIGHT)

    def Register(self, request: node_pb2.RegisterRequest,
                 context: grpc.ServicerContext) -> node_pb2.RegisterResponse:
        node = request.node
        problem = names.validate_dns_label(node.name)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node name: {problem}")
        # The node's subnet is the scheduler's to give, never the agent's to say.
        node.pod_subnet = self._subnet_for(node.name, context)
        if not self._registering.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{MAX_REGISTERS_IN_FLIGHT} nodes are registering; try again shortly")
        try:
            was_not_ready = _guarded(context, lambda: self.leases.register(node))
        finally:
            self._registering.release()
        log.info("node=%s registered address=%s cpu_millis=%d memory_bytes=%d", node.name,
                 node.address, node.capacity.cpu_millis, node.capacity.memory_bytes)
        message = f"agent at {node.address}"
        if was_not_ready:
            message += f", back after {was_not_ready / 1000:.1f}s NotReady"
        if self.events is not None:
            self.events.record(event("Node", "", node.name, "Registered", message))
        self.replicas.forget_pushed(node.name)
        return node_pb2.RegisterResponse(
            heartbeat_interval_ms=self.leases.interval_ms(node.name), pod_subnet=node.pod_subnet,
            cluster_cidr=self.subnets.cluster_cidr if self.subnets is not None else "",
            service_cidr=self.service_cidr)

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
        try:
            registered = _guarded(context, lambda: self.leases.heartbeat(request.node))
        except NodesBusy as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        if not registered:
            return node_pb2.HeartbeatResponse(reregister=True)
        return node_pb2.HeartbeatResponse(
            heartbeat_interval_ms=self.leases.interval_ms(request.node))

    def ReportStatus(self, request: node_pb2.StatusReport,
                     context: grpc.ServicerContext) -> node_pb2.StatusAck:
        if not self._reporting.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{MAX_REPORTS_IN_FLIGHT} status reports are being stored; "
                          "report again shortly")
        try:
            merge = _guarded(context, lambda: self.replicas.record_status(request))
        finally:
            self._reporting.release()
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
