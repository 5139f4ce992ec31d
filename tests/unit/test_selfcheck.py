"""The agent's self-check (selfcheck.py, drift.py, kernelwatch.py's filter, nft.split_tables).

The kernel side (repair() against real routes, bridges, veths and nft
tables) is in tests/kernel/test_network_kernel.py; here a stand-in
network says what it found, and the tests check when each kind of check
runs, that a failure retried every pass is logged once, that a running
container's lost cgroup or mount is reported once and never "repaired",
and what `mctl debug node NODE drift` prints.
"""

from __future__ import annotations

import logging
import types
from typing import cast

import pytest

from mctl.agent import kernelwatch, nft, selfcheck
from mctl.agent.containers import Container, ContainerManager
from mctl.agent.drift import FAILED, REPORTED, DriftLog, Repair
from mctl.common.rtnetlink import (
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    Change,
    Link,
    Route,
)


class FakeNetwork:
    """What repair() and repair_nft() would find, one scripted answer per call."""

    def __init__(self) -> None:
        self.ready = True
        self.disabled = False
        self.node_netns = None
        self.link_answers: list[list[Repair]] = []
        self.nft_answers: list[list[Repair]] = []
        self.calls: list[str] = []
        self.attachments: list[dict[str, object]] = []

    def repair(self, attachments: dict[str, object]) -> list[Repair]:
        self.calls.append("links")
        self.attachments.append(dict(attachments))
        return self.link_answers.pop(0) if self.link_answers else []

    def repair_nft(self) -> list[Repair]:
        self.calls.append("nft")
        return self.nft_answers.pop(0) if self.nft_answers else []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(children: list[str] | None = None) -> tuple[selfcheck.SelfCheck, FakeNetwork, Clock,
                                                     types.SimpleNamespace]:
    net = FakeNetwork()
    cgroups = types.SimpleNamespace(list_children=lambda parent: list(children or []))
    manager = types.SimpleNamespace(network=net, cgroups=cgroups, cgroup_parent="mctl/n1",
                                    refresh=lambda c: None)
    clock = Clock()
    return (selfcheck.SelfCheck(cast(ContainerManager, manager), lambda: None, clock), net,
            clock, manager)


def container(cid: str, running: bool = True, network: object = None) -> Container:
    return cast(Container, types.SimpleNamespace(
        id=cid, busy=False, network=network, cgroup=f"mctl/n1/{cid}",
        bundle=f"/state/containers/{cid}", running=lambda: running))


ROUTE_DOWN = Repair("route 10.244.2.0/24 via 10.0.0.3", "missing",
                    "route 10.244.2.0/24 via 10.0.0.3: Network is unreachable", FAILED)
ROUTE_BACK = Repair("route 10.244.2.0/24 via 10.0.0.3", "missing", "re-added")


def test_each_check_runs_when_due_or_when_notified():
    check, net, clock, _ = make()
    check.run([])
    assert net.calls == ["links", "nft"]                  # the first pass checks everything
    check.run([])
    assert net.calls == ["links", "nft"]                  # nothing is due yet
    clock.now += selfcheck.NETWORK_SECONDS
    check.run([])
    assert net.calls == ["links", "nft", "links"]         # the resync
    clock.now += selfcheck.MIN_GAP_SECONDS
    check.notified("links", "link eth0 up")
    check.run([])                                         # at once, not a second later
    assert net.calls[-1] == "links" and net.calls.count("links") == 3
    check.notified("nft", "nftables changed")
    check.run([])
    assert net.calls[-1] == "nft"
    # A burst of notifications right after a check waits a little, not lost.
    check.notified("links", "link mctl1234 up")
    check.run([])
    assert net.calls.count("links") == 3
    clock.now += selfcheck.MIN_GAP_SECONDS
    check.run([])
    assert net.calls.count("links") == 4
    assert check.record.triggers == {"network resync": 2, "network notified": 2,
                                     "nft resync": 1, "nft notified": 1,
                                     "containers resync": 1}


def test_network_checks_wait_for_the_node_network():
    check, net, _, _ = make()
    net.ready = False
    check.run([])
    assert net.calls == []
    net.ready, net.disabled = True, True
    check.notified("links", "link eth0 up")
    check.run([])
    assert net.calls == []


