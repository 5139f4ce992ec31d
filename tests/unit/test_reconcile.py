"""Unit and property tests of reconcile: decide() and replica names."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.common.names import validate_dns_label
from mctl.scheduler.model import Phase, ReplicaView, WorkloadView
from mctl.scheduler.reconcile import (
    Decision,
    decide,
    deletion_order,
    is_leaving,
    new_replica_name,
    new_replica_names,
)

NOW = 1_000_000


def workload(
    replicas: int = 3,
    spec_hash: str = "new",
    max_surge: int = 1,
    max_unavailable: int = 1,
    deletion_requested: bool = False,
) -> WorkloadView:
    return WorkloadView(
        "default",
        "web",
        spec_hash,
        replicas=replicas,
        max_surge=max_surge,
        max_unavailable=max_unavailable,
        deletion_requested=deletion_requested,
    )


def rep(
    name: str,
    spec_hash: str = "new",
    phase: Phase = Phase.RUNNING,
    node: str | None = None,
    created_ms: int = 0,
    deletion_requested: bool = False,
) -> ReplicaView:
    if node is None:
        node = "" if phase == Phase.PENDING else "n1"
    return ReplicaView(
        "default", name, "web", spec_hash, node, phase, created_ms, deletion_requested
    )


def running(count: int, spec_hash: str = "new", prefix: str = "r") -> list[ReplicaView]:
    return [rep(f"{prefix}{i}", spec_hash, Phase.RUNNING, created_ms=i) for i in range(count)]


# --- The invariants, shared by the examples and the properties ----------------


def occupying(replicas: list[ReplicaView]) -> int:
    """Replicas that hold or will hold a node: live ones, leaving ones bound."""
    return sum(1 for r in replicas if not is_leaving(r) or r.placed)


def available(replicas: list[ReplicaView]) -> int:
    return sum(1 for r in replicas if r.phase == Phase.RUNNING and not is_leaving(r))


def apply(
    w: WorkloadView | None,
    replicas: list[ReplicaView],
    decision: Decision,
    now: int = NOW,
    rng: random.Random | None = None,
) -> list[ReplicaView]:
    """What the planner does with a decision: request the deletions, create."""
    doomed = set(decision.delete)
    after = [replace(r, deletion_requested=True) if r.name in doomed else r for r in replicas]
    if decision.create:
        assert w is not None
        names = new_replica_names(
            w.name, decision.create, {r.name for r in replicas}, rng or random.Random(0)
        )
        after += [rep(name, w.spec_hash, Phase.PENDING, created_ms=now) for name in names]
    return after


def check_decision(w: WorkloadView, replicas: list[ReplicaView], d: Decision) -> list[ReplicaView]:
    """Assert every invariant of one decision; return the state after it."""
    live = {r.name for r in replicas if not is_leaving(r)}
    assert d.create >= 0
    assert len(d.delete) == len(set(d.delete)), "deletes a replica twice"
    assert set(d.delete) <= live, "deletes a replica already leaving or unknown"

    after = apply(w, replicas, d)
    desired = w.replicas
    surge, unavailable = w.max_surge, w.max_unavailable or (0 if w.max_surge else 1)

    # Availability: our deletions never take Running replicas below the
    # floor (or lower than they were, when already below it).
    floor = max(0, desired - unavailable)
    assert available(after) >= min(available(replicas), floor), "deleted below the floor"

    # Surge: a creation never takes the replicas holding nodes above the ceiling.
    if d.create:
        assert occupying(after) <= desired + surge, "created above the surge ceiling"

    # Never more live current replicas than desired.
    current_after = [r for r in after if not is_leaving(r) and r.spec_hash == w.spec_hash]
    assert len(current_after) <= desired

    # Old replicas that are not Running are always deleted.
    for r in after:
        if not is_leaving(r) and r.spec_hash != w.spec_hash:
            assert r.phase == Phase.RUNNING, f"kept idle old replica {r}"

    # Idempotent: deciding again on the applied state adds nothing.
    again = decide(w, after, NOW)
    assert again.noop, f"second decision not empty: {again}"
    return after


# --- Examples ----------------------------------------------------------------


def test_creates_missing_replicas():
    d = decide(workload(replicas=3), [], NOW)
    assert d == Decision(create=3, delete=[], notes=d.notes)
    assert "create 3" in d.reason
    check_decision(workload(replicas=3), [], d)


def test_in_sync_is_a_noop():
    d = decide(workload(replicas=3), running(3), NOW)
    assert d.noop
    assert d.reason == "in sync"


def test_scale_up_adds_only_what_is_missing():
    d = decide(workload(replicas=5, max_surge=0), running(3), NOW)
    assert (d.create, d.delete) == (2, [])


def test_scale_down_deletes_idle_replicas_before_running_ones_newest_first():
    replicas = [
        rep("old-running", phase=Phase.RUNNING, created_ms=1),
        rep("young-running", phase=Phase.RUNNING, created_ms=9),
        rep("starting", phase=Phase.STARTING, created_ms=2),
        rep("bound-pending", phase=Phase.PENDING, node="n1", created_ms=3),
        rep("unplaced", phase=Phase.PENDING, created_ms=4),
    ]
    w = workload(replicas=1)
    d = decide(w, replicas, NOW)
    assert d.create == 0
    assert d.delete == ["unplaced", "bound-pending", "starting", "young-running"]
    check_decision(w, replicas, d)


def test_scale_down_is_not_held_back_by_max_unavailable():
    w = workload(replicas=1, max_unavailable=0, max_surge=1)
    d = decide(w, running(5), NOW)
    assert d.delete == ["r4", "r3", "r2", "r1"]


def test_deletion_order_prefers_out_of_date_then_newest():
    replicas = [
        rep("a", "new", Phase.RUNNING, created_ms=5),
        rep("b", "old", Phase.RUNNING, created_ms=1),
        rep("c", "old", Phase.PENDING, created_ms=0),
        rep("d", "new", Phase.PENDING, created_ms=0),
        rep("e", "new", Phase.RUNNING, created_ms=5),  # same age as "a": by name, descending
        rep("f", "new", Phase.SUCCEEDED, created_ms=7),
    ]
    assert [r.name for r in deletion_order(replicas, "new")] == ["c", "b", "d", "f", "e", "a"]
    # Without a spec hash, only phase and age count.
    assert [r.name for r in deletion_order(replicas, None)] == ["d", "c", "f", "e", "a", "b"]


def test_terminal_replicas_are_not_replaced():
    done = [rep(f"job{i}", phase=Phase.SUCCEEDED) for i in range(3)]
    assert decide(workload(replicas=3), done, NOW).noop
    failed = [rep("a", phase=Phase.FAILED), *running(2)]
    assert decide(workload(replicas=3), failed, NOW).noop


def test_leaving_replicas_are_replaced_within_the_surge_ceiling():
    replicas = [*running(2), rep("gone", phase=Phase.RUNNING, deletion_requested=True)]
    # 2 live + 1 leaving but still on its node = 3; the ceiling is 3 + 1.
    assert decide(workload(replicas=3, max_surge=1), replicas, NOW).create == 1
    # With no surge, the replacement waits until the leaving one is gone.
    d = decide(workload(replicas=3, max_surge=0), replicas, NOW)
    assert d.noop
    assert "waiting" in d.reason
    assert decide(workload(replicas=3, max_surge=0), running(2), NOW).create == 1


def test_unplaced_leaving_replicas_hold_nothing():
    replicas = [*running(2), rep("gone", phase=Phase.PENDING, deletion_requested=True)]
    assert decide(workload(replicas=3, max_surge=0), replicas, NOW).create == 1


def test_terminating_phase_counts_as_leaving():
    replicas = [*running(2), rep("stopping", phase=Phase.TERMINATING)]
    d = decide(workload(replicas=3, max_surge=1), replicas, NOW)
    assert (d.create, d.delete) == (1, [])


@pytest.mark.parametrize("deleted_workload", [None, workload(deletion_requested=True)])
def test_deleting_the_workload_deletes_every_replica(deleted_workload):
    replicas = [
        *running(2),
        rep("old", "old", Phase.RUNNING),
        rep("pending", phase=Phase.PENDING),
        rep("done", phase=Phase.SUCCEEDED),
        rep("stopping", phase=Phase.TERMINATING),
        rep("already", deletion_requested=True),
    ]
    d = decide(deleted_workload, replicas, NOW)
    assert d.create == 0
    assert sorted(d.delete) == sorted(r.name for r in replicas if not r.deletion_requested)
    assert d.delete[0] == "pending"  # the most expendable first
    assert decide(deleted_workload, apply(None, replicas, d), NOW).noop


def test_rolling_update_without_surge_deletes_within_max_unavailable():
    w = workload(replicas=3, max_surge=0, max_unavailable=1)
    state = running(3, "old", "o")
    d = decide(w, state, NOW)
    assert (d.create, d.delete) == (0, ["o2"])
    state = check_decision(w, state, d)
    # Nothing more until the deleted one is gone: it still holds its node.
    state = [r for r in state if not r.deletion_requested]
    d = decide(w, state, NOW)
    assert (d.create, d.delete) == (1, [])


def test_rolling_update_without_unavailability_surges_first():
    w = workload(replicas=3, max_surge=1, max_unavailable=0)
    state = running(3, "old", "o")
    d = decide(w, state, NOW)
    assert (d.create, d.delete) == (1, [])
    state = check_decision(w, state, d)
    # The new replica runs: one old one may go.
    state = [replace(r, phase=Phase.RUNNING, node="n2") if r.spec_hash == "new" else r
             for r in state]
    d = decide(w, state, NOW)
    assert (d.create, d.delete) == (0, ["o2"])


def test_idle_old_replicas_are_deleted_even_without_unavailability():
    w = workload(replicas=2, max_surge=1, max_unavailable=0)
    state = [*running(2, "old", "o"), rep("o-stuck", "old", Phase.PENDING),
             rep("o-done", "old", Phase.FAILED)]
    d = decide(w, state, NOW)
    assert d.delete == ["o-stuck", "o-done"]
    check_decision(w, state, d)


def test_failed_new_replica_holds_a_rollout_without_unavailability():
    # A new spec that fails must not take the old, working replicas down.
    w = workload(replicas=2, max_surge=1, max_unavailable=0)
    state = [*running(2, "old", "o"), rep("n-failed", "new", Phase.FAILED),
             rep("n-ok", "new", Phase.RUNNING)]
    d = decide(w, state, NOW)
    assert d.delete == ["o1"]  # 3 available, floor 2: one may go
    state = [r for r in apply(w, state, d) if not r.deletion_requested]
    assert decide(w, state, NOW).noop


def test_both_limits_zero_still_progress():
    w = workload(replicas=3, max_surge=0, max_unavailable=0)
    d = decide(w, running(3, "old", "o"), NOW)
    assert (d.create, d.delete) == (0, ["o2"])


def test_scale_to_zero_during_an_update():
    w = workload(replicas=0, max_surge=1, max_unavailable=0)
    state = [*running(2, "old", "o"), *running(2, "new", "n")]
    d = decide(w, state, NOW)
    assert d.create == 0
    assert sorted(d.delete) == ["n0", "n1", "o0", "o1"]


# --- Property tests ----------------------------------------------------------

HASHES = ["new", "old1", "old2"]


@st.composite
def replica_lists(draw: st.DrawFn, hashes: list[str] = HASHES) -> list[ReplicaView]:
    count = draw(st.integers(0, 10))
    replicas = []
    for i in range(count):
        phase = draw(st.sampled_from(Phase))
        # Only Pending replicas may be unplaced; a few Pending ones are bound.
        node = draw(st.sampled_from(["", "n1"])) if phase == Phase.PENDING else "n1"
        replicas.append(
            ReplicaView(
                "default",
                f"web-{i}",
                "web",
                draw(st.sampled_from(hashes)),
                node,
                phase,
                draw(st.integers(0, 5)),
                draw(st.booleans()),
            )
        )
    return replicas


@st.composite
def workloads(draw: st.DrawFn, spec_hash: str = "new") -> WorkloadView:
    surge = draw(st.integers(0, 3))
    unavailable = draw(st.integers(0 if surge else 1, 3))
    return workload(draw(st.integers(0, 6)), spec_hash, surge, unavailable)


@settings(max_examples=examples(500), deadline=None)
@given(w=workloads(), replicas=replica_lists())
def test_every_decision_keeps_the_invariants(w, replicas):
    check_decision(w, replicas, decide(w, replicas, NOW))


@settings(max_examples=examples(200), deadline=None)
@given(replicas=replica_lists(), flagged=st.booleans())
def test_deleting_a_workload_deletes_everything(replicas, flagged):
    w = workload(deletion_requested=True) if flagged else None
    d = decide(w, replicas, NOW)
    assert d.create == 0
    assert sorted(d.delete) == sorted(r.name for r in replicas if not r.deletion_requested)
    assert decide(w, apply(w, replicas, d), NOW).noop


def world_moves(replicas: list[ReplicaView], rng: random.Random, p: float) -> list[ReplicaView]:
    """The cluster acts, each replica one step with probability p: leaving
    replicas go away, new ones are placed, start and run. Nothing crashes."""
    after = []
    for r in replicas:
        if rng.random() >= p:
            after.append(r)
        elif is_leaving(r):
            continue  # its container is gone and the store forgot it
        elif r.phase == Phase.PENDING and not r.placed:
            after.append(replace(r, node=f"n{rng.randrange(3)}"))
        elif r.phase == Phase.PENDING:
            after.append(replace(r, phase=Phase.STARTING))
        elif r.phase == Phase.STARTING:
            after.append(replace(r, phase=Phase.RUNNING))
        else:
            after.append(r)
    rng.shuffle(after)  # the store gives no order
    return after


def converged(w: WorkloadView, replicas: list[ReplicaView]) -> bool:
    return len(replicas) == w.replicas and all(
        r.spec_hash == w.spec_hash and r.phase == Phase.RUNNING and not is_leaving(r)
        for r in replicas
    )


@settings(max_examples=examples(300), deadline=None)
@given(
    w=workloads(),
    start=replica_lists(hashes=["old1", "old2"]),
    edit=st.none() | st.tuples(st.integers(0, 10), st.integers(0, 6), st.booleans()),
    chaotic_steps=st.integers(0, 30),
    rng=st.randoms(use_true_random=False),
)
def test_reconcile_loop_converges(w, start, edit, chaotic_steps, rng):
    # The initial replicas are all out of date (a rollout has just begun) and
    # may be in any phase. An optional edit mid-way changes the replica count
    # and perhaps the spec again. The world first moves at random, then
    # fairly (every replica takes a step each round); by then the loop must
    # reach exactly `replicas` Running current replicas and nothing else.
    state = start
    now = NOW
    # Names from a real generator: hypothesis shrinks its own towards
    # drawing the same value forever.
    names = random.Random(rng.getrandbits(32))
    for step in range(chaotic_steps + 60):
        if edit is not None and step == edit[0]:
            w = replace(w, replicas=edit[1], spec_hash="newer" if edit[2] else w.spec_hash)
        d = decide(w, state, now)
        check_decision(w, state, d)
        state = apply(w, state, d, now, names)
        if converged(w, state):
            break
        state = world_moves(state, rng, rng.random() if step < chaotic_steps else 1.0)
        now += 1000
    assert converged(w, state), f"did not converge: {w} {state}"
    assert decide(w, state, now).noop


@settings(max_examples=examples(200), deadline=None)
@given(w=workloads(), old=st.integers(1, 6), rng=st.randoms(use_true_random=False))
def test_rollout_from_steady_state_keeps_the_floor_and_ceiling(w, old, rng):
    # From `old` Running old replicas, step by step: availability never drops
    # below the floor by our deletions, and the replicas holding nodes never
    # exceed what there was or the ceiling.
    assume(w.replicas > 0)
    state = running(old, "old1", "o")
    floor = max(0, w.replicas - w.max_unavailable)
    ceiling = w.replicas + w.max_surge
    for _ in range(80):
        before = available(state)
        d = decide(w, state, NOW)
        state = check_decision(w, state, d)
        assert available(state) >= min(before, floor)
        assert occupying(state) <= max(ceiling, old)
        if converged(w, state):
            break
        state = world_moves(state, rng, 1.0 if rng.random() < 0.5 else 0.5)
    assert converged(w, state)


# --- Names -------------------------------------------------------------------

SUFFIX = re.compile(r"-[bcdfghjklmnpqrstvwxz2456789]{5}\Z")


def test_new_replica_name_shape():
    name = new_replica_name("web", set(), random.Random(1))
    assert name.startswith("web-")
    assert SUFFIX.search(name)
    assert len(name) == len("web-") + 5
    assert new_replica_name("web", set(), random.Random(1)) == name  # seeded


def test_new_replica_name_truncates_long_workload_names():
    long = "a" * 63
    name = new_replica_name(long, set(), random.Random(1))
    assert len(name) == 63
    assert name.startswith("a" * 57 + "-")
    assert validate_dns_label(name) is None
    assert validate_dns_label(new_replica_name("b" * 57, set(), random.Random(2))) is None


def test_new_replica_name_avoids_existing_names():
    taken = new_replica_name("web", set(), random.Random(5))
    other = new_replica_name("web", {taken}, random.Random(5))
    assert other != taken
    assert SUFFIX.search(other)


def test_new_replica_name_gives_up_when_everything_is_taken():
    class Stuck(random.Random):
        def choice(self, seq):  # type: ignore[override]
            return seq[0]

    with pytest.raises(RuntimeError):
        new_replica_name("web", {"web-bbbbb"}, Stuck())


def test_new_replica_names_are_distinct():
    existing = {"web-bbbbb"}
    names = new_replica_names("web", 50, existing, random.Random(3))
    assert len(set(names)) == 50
    assert not set(names) & existing
    assert existing == {"web-bbbbb"}


# --- replaceFailed -------------------------------------------------------------


def test_failed_replicas_stay_unless_the_workload_asks_for_replacement():
    failed = replace(rep("r0", phase=Phase.FAILED), finished_ms=NOW - 60_000)
    replicas = [failed, *running(2, prefix="s")]
    assert decide(workload(3), replicas, NOW).noop
    asked = replace(workload(3), replace_failed=True)
    d = decide(asked, replicas, NOW)
    assert d.delete == ["r0"] and d.create == 1
    assert "replacing 1 failed" in d.reason


def test_a_failed_replica_is_replaced_only_after_the_delay():
    w = replace(workload(1), replace_failed=True)
    just_failed = replace(rep("r0", phase=Phase.FAILED), finished_ms=NOW - 1_000)
    assert decide(w, [just_failed], NOW).noop
    assert decide(w, [just_failed], NOW + 4_000).delete == ["r0"]


def test_succeeded_replicas_are_never_replaced():
    w = replace(workload(1), replace_failed=True)
    done = replace(rep("r0", phase=Phase.SUCCEEDED), finished_ms=0)
    assert decide(w, [done], NOW).noop
