"""Node lifecycle (scheduler/nodes.py): the pure decision and what a pass writes for it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.scheduler.keys import KeyCodec
from mctl.scheduler.nodes import Transition, plan_lifecycle, registered_record, transition
from mctl.scheduler.store import Snapshot
from mctl.v1 import types_pb2

GRACE = 10_000
KEYS = KeyCodec("/t/")


def test_the_transitions():
    assert transition(True, 0, 50_000, GRACE) is Transition.STAYS
    assert transition(False, 0, 50_000, GRACE) is Transition.NOT_READY
    assert transition(False, 45_000, 50_000, GRACE) is Transition.STAYS        # within grace
    assert transition(False, 40_000, 50_000, GRACE) is Transition.LOST         # exactly grace
    assert transition(True, 45_000, 50_000, GRACE) is Transition.READY_AGAIN
    assert transition(True, 1, 50_000, GRACE) is Transition.READY_AGAIN        # even when lost


@given(heartbeating=st.booleans(), since=st.integers(0, 10**9), now=st.integers(0, 10**9),
       grace=st.integers(0, 10**6))
@settings(max_examples=examples(200))
def test_a_heartbeating_node_is_never_lost_and_a_lost_one_waited_the_grace(
        heartbeating, since, now, grace):
    step = transition(heartbeating, since, now, grace)
    if heartbeating:
        assert step in (Transition.STAYS, Transition.READY_AGAIN)
        assert (step is Transition.READY_AGAIN) == (since != 0)
    if step is Transition.LOST:
        assert since and now - since >= grace


def snapshot(**nodes: tuple[bool, int]) -> Snapshot:
    snap = Snapshot(revision=9)
    for name, (heartbeating, since) in nodes.items():
        snap.nodes[name] = types_pb2.Node(name=name, not_ready_since_unix_ms=since)
        snap.mod_revisions[KEYS.node(name)] = 4
        if heartbeating:
            snap.heartbeats.add(name)
    return snap


def test_a_pass_stores_the_not_ready_time_and_clears_it_on_return():
    snap = snapshot(fine=(True, 0), silent=(False, 0), back=(True, 1_000),
                    waiting=(False, 45_000), gone=(False, 1_000))
    plan = plan_lifecycle(snap, 50_000, GRACE, KEYS)
    written = {w.key.rsplit("/", 1)[1]: types_pb2.Node.FromString(w.value)
               for w in plan.writes}
    assert set(written) == {"silent", "back"}
    assert written["silent"].not_ready_since_unix_ms == 50_000
    assert written["back"].not_ready_since_unix_ms == 0
    assert all(w.expect == 4 for w in plan.writes)          # compare-and-swap on what was read
    assert plan.lost == {"gone"}
    assert [(e.name, e.reason, e.type) for e in plan.events] == [
        ("back", "NodeReady", "Normal"), ("silent", "NodeNotReady", "Warning")]
    assert "10s" in plan.events[1].message


def test_registration_keeps_the_operators_cordon_and_the_first_registration_time():
    incoming = types_pb2.Node(name="n1", address="a:1", ready=True, cordoned=False)
    first, away = registered_record(incoming, None, 5_000)
    assert (first.registered_unix_ms, away, first.ready) == (5_000, 0, False)

    stored = types_pb2.Node(name="n1", address="old:1", cordoned=True,
                            registered_unix_ms=5_000, not_ready_since_unix_ms=8_000)
    again, away = registered_record(incoming, stored, 20_000)
    assert again.address == "a:1"                     # what the agent says now
    assert again.cordoned and again.registered_unix_ms == 5_000
    assert again.not_ready_since_unix_ms == 0 and away == 12_000