def test_only_containers_with_an_attachment_are_checked():
    check, net, _, _ = make()
    attached = object()
    check.run([container("default_a", network=attached), container("default_b")])
    assert net.attachments == [{"default_a": attached}]


def test_a_failure_retried_every_pass_is_logged_once(caplog):
    check, net, clock, _ = make()
    net.link_answers = [[ROUTE_DOWN], [ROUTE_DOWN], [ROUTE_BACK], [ROUTE_DOWN]]
    with caplog.at_level(logging.INFO, logger="mctl.agent.selfcheck"):
        for _ in range(4):
            check.run([])
            clock.now += selfcheck.NETWORK_SECONDS
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "drift found (resync): route 10.244.2.0/24 via 10.0.0.3: missing; NOT REPAIRED: "
        "route 10.244.2.0/24 via 10.0.0.3: Network is unreachable",
        "drift found (resync): route 10.244.2.0/24 via 10.0.0.3: missing; re-added",
        # A new streak of failures is news again.
        "drift found (resync): route 10.244.2.0/24 via 10.0.0.3: missing; NOT REPAIRED: "
        "route 10.244.2.0/24 via 10.0.0.3: Network is unreachable",
    ]
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING", "ERROR"]
    assert check.record.found == 3
    assert check.record.outcomes == {"failed": 2, "repaired": 1}


def test_a_failure_that_goes_away_by_itself_is_said_once(caplog):
    check, net, clock, _ = make()
    net.link_answers = [[ROUTE_DOWN], [], [ROUTE_DOWN]]
    with caplog.at_level(logging.INFO, logger="mctl.agent.selfcheck"):
        for _ in range(3):
            check.run([])
            clock.now += selfcheck.NETWORK_SECONDS
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1] == "drift gone: route 10.244.2.0/24 via 10.0.0.3"
    assert len(messages) == 3 and messages[2].startswith("drift found")


def test_a_check_that_raises_is_reported_and_the_next_runs(caplog):
    check, net, clock, _ = make()

    def broken(attachments: object) -> list[Repair]:
        raise OSError(105, "No buffer space available")

    net.repair = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="mctl.agent.selfcheck"):
        assert [r.what for r in check.run([])] == ["network check"]
    assert "nft" in net.calls                             # the other checks still ran
    assert check.record.outcomes == {"failed": 1}


def test_lost_cgroup_or_mount_of_a_running_container_is_reported_once(monkeypatch):
    check, _, clock, _ = make(children=["default_a"])
    mounted = {"/state/containers/default_a/rootfs"}
    monkeypatch.setattr(selfcheck, "mount_points", lambda: set(mounted))
    a, b = container("default_a"), container("default_b")
    gone = container("default_c", running=False)
    assert check.run([a, gone]) == []
    clock.now += selfcheck.CONTAINER_SECONDS
    found = check.run([a, b, gone])
    assert [(r.what, r.found, r.outcome) for r in found] == [
        ("container default_b", "cgroup mctl/n1/default_b missing", REPORTED),
        ("container default_b", "rootfs mount /state/containers/default_b/rootfs missing",
         REPORTED)]
    assert "not restarted" in found[0].done
    clock.now += selfcheck.CONTAINER_SECONDS
    assert check.run([a, b]) == []                        # still missing: said already
    clock.now += selfcheck.CONTAINER_SECONDS
    mounted.add("/state/containers/default_b/rootfs")
    assert check.run([a, b]) == []                        # the mount came back
    clock.now += selfcheck.CONTAINER_SECONDS
    mounted.discard("/state/containers/default_b/rootfs")
    assert [r.found for r in check.run([a, b])] == [       # and went again: news again
        "rootfs mount /state/containers/default_b/rootfs missing"]
    assert check.record.outcomes == {"reported": 3}


def test_a_container_that_exited_meanwhile_is_not_reported(monkeypatch):
    check, _, _, manager = make(children=[])
    monkeypatch.setattr(selfcheck, "mount_points", lambda: set())
    state = {"running": True}
    c = cast(Container, types.SimpleNamespace(
        id="default_a", busy=False, network=None, cgroup="mctl/n1/default_a",
        bundle="/state/containers/default_a", running=lambda: state["running"]))
    manager.refresh = lambda _: state.update(running=False)
    assert check.run([c]) == []


