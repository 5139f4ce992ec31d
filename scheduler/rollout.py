"""Scale, rollout history, undo and restart: changes to one stored workload that are not an apply.

Each is a read, a decision and one compare-and-swap transaction (callers
retry lost races, retry.py), with kubectl's meaning:

- **scale** sets `spec.replicas` and nothing else: no new revision, no
  replica replaced (the spec hash leaves replicas out);
- **undo** puts back an earlier revision's template (revisions.py): the
  previous one, or `--to-revision N`. The workload keeps its replica count
  and update strategy, as a Deployment does, and the change is recorded as
  a new revision, so the rolling update runs under the strategy and a
  second undo goes back again. A template that already matches is left
  alone ("skipped", as kubectl says);
- **restart** sets the restart marker (`spec.restarted_at_unix_ms`) to now:
  the spec hash changes, so the controller replaces every replica under
  the update strategy exactly as for a spec change, with no change to what
  runs and no new revision;
- **history** reads the revisions from etcd (history, not in the cache)
  and says which one the workload runs.

Validation against the limits apply uses, and references (a Config an old
revision named may be gone), are the API's: it hands a `Check` in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mctl.v1 import control_pb2, types_pb2

from . import revisions
from .store import Store, Write


class RolloutError(Exception):
    """Refused: the message is one line for the user."""


class NotFound(RolloutError):
    pass


class Invalid(RolloutError):
    pass


class Precondition(RolloutError):
    pass


# Raises Invalid or Precondition when the workload may not be stored as it is.
Check = Callable[[types_pb2.Workload], None]


class Rollouts:
    def __init__(self, store: Store, history_limit: int = revisions.DEFAULT_LIMIT) -> None:
        self.store = store
        self.history_limit = history_limit

    def _read(self, namespace: str, name: str) -> tuple[types_pb2.Workload, int]:
        raw, mod_revision = self.store.get(self.store.keys.workload(namespace, name))
        if raw is None:
            raise NotFound(f"workload {name} not found in namespace {namespace}")
        w = types_pb2.Workload.FromString(raw)
        if w.metadata.deletion_requested:
            raise Precondition(f"workload {namespace}/{name} is being deleted")
        return w, mod_revision

    def _write(self, w: types_pb2.Workload, mod_revision: int,
               more: list[Write] | None = None) -> None:
        w.metadata.generation += 1
        key = self.store.keys.workload(w.metadata.namespace, w.metadata.name)
        # One transaction: a revision never exists without its spec change.
        self.store.commit([Write(key, w.SerializeToString(), mod_revision), *(more or [])])

    def scale(self, namespace: str, name: str, replicas: int,
              check: Check) -> control_pb2.ScaleResponse:
        w, mod_revision = self._read(namespace, name)
        previous = w.spec.replicas
        if previous == replicas:
            return control_pb2.ScaleResponse(previous=previous, changed=False)
        w.spec.replicas = replicas
        check(w)
        self._write(w, mod_revision)
        return control_pb2.ScaleResponse(previous=previous, changed=True)

    def history(self, namespace: str, name: str) -> control_pb2.RolloutHistoryResponse:
        w, _ = self._read(namespace, name)
        stored = revisions.read(self.store, namespace, name)
        return control_pb2.RolloutHistoryResponse(
            revisions=[s.revision for s in stored], current=revisions.current(stored, w.spec))

    def undo(self, namespace: str, name: str, to_revision: int,
             check: Check) -> control_pb2.RolloutChangeResponse:
        w, mod_revision = self._read(namespace, name)
        stored = revisions.read(self.store, namespace, name)
        if to_revision:
            found = [s for s in stored if s.revision.number == to_revision]
            if not found:
                kept = ", ".join(str(s.revision.number) for s in stored) or "none"
                raise NotFound(f"revision {to_revision} of workload {name} not found"
                               f" (kept: {kept})")
            target = found[0]
        else:
            previous = revisions.previous(stored, w.spec)
            if previous is None:
                raise Precondition(f"workload {name} has no previous revision to go back to")
            target = previous
        number = target.revision.number
        if revisions.template_hash(target.revision.spec) == revisions.template_hash(w.spec):
            return control_pb2.RolloutChangeResponse(
                changed=False, revision=number,
                message=f"skipped rollback (current template already matches revision {number})")
        new = types_pb2.Workload()
        new.CopyFrom(w)
        new.spec.CopyFrom(target.revision.spec)
        # The template goes back; how many and how they roll stay as they are.
        new.spec.replicas = w.spec.replicas
        new.spec.update.CopyFrom(w.spec.update)
        new.spec.restarted_at_unix_ms = w.spec.restarted_at_unix_ms
        check(new)
        writes, made = revisions.record(
            stored, new.spec, f"rollout undo to revision {number}", _now_ms(),
            lambda n: self.store.keys.revision(namespace, name, n), self.history_limit)
        self._write(new, mod_revision, writes)
        return control_pb2.RolloutChangeResponse(
            changed=True, revision=made, message=f"rolled back to revision {number}"
                                                 f" (now revision {made})")

    def restart(self, namespace: str, name: str) -> control_pb2.RolloutChangeResponse:
        w, mod_revision = self._read(namespace, name)
        # Strictly later, so two restarts within a millisecond still differ.
        w.spec.restarted_at_unix_ms = max(_now_ms(), w.spec.restarted_at_unix_ms + 1)
        self._write(w, mod_revision)
        return control_pb2.RolloutChangeResponse(changed=True, message="restarted")


def _now_ms() -> int:
    return int(time.time() * 1000)
