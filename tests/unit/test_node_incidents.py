"""Node incidents (drift repaired) travel bounded and deduplicated to the scheduler's events."""

from __future__ import annotations

import types

from mctl.agent.drift import (
    DROPPED,
    FAILED,
    INCIDENTS_PER_REPORT,
    PENDING_INCIDENTS,
    REPAIRED,
    Incidents,
    Repair,
)
from mctl.agent.node import NodeLoop
from mctl.scheduler.status import MAX_EVENT_MESSAGE, MAX_REPORT_EVENTS, node_events
from mctl.v1 import node_pb2


def test_repairs_become_incidents_and_repeats_fold_into_one():
    inc = Incidents()
    route = Repair("route 10.244.1.0/24", "missing", "re-added", REPAIRED)
    inc.repaired([route, route, Repair("nft table ip mctl0", "changed", "nft failed", FAILED)])
    got = inc.peek()
    assert [(t, r, m, n) for t, r, m, n, _ in got] == [
        ("Normal", "DriftRepaired", "route 10.244.1.0/24: missing; re-added", 2),
        ("Warning", "DriftNotRepaired", "nft table ip mctl0: changed; NOT REPAIRED: nft failed",
         1)]


def test_only_a_delivered_report_forgets_and_later_repeats_are_kept():
    inc = Incidents()
    inc.add("DriftRepaired", "a")
    sent = inc.peek()
    inc.add("DriftRepaired", "a")             # seen again while the report was on its way
    assert inc.peek()[0][3] == 2              # not delivered: still there, counted
    inc.delivered(sent)
    assert [(r, m, n) for _, r, m, n, _ in inc.peek()] == [("DriftRepaired", "a", 1)]
    inc.delivered(inc.peek())
    assert inc.peek() == []


def test_pending_incidents_are_bounded_and_the_drop_is_said():
    inc = Incidents()
    for i in range(PENDING_INCIDENTS + 7):
        inc.add("DriftRepaired", f"route {i}")
    first = inc.peek()
    assert len(first) == INCIDENTS_PER_REPORT
    assert first[0][1] == DROPPED and "7 node events dropped" in first[0][2]
    assert first[1][2] == "route 7"           # the oldest were dropped
    inc.delivered(first)
    assert inc.peek()[0][1] != DROPPED
    inc.add("DriftRepaired", "x" * 1000)
    assert max(len(m) for _, _, m, _, _ in inc.peek(100)) <= 200


def test_the_scheduler_keeps_a_bounded_number_about_the_reporting_node_only():
    report = node_pb2.StatusReport(node="node1")
    for i in range(MAX_REPORT_EVENTS + 5):
        report.events.add(kind="Replica", namespace="default", name="other", type="Warning",
                          reason="DriftRepaired", message=f"m{i % (MAX_REPORT_EVENTS - 2)}",
                          source="scheduler/forged")
    report.events.add(reason="DriftRepaired", message="y" * 10_000)
    events = node_events(report)
    assert len(events) == MAX_REPORT_EVENTS - 2         # bounded, then repeats kept once
    assert all(e.kind == "Node" and e.name == "node1" and e.namespace == ""
               and e.source == "node/node1" and e.type == "Warning" for e in events)
    long = node_pb2.StatusReport(node="node2")
    long.events.add(type="Bogus", message="y" * 10_000)
    (e,) = node_events(long)
    assert len(e.message) == MAX_EVENT_MESSAGE and e.reason == "NodeIncident"
    assert e.type == "Normal"


def test_the_node_loop_sends_incidents_with_an_unchanged_report_until_delivered():
    sent: list[node_pb2.StatusReport] = []
    failing = [True]

    def report(r: node_pb2.StatusReport) -> None:
        if failing[0]:
            raise ConnectionError("scheduler down")
        sent.append(r)

    loop = NodeLoop(types.SimpleNamespace(), types.SimpleNamespace(),  # type: ignore[arg-type]
                    report, "n1", 1.0)
    # The replicas' part of the report is not what this test is about.
    loop.build_report = lambda: node_pb2.StatusReport(node="n1", complete=True)  # type: ignore
    loop._send_report()
    failing[0] = False
    loop._send_report()
    loop._send_report()                       # unchanged, nothing waiting: not sent again
    assert len(sent) == 1 and not sent[0].events
    loop.selfcheck.incidents.repaired([Repair("route 10.244.1.0/24", "missing", "re-added")])
    loop.selfcheck.incidents.add("DriftRepaired", "route 10.244.1.0/24: missing; re-added")
    failing[0] = True
    loop._send_report()                       # not delivered: kept
    failing[0] = False
    loop._send_report()
    assert len(sent) == 2
    (e,) = sent[1].events
    assert (e.kind, e.name, e.reason, e.source) == ("Node", "n1", "DriftRepaired", "node/n1")
    assert e.message == "route 10.244.1.0/24: missing; re-added (x2)"
    loop._send_report()                       # delivered: forgotten
    assert len(sent) == 2
