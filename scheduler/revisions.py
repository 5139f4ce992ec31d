"""Spec revisions of a workload: what `rollout history` lists and `rollout undo` returns to.

Kubernetes keeps a Deployment's past pod templates as old ReplicaSets, the
last `revisionHistoryLimit` (10 by default). mctl keeps the same facts as
small records, one etcd key per revision (`revisions/<ns>/<name>/<n>`,
keys.py): the spec as applied (with the digest the server resolved for its
image, so an undo runs the very bytes it ran then), its number, when it was
made and why (`apply`, `rollout undo to revision 2`).

What counts as a revision is the *template*: the spec less `replicas`, the
update strategy and the restart marker. So, as in Kubernetes:

- an apply makes a new revision only when the template changes; scaling
  (by apply or `mctl scale`) and a new update strategy make none;
- `rollout restart` makes none either: it replaces the replicas of the
  same template (the marker is outside it);
- a new revision whose template equals an older one's takes its place:
  the older record goes, so every template is listed once, at its latest
  number (Kubernetes re-numbers the old ReplicaSet the same way on undo);
- at most `limit` are kept; the oldest go first.

Revisions are history, not state: no snapshot or cache holds them (the
store skips their range); they are read from etcd when asked for. They are
written in the transaction that changes the workload's spec, and deleted
in the one that asks for the workload's deletion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mctl.common.spec import spec_hash
from mctl.v1 import types_pb2

from .keys import KeyCodec
from .store import Write

# Kubernetes' default revisionHistoryLimit.
DEFAULT_LIMIT = 10


class RevisionReads(Protocol):
    """What reading revisions needs of the store (store.py)."""

    keys: KeyCodec

    def get_prefix_meta(self, prefix: str) -> list[tuple[str, bytes, int]]: ...


@dataclass(frozen=True)
class Stored:
    """One revision record as read: its key and mod revision (for the delete) and value."""

    key: str
    mod_revision: int
    revision: types_pb2.WorkloadRevision


def template(spec: types_pb2.WorkloadSpec) -> types_pb2.WorkloadSpec:
    """The spec less what never makes new replicas by itself, nor a revision."""
    out = types_pb2.WorkloadSpec()
    out.CopyFrom(spec)
    out.ClearField("replicas")
    out.ClearField("update")
    out.ClearField("restarted_at_unix_ms")
    return out


def template_hash(spec: types_pb2.WorkloadSpec) -> str:
    return spec_hash(template(spec))


def read(store: RevisionReads, namespace: str, name: str) -> list[Stored]:
    """The workload's revisions, oldest first (records that do not parse are skipped)."""
    out = []
    for key, value, mod_revision in store.get_prefix_meta(
            store.keys.revisions_prefix(namespace, name)):
        try:
            revision = types_pb2.WorkloadRevision.FromString(value)
        except Exception:  # noqa: BLE001 - a damaged record must not hide the others
            continue
        out.append(Stored(key, mod_revision, revision))
    out.sort(key=lambda s: s.revision.number)
    return out


def current(stored: Sequence[Stored], spec: types_pb2.WorkloadSpec) -> int:
    """The number of the revision whose template `spec` runs; 0 if none is kept."""
    want = template_hash(spec)
    matches = [s.revision.number for s in stored if template_hash(s.revision.spec) == want]
    return max(matches, default=0)


def previous(stored: Sequence[Stored], spec: types_pb2.WorkloadSpec) -> Stored | None:
    """What `rollout undo` returns to: the latest revision of another template than `spec`'s."""
    want = template_hash(spec)
    others = [s for s in stored if template_hash(s.revision.spec) != want]
    return others[-1] if others else None


def record(stored: Sequence[Stored], spec: types_pb2.WorkloadSpec, cause: str, now_ms: int,
           key_of: Callable[[int], str],
           limit: int = DEFAULT_LIMIT) -> tuple[list[Write], int]:
    """The writes that record `spec` as the workload's next revision, and its number.

    `stored` is what `read` gave; every delete compares its mod revision, so
    a concurrent writer of the same history makes the transaction fail and
    the caller decide again.
    """
    if limit < 1:
        raise ValueError(f"a history limit of {limit} keeps nothing")
    number = max((s.revision.number for s in stored), default=0) + 1
    kept = types_pb2.WorkloadSpec()
    kept.CopyFrom(spec)
    kept.ClearField("restarted_at_unix_ms")
    new = types_pb2.WorkloadRevision(number=number, created_unix_ms=now_ms,
                                     change_cause=cause, spec=kept)
    writes = [Write(key_of(number), new.SerializeToString(), 0)]
    want = template_hash(spec)
    survivors = []
    for s in stored:
        if template_hash(s.revision.spec) == want:
            writes.append(Write(s.key, None, s.mod_revision))     # superseded
        else:
            survivors.append(s)
    # The new one counts towards the limit; the oldest survivors make room.
    for s in survivors[:max(0, len(survivors) + 1 - limit)]:
        writes.append(Write(s.key, None, s.mod_revision))
    return writes, number


def deletes(stored: Sequence[Stored]) -> list[Write]:
    """The writes that remove every revision read (the workload's deletion)."""
    return [Write(s.key, None, s.mod_revision) for s in stored]
