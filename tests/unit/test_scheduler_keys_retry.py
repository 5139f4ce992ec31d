"""The etcd key codec (scheduler/keys.py) and the compare-and-swap retry (retry.py)."""

from __future__ import annotations

import pytest

from mctl.scheduler.keys import KeyCodec, Kind, ParsedKey
from mctl.scheduler.retry import TooManyConflicts, retry_conflicts
from mctl.scheduler.store import Conflict, NotLeader


def test_every_key_parses_back_to_what_made_it():
    keys = KeyCodec("/mctl")                    # the trailing slash is added
    assert keys.prefix == "/mctl/"
    cases = [
        (keys.workload("default", "web"), ParsedKey(Kind.WORKLOAD, "default", "web")),
        (keys.replica("prod", "web-abcde"), ParsedKey(Kind.REPLICA, "prod", "web-abcde")),
        (keys.node("n1"), ParsedKey(Kind.NODE, "", "n1")),
        (keys.heartbeat("n1"), ParsedKey(Kind.HEARTBEAT, "", "n1")),
        (keys.leader, ParsedKey(Kind.LEADER, "", "")),
        (keys.subnet("10.244.3.0/24"), ParsedKey(Kind.SUBNET, "", "10.244.3.0/24")),
    ]
    for key, parsed in cases:
        assert keys.parse(key) == parsed, key
    assert keys.parse(keys.events_prefix("Node", "", "n1") + "0001-000001").kind is Kind.EVENT


def test_keys_outside_the_layout_are_not_parsed():
    keys = KeyCodec("/mctl/")
    assert keys.parse("/other/nodes/n1") is None
    assert keys.parse("/mctl/unknown/x") is None


def test_events_prefixes_narrow_to_a_kind_then_an_object():
    keys = KeyCodec("/p/")
    assert keys.events_prefix() == "/p/events/"
    assert keys.events_prefix("Node") == "/p/events/Node/"
    assert keys.events_prefix("Replica", "default", "web-x") == "/p/events/Replica/default/web-x/"


def test_retry_reruns_lost_races_and_says_when_it_is_fresh():
    seen = []

    def attempt(n: int) -> str:
        seen.append(n)
        if n < 2:
            raise Conflict("lost")
        return "done"

    assert retry_conflicts(attempt) == "done"
    assert seen == [0, 1, 2]


def test_retry_gives_up_after_its_attempts():
    calls = []

    def always(n: int) -> None:
        calls.append(n)
        raise Conflict("lost again")

    with pytest.raises(TooManyConflicts, match="apply lost 3 races"):
        retry_conflicts(always, attempts=3, what="apply")
    assert calls == [0, 1, 2]


def test_a_lost_leadership_is_not_retried():
    calls = []

    def deposed(n: int) -> None:
        calls.append(n)
        raise NotLeader("gone")

    with pytest.raises(NotLeader):
        retry_conflicts(deposed)
    assert calls == [0]
