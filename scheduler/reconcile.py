"""Reconcile: what to create and what to delete so a workload matches its spec.

Reconcile is level-triggered. `decide` looks at the desired state (the
workload) and the observed state (its replicas) and returns the next step;
it keeps no memory between calls. The caller applies the step (requests
the deletions, creates the replicas) and calls `decide` again on every
change and on a periodic resync; applying the step and deciding again on
the result yields nothing more until the world moves (a replica starts, a
deleted one goes away). Several steps converge on the spec.

How replicas count
------------------
- Leaving: `deletion_requested`, or phase Terminating. They are on their
  way out, so they count neither as existing (they are replaced) nor as
  available. They do count toward the surge ceiling while they are bound to
  a node, because until their container is gone they still hold its CPU,
  memory and host ports: a replacement for a replica holding host port 80
  could not start on that node anyway. An unplaced one holds nothing.
- Current: not leaving, `spec_hash` equal to the workload's.
- Old (out of date): not leaving, any other `spec_hash`.
- Terminal replicas (Succeeded, Failed) exist: they are not replaced.
  Restarts happen on the node according to restartPolicy. A batch job that
  succeeded stays done. Only a workload with `replaceFailed` has its Failed
  replicas deleted (rule 2b), REPLACE_FAILED_DELAY_MS after they ended, so
  that reconcile makes new ones (Nomad's reschedule, with a fixed delay so
  a replica that fails at once does not spin).
- Available: Running and not leaving.

Rules, in the order `decide` applies them
-----------------------------------------
1. Workload gone or being deleted: delete every replica whose deletion was
   not requested yet. Nothing else.
2b. replaceFailed: current replicas Failed for REPLACE_FAILED_DELAY_MS go.
2. Scale down: current replicas beyond `replicas` are deleted, in
   `deletion_order`. Scaling down is what the user asked for, so it is not
   held back by maxUnavailable; since idle replicas go first, it deletes a
   Running one only when `replicas` Running ones remain.
3. Old replicas that are not Running serve nothing: delete them all.
4. Old Running replicas: delete as many as keeps the available count
   (Running current + Running old) at or above `replicas - maxUnavailable`.
   If it is already below, delete none.
5. Create the missing current replicas, but never so many that the replicas
   holding or about to hold a node exceed `replicas + maxSurge`.

Progress: with maxUnavailable >= 1, rule 4 can always delete an old replica
once the floor is met; with maxSurge >= 1, rule 5 can always add a current
one, which raises availability once it runs, which lets rule 4 delete an old
one. Validation rejects both being 0; should it happen anyway, decide acts
as if maxUnavailable were 1 rather than stall.

This mirrors Kubernetes' Deployment controller (surge on the new ReplicaSet,
maxScaledDown on the old ones, unhealthy old pods first) and Nomad's
reconciler, reduced to one list of replicas with a spec hash.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from mctl.common.names import DNS_LABEL_MAX, REPLICA_SUFFIX_ALPHABET
from mctl.scheduler.model import Phase, ReplicaView, WorkloadView

SUFFIX_LENGTH = 5
REPLACE_FAILED_DELAY_MS = 5_000
# Tries before giving up on finding a free name. With 27**5 (14 million)
# suffixes a collision is rare, so running out means something else is wrong.
_NAME_ATTEMPTS = 64


@dataclass(frozen=True, slots=True)
class Decision:
    """The next step for one workload.

    `create`: how many replicas of the workload's current spec to make.
    `delete`: names of replicas whose deletion to request, most expendable
    first. `notes`: why, for logging; `reason` joins them.
    """

    create: int = 0
    delete: list[str] = field(default_factory=list)
    notes: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(self.notes) if self.notes else "in sync"

    @property
    def noop(self) -> bool:
        return self.create == 0 and not self.delete


def is_leaving(replica: ReplicaView) -> bool:
    """On its way out: deletion requested, or already terminating."""
    return replica.deletion_requested or replica.phase == Phase.TERMINATING


def _phase_rank(replica: ReplicaView) -> int:
    # Lower is deleted first: unplaced, then bound but Pending, then other
    # phases that do not serve (Starting, Succeeded, Failed), then Running.
    if not replica.placed:
        return 0
    if replica.phase == Phase.PENDING:
        return 1
    if replica.phase != Phase.RUNNING:
        return 2
    return 3


def deletion_order(replicas: Sequence[ReplicaView], spec_hash: str | None) -> list[ReplicaView]:
    """The replicas, most expendable first, like Kubernetes' ReplicaSet ranking:

    1. out of date (spec_hash differs; skipped when spec_hash is None),
    2. unplaced, 3. Pending on a node, 4. not Running (Starting, Succeeded,
       Failed), 5. Running;
    within each, newest first (created_ms descending, then name descending)
    so the replicas that have proven themselves longest stay.
    """
    newest_first = sorted(replicas, key=lambda r: (r.created_ms, r.name), reverse=True)

    def rank(replica: ReplicaView) -> tuple[int, int]:
        current = spec_hash is None or replica.spec_hash == spec_hash
        return (1 if current else 0, _phase_rank(replica))

    # sorted is stable: the newest-first order survives within each rank.
    return sorted(newest_first, key=rank)


def decide(workload: WorkloadView | None, replicas: Sequence[ReplicaView], now_ms: int) -> Decision:
    """The next step to bring `replicas` (all of one workload) to `workload`.

    `now_ms` is the caller's clock (rule 2b waits on it).
    """
    if workload is None or workload.deletion_requested:
        return _delete_all(replicas)
    return _converge(workload, replicas, now_ms)


def settled(workload: WorkloadView | None, replicas: Sequence[ReplicaView]) -> bool:
    """Whether no replica moving between Pending, Starting and Running (and no
    other change of status) can change what `decide` says for `replicas`.

    True when the workload is being deleted and every replica was asked to
    leave (`decide` only asks replicas to leave), or when every replica not
    leaving is of the current spec, there are exactly `replicas` of them,
    and none is Failed waiting for replaceFailed: then rules 2-4 have
    nothing to delete and rule 5 nothing to create, whatever the phases
    within that set. The controller skips such workloads on status reports
    (scheduler/changes.py); a replica new, gone, placed, asked to leave or
    ended makes it decide again.
    """
    if workload is None or workload.deletion_requested:
        return all(r.deletion_requested for r in replicas)
    live = 0
    for r in replicas:
        if is_leaving(r):
            continue
        if r.spec_hash != workload.spec_hash:
            return False
        if workload.replace_failed and r.phase == Phase.FAILED:
            return False
        live += 1
    return live == max(0, workload.replicas)


def _delete_all(replicas: Sequence[ReplicaView]) -> Decision:
    doomed = [r for r in deletion_order(replicas, None) if not r.deletion_requested]
    notes = (f"workload deleted: deleting {len(doomed)} replicas",) if doomed else ()
    return Decision(delete=[r.name for r in doomed], notes=notes)


def _update_limits(workload: WorkloadView) -> tuple[int, int]:
    """(max_surge, max_unavailable), never both 0 so a rollout can progress."""
    surge = max(0, workload.max_surge)
    unavailable = max(0, workload.max_unavailable)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _converge(workload: WorkloadView, replicas: Sequence[ReplicaView], now_ms: int) -> Decision:
    desired = max(0, workload.replicas)
    surge, unavailable = _update_limits(workload)
    live = [r for r in replicas if not is_leaving(r)]
    ranked = deletion_order(live, workload.spec_hash)
    current = [r for r in ranked if r.spec_hash == workload.spec_hash]
    old = [r for r in ranked if r.spec_hash != workload.spec_hash]
    notes: list[str] = []

    # Rule 2b: failed replicas of a workload that asks for it go (and
    # rule 5 replaces them).
    failed: list[ReplicaView] = []
    if workload.replace_failed:
        failed = [r for r in current if r.phase == Phase.FAILED
                  and now_ms - r.finished_ms >= REPLACE_FAILED_DELAY_MS]
        if failed:
            notes.append(f"replacing {len(failed)} failed")
            current = [r for r in current if r not in failed]

    # Rule 2: scale down the current replicas, most expendable first.
    excess = max(0, len(current) - desired)
    doomed = failed + current[:excess]
    kept_current = current[excess:]
    if excess:
        notes.append(f"scale down: {len(current)} -> {desired}")

    # Rule 3: old replicas that serve nothing go at once.
    old_running = [r for r in old if r.phase == Phase.RUNNING]
    old_idle = [r for r in old if r.phase != Phase.RUNNING]
    doomed += old_idle

    # Rule 4: old Running ones as far as the availability floor allows.
    floor = max(0, desired - unavailable)
    available = sum(1 for r in kept_current if r.phase == Phase.RUNNING) + len(old_running)
    budget = max(0, available - floor)
    doomed += old_running[:budget]
    if old:
        notes.append(
            f"rolling update: {len(old)} out of date, deleting"
            f" {len(old_idle)} idle and {min(budget, len(old_running))} running"
            f" (available {available}, floor {floor})"
        )

    # Rule 5: create up to the desired count, within the surge ceiling.
    ceiling = desired + surge
    doomed_names = {r.name for r in doomed}
    occupying = sum(1 for r in replicas if _occupies_after(r, doomed_names))
    missing = desired - len(kept_current)
    create = max(0, min(missing, ceiling - occupying))
    if create:
        notes.append(f"create {create} of {missing} missing")
    elif missing > 0:
        notes.append(f"{missing} missing, waiting: {occupying} of surge ceiling {ceiling} in use")

    delete = [r.name for r in ranked if r.name in doomed_names]
    return Decision(create=create, delete=delete, notes=tuple(notes))


def _occupies_after(replica: ReplicaView, doomed_names: set[str]) -> bool:
    """Whether the replica holds or is about to hold a node once the
    deletions are requested: live replicas do, leaving ones while bound."""
    if is_leaving(replica) or replica.name in doomed_names:
        return replica.placed
    return True


def new_replica_name(workload: str, existing: set[str], rng: random.Random) -> str:
    """`<workload>-<5 random characters>`, not in `existing`.

    The workload part is cut so the whole name stays a DNS label of at most
    63 characters. The characters are Kubernetes' (no vowels, no 0/1/3).
    """
    base = workload[: DNS_LABEL_MAX - SUFFIX_LENGTH - 1]
    for _ in range(_NAME_ATTEMPTS):
        suffix = "".join(rng.choice(REPLICA_SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
        name = f"{base}-{suffix}"
        if name not in existing:
            return name
    raise RuntimeError(f"no free replica name for {workload!r} after {_NAME_ATTEMPTS} tries")


def new_replica_names(
    workload: str, count: int, existing: set[str], rng: random.Random
) -> list[str]:
    """`count` distinct new names for a Decision's `create`; `existing` is
    left unchanged."""
    taken = set(existing)
    names = []
    for _ in range(count):
        name = new_replica_name(workload, taken, rng)
        taken.add(name)
        names.append(name)
    return names
