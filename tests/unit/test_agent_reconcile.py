"""The agent's reconcile plan: (desired, observed, now) -> actions, a pure function."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.agent.reconcile import (
    BACKOFF_BASE_MS,
    BACKOFF_MAX_MS,
    RESET_AFTER_MS,
    Action,
    Do,
    Have,
    Want,
    backoff_ms,
    plan,
    restart_due_ms,
    should_restart,
)

NOW = 1_000_000_000


def want(uid="u1", spec_hash="h1", policy="Always"):
    return Want(uid=uid, spec_hash=spec_hash, restart_policy=policy)


def running(uid="u1", spec_hash="h1", busy=False, restarts=0):
    return Have(uid=uid, spec_hash=spec_hash, busy=busy, exited=False, exit_code=0,
                finished_ms=0, started_ms=NOW - 5_000, restarts=restarts)


def exited(code=1, finished=NOW - 100_000, ran_ms=1_000, restarts=0, uid="u1",
           spec_hash="h1", busy=False):
    return Have(uid=uid, spec_hash=spec_hash, busy=busy, exited=True, exit_code=code,
                finished_ms=finished, started_ms=finished - ran_ms, restarts=restarts)


# -- create / remove / replace --------------------------------------------------


def test_nothing_to_do_when_matching():
    assert plan({"a": want()}, {"a": running()}, NOW) == []


def test_empty():
    assert plan({}, {}, NOW) == []


def test_creates_missing():
    assert plan({"a": want()}, {}, NOW) == [Action(Do.CREATE, "a")]


def test_removes_unwanted():
    assert plan({}, {"a": running()}, NOW) == [Action(Do.REMOVE, "a")]


def test_removes_unwanted_even_if_exited():
    assert plan({}, {"a": exited()}, NOW) == [Action(Do.REMOVE, "a")]


def test_replace_on_uid_change():
    assert plan({"a": want(uid="u2")}, {"a": running(uid="u1")}, NOW) == [
        Action(Do.REPLACE, "a")]


def test_replace_on_spec_hash_change():
    assert plan({"a": want(spec_hash="h2")}, {"a": running(spec_hash="h1")}, NOW) == [
        Action(Do.REPLACE, "a")]


def test_replace_wins_over_restart():
    # An exited container of an old spec is replaced, not restarted.
    assert plan({"a": want(spec_hash="h2")}, {"a": exited(spec_hash="h1")}, NOW) == [
        Action(Do.REPLACE, "a")]


@pytest.mark.parametrize("desired", [{}, {"a": want(uid="other")}, {"a": want()}])
def test_busy_containers_are_left_alone(desired):
    have = exited(busy=True)
    assert plan(desired, {"a": have}, NOW) == []
    assert plan(desired, {"a": replace(running(), busy=True)}, NOW) == []


def test_busy_container_is_not_created_again():
    # Observed (though busy) means it exists: no second CREATE under the same id.
    assert plan({"a": want()}, {"a": running(busy=True)}, NOW) == []


# -- restart policy ----------------------------------------------------------------


@pytest.mark.parametrize(("policy", "code", "restart"), [
    ("Always", 0, True),
    ("Always", 1, True),
    ("Always", 137, True),
    ("OnFailure", 0, False),
    ("OnFailure", 1, True),
    ("OnFailure", 137, True),
    ("Never", 0, False),
    ("Never", 1, False),
    ("", 0, True),  # unset means Always, as in Kubernetes
])
def test_restart_policy(policy, code, restart):
    assert should_restart(policy, code) is restart
    actions = plan({"a": want(policy=policy)}, {"a": exited(code=code)}, NOW)
    assert actions == ([Action(Do.RESTART, "a")] if restart else [])


def test_running_container_is_never_restarted():
    assert plan({"a": want(policy="Always")}, {"a": running(restarts=9)}, NOW) == []


# -- back-off ----------------------------------------------------------------------


def test_backoff_doubles_then_caps():
    assert [backoff_ms(n) for n in range(8)] == [
        1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    assert backoff_ms(0) == BACKOFF_BASE_MS
    assert backoff_ms(10_000) == BACKOFF_MAX_MS


@pytest.mark.parametrize("restarts", [0, 1, 2, 5, 6, 40])
def test_restart_waits_for_backoff(restarts):
    finished = NOW - 10_000_000
    have = exited(finished=finished, restarts=restarts)
    due = finished + min(1_000 * 2 ** restarts, 60_000)
    assert restart_due_ms(have) == due
    assert plan({"a": want()}, {"a": have}, due - 1) == []
    assert plan({"a": want()}, {"a": have}, due) == [Action(Do.RESTART, "a")]


def test_backoff_resets_after_a_long_run():
    finished = NOW - 10_000_000
    long_run = exited(finished=finished, ran_ms=RESET_AFTER_MS, restarts=7)
    assert restart_due_ms(long_run) == finished + BACKOFF_BASE_MS
    short_run = exited(finished=finished, ran_ms=RESET_AFTER_MS - 1, restarts=7)
    assert restart_due_ms(short_run) == finished + BACKOFF_MAX_MS
    assert plan({"a": want()}, {"a": long_run}, finished + BACKOFF_BASE_MS) == [
        Action(Do.RESTART, "a")]
    assert plan({"a": want()}, {"a": short_run}, finished + BACKOFF_BASE_MS) == []


# -- determinism -----------------------------------------------------------------------


def test_actions_sorted_and_deterministic():
    desired = {"c": want(), "a": want(), "e": want(uid="new"), "d": want()}
    observed = {"z": running(), "e": running(uid="old"), "b": running(), "d": exited()}
    first = plan(desired, observed, NOW)
    assert first == [
        Action(Do.REMOVE, "b"),
        Action(Do.RESTART, "d"),
        Action(Do.REPLACE, "e"),
        Action(Do.REMOVE, "z"),
        Action(Do.CREATE, "a"),
        Action(Do.CREATE, "c"),
    ]
    # Same input, any insertion order: same output.
    again = plan(dict(reversed(list(desired.items()))),
                 dict(reversed(list(observed.items()))), NOW)
    assert again == first


def test_plan_does_not_mutate_inputs():
    desired = {"a": want()}
    observed = {"b": running()}
    plan(desired, observed, NOW)
    assert desired == {"a": want()} and observed == {"b": running()}


# -- properties ---------------------------------------------------------------------------

ids = st.text(alphabet="abcde_-", min_size=1, max_size=3)
wants = st.builds(Want, uid=st.sampled_from(["u1", "u2"]), spec_hash=st.sampled_from(["h1", "h2"]),
                  restart_policy=st.sampled_from(["Always", "OnFailure", "Never", ""]))
times = st.integers(min_value=0, max_value=2 * RESET_AFTER_MS)
haves = st.builds(Have, uid=st.sampled_from(["u1", "u2"]), spec_hash=st.sampled_from(["h1", "h2"]),
                  busy=st.booleans(), exited=st.booleans(), exit_code=st.sampled_from([0, 1, 137]),
                  finished_ms=times, started_ms=times, restarts=st.integers(0, 30))


@settings(max_examples=examples(300), deadline=None)
@given(desired=st.dictionaries(ids, wants, max_size=6),
       observed=st.dictionaries(ids, haves, max_size=6),
       now=st.integers(min_value=0, max_value=3 * RESET_AFTER_MS))
def test_plan_properties(desired, observed, now):
    actions = plan(desired, observed, now)
    created = {a.id for a in actions if a.do is Do.CREATE}
    removed = {a.id for a in actions if a.do in (Do.REMOVE, Do.REPLACE)}
    # Never both creates and removes the same id.
    assert not created & removed
    # Every desired id absent from observed is created; nothing else is.
    assert created == set(desired) - set(observed)
    # At most one action per id, and only for known ids.
    assert len({a.id for a in actions}) == len(actions)
    assert {a.id for a in actions} <= set(desired) | set(observed)
    # Busy containers are never touched; REMOVE only for undesired ones.
    for a in actions:
        if a.id in observed:
            assert not observed[a.id].busy
        if a.do is Do.REMOVE:
            assert a.id not in desired
        if a.do is Do.RESTART:
            assert observed[a.id].exited
            assert now >= restart_due_ms(observed[a.id])
    # Level-triggered: the same input gives the same answer.
    assert plan(desired, observed, now) == actions
