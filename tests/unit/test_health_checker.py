"""The health checker's decisions, with a fake probe and a fake container manager."""

from __future__ import annotations

from concurrent import futures

from mctl.agent.containers import Container
from mctl.agent.health import HealthChecker
from mctl.agent.runtime.state import Exit
from mctl.v1 import types_pb2


class Inline(futures.Executor):
    """Runs submitted work at once, so a test sees its effect right after tick()."""

    def submit(self, fn, *args, **kwargs):
        f = futures.Future()
        f.set_result(fn(*args, **kwargs))
        return f


class FakeManager:
    def __init__(self, containers):
        self.containers = containers
        self.stopped = []

    def snapshot(self):
        return list(self.containers)

    def stop(self, c, grace):
        self.stopped.append(c.id)
        c.exit = Exit(137, signal=9)


def container(period=1, threshold=3, started=1000) -> Container:
    r = types_pb2.Replica()
    r.metadata.name = "web-abcde"
    r.spec.health_check.exec.append("true")
    r.spec.health_check.period_seconds = period
    r.spec.health_check.failure_threshold = threshold
    return Container(id="default_web-abcde", bundle="/nonexistent", replica=r, cgroup="x",
                     monitor_pid=10, init_pid=11, started_ms=started)


def checker(c, answers):
    manager = FakeManager([c])
    woken = []
    results = iter(answers)
    h = HealthChecker(manager, 1.0, on_change=lambda: woken.append(1),
                      probe=lambda _c, _check: next(results), pool=Inline())
    return h, manager, woken


def test_the_first_check_waits_one_period_then_runs_every_period():
    c = container(period=2)
    calls = []
    h = HealthChecker(FakeManager([c]), 1.0, on_change=lambda: None,
                      probe=lambda _c, _check: calls.append(1) or "", pool=Inline())
    h.tick(2999)
    assert calls == []
    h.tick(3000)
    h.tick(4000)
    assert calls == [1]
    h.tick(5000)
    assert calls == [1, 1]


def test_threshold_failures_in_a_row_stop_the_container_with_the_reason():
    c = container(threshold=3)
    h, manager, woken = checker(c, ["down", "down", "down"])
    for t in (2000, 3000):
        h.tick(t)
    assert manager.stopped == []
    h.tick(4000)
    assert manager.stopped == [c.id] and woken
    assert c.exit is not None and c.exit.unhealthy == "health check failed 3 times: down"
    assert (c.exit.exit_code, c.exit.signal) == (137, 9)
    assert not c.unhealthy and not c.busy


def test_a_success_resets_the_count():
    c = container(threshold=2)
    h, manager, _ = checker(c, ["down", "", "down", ""])
    for t in (2000, 3000, 4000, 5000):
        h.tick(t)
    assert manager.stopped == []


def test_a_restarted_container_starts_counting_afresh():
    c = container(threshold=2)
    h, manager, _ = checker(c, ["down", "down"])
    h.tick(2000)
    c.started_ms = 2500          # restarted meanwhile
    h.tick(3000)                 # not due: one period after the new start
    h.tick(3500)
    assert manager.stopped == []


def test_containers_without_a_check_or_not_running_are_left_alone():
    c = container()
    c.replica.spec.ClearField("health_check")
    busy = container()
    busy.id = "default_other"
    busy.busy = True
    calls = []
    h = HealthChecker(FakeManager([c, busy]), 1.0, on_change=lambda: None,
                      probe=lambda _c, _check: calls.append(1) or "", pool=Inline())
    h.tick(10_000)
    assert calls == []


# -- readiness -------------------------------------------------------------------------


def ready_container(period=1, threshold=2, started=1000) -> Container:
    c = container(period, threshold, started)
    c.replica.spec.ClearField("health_check")
    c.replica.spec.readiness.tcp_port = 8080
    c.replica.spec.readiness.period_seconds = period
    c.replica.spec.readiness.failure_threshold = threshold
    return c


def test_without_a_readiness_check_a_container_is_ready():
    c = container()
    h, _, _ = checker(c, [])
    assert h.ready(c)


def test_readiness_is_checked_at_once_and_ready_only_after_a_pass():
    c = ready_container(period=2)
    checks = []
    h = HealthChecker(FakeManager([c]), 1.0, on_change=lambda: None,
                      probe=lambda _c, check: checks.append(check.tcp_port) or "",
                      pool=Inline())
    assert not h.ready(c)                # not asked yet
    h.tick(1000)                         # the start itself: no period to wait
    assert checks == [8080] and h.ready(c)
    h.tick(2999)
    assert checks == [8080]
    h.tick(3000)
    assert checks == [8080, 8080]


def test_threshold_readiness_failures_take_it_out_and_one_pass_brings_it_back():
    c = ready_container(threshold=2)
    h, manager, woken = checker(c, ["", "refused", "refused", "refused", ""])
    h.tick(1000)
    assert h.ready(c) and len(woken) == 1            # ready: the loop reports it
    h.tick(2000)
    assert h.ready(c)                                # one failure of two
    h.tick(3000)
    assert not h.ready(c) and len(woken) == 2
    h.tick(4000)
    assert not h.ready(c) and len(woken) == 2        # no change, no wake
    h.tick(5000)
    assert h.ready(c) and len(woken) == 3
    assert manager.stopped == []                     # readiness never restarts it


def test_readiness_starts_over_when_the_container_restarts():
    c = ready_container()
    h, _, _ = checker(c, ["", "refused"])
    h.tick(1000)
    assert h.ready(c)
    c.started_ms = 1500
    assert not h.ready(c)                            # a new start is not ready yet


def test_liveness_and_readiness_run_side_by_side():
    c = ready_container(threshold=1)
    c.replica.spec.health_check.tcp_port = 9090
    c.replica.spec.health_check.period_seconds = 1
    c.replica.spec.health_check.failure_threshold = 5
    asked = []
    h = HealthChecker(FakeManager([c]), 1.0, on_change=lambda: None,
                      probe=lambda _c, check: asked.append(check.tcp_port) or (
                          "refused" if check.tcp_port == 8080 else ""),
                      pool=Inline())
    h.tick(1000)
    h.tick(2000)
    assert sorted(asked) == [8080, 8080, 9090]
    assert not h.ready(c)