def test_mount_points_undo_octal_escapes(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n"
                    "37 35 98:0 / /run/x rw - tmpfs tmpfs rw\n")
    assert selfcheck.mount_points(str(info)) == {"/mnt/a b", "/run/x"}


def test_drift_log_lines():
    record = DriftLog()
    assert record.lines()[0].startswith("checks: 0 (none yet); last never, took 0.0 ms; "
                                        "cpu 0 ms in all (0.000% of a core)")
    assert record.lines()[1] == ("drift found: 0, repaired: 0, failed: 0, reported: 0; "
                                 "last found never")
    record.checked("network notified", 0.0021, [ROUTE_DOWN, ROUTE_BACK], cpu_s=0.0015)
    lines = record.lines()
    assert lines[0].startswith("checks: 1 (network notified 1); last ")
    assert "took 2.1 ms; cpu 2 ms in all" in lines[0]
    assert lines[1].startswith("drift found: 2, repaired: 1, failed: 1, reported: 0; last found ")
    assert lines[3].endswith("route 10.244.2.0/24 via 10.0.0.3: missing; NOT REPAIRED: "
                             "route 10.244.2.0/24 via 10.0.0.3: Network is unreachable")
    assert lines[4].endswith("route 10.244.2.0/24 via 10.0.0.3: missing; re-added")
    assert len(record.lines(limit=1)) == 4


def link(name: str, up: bool) -> Link:
    return Link(ifindex=2, name=name, flags=1 if up else 0, mtu=1500, master=0, kind="")


def route(dst: str) -> Route:
    return Route(family=2, dst=dst, dst_len=24, gateway="10.0.0.3", oif=2, table=254,
                 protocol=109, scope=0, type=1)


@pytest.mark.parametrize(("changes", "said"), [
    ([Change(RTM_NEWLINK, link=link("eth0", False))], [("links", "link eth0 down")]),
    ([Change(RTM_NEWADDR), Change(RTM_NEWLINK, link=link("eth0", True))],
     [("links", "link eth0 up")]),
    ([Change(RTM_DELROUTE, route=route("10.244.2.0"))],
     [("links", "route 10.244.2.0/24 deleted")]),
    # What repairs and container starts make themselves is no hint.
    ([Change(RTM_NEWROUTE, route=route("10.244.2.0")), Change(RTM_NEWADDR)], []),
    (None, [("links", "notifications lost (overrun)")]),
])
def test_kernel_watch_turns_notifications_into_hints(changes, said):
    heard: list[tuple[str, str]] = []
    watch = kernelwatch.KernelWatch(lambda kind, why: heard.append((kind, why)))
    try:
        watch._links(cast(kernelwatch.RtMonitor, types.SimpleNamespace(
            changes=lambda kinds: None if changes is None else
            (c for c in changes if c.kind in kinds))))
    finally:
        watch.close()
    assert heard == said


def test_split_tables_of_a_ruleset_listing():
    listing = ("table ip mctl0 {\n\tmap hostports {\n\t}\n}\n"
               "table inet mctl0_guard {\n\tchain input {\n\t}\n}\n"
               "table ip6 other {\n}\n")
    tables = nft.split_tables(listing)
    assert sorted(tables) == ["inet mctl0_guard", "ip mctl0", "ip6 other"]
    assert tables["ip mctl0"] == "table ip mctl0 {\n\tmap hostports {\n\t}\n}"
    assert nft.split_tables("") == {}


def test_while_containers_start_a_link_hint_waits_for_the_pass_after_them():
    check, net, clock, _ = make()
    check.run([])
    assert net.calls.count("links") == 1
    clock.now += selfcheck.MIN_GAP_SECONDS
    check.notified("links", "link veth1234 up")       # most likely one of the starts' veths
    check.run([], starting=True)
    assert net.calls.count("links") == 1              # kept, not acted on
    clock.now += selfcheck.NETWORK_SECONDS
    check.run([], starting=True)
    assert net.calls.count("links") == 2              # the periodic check still runs
    clock.now += selfcheck.MIN_GAP_SECONDS
    check.run([])                                     # the first pass after the starts
    assert net.calls.count("links") == 3
    assert check.record.triggers["network notified"] == 1
