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
                      probe=lambda _c: next(results), pool=Inline())
    return h, manager, woken


def test_the_first_check_waits_one_period_then_runs_every_period():
    c = container(period=2)
    calls = []
    h = HealthChecker(FakeManager([c]), 1.0, on_change=lambda: None,
                      probe=lambda _c: calls.append(1) or "", pool=Inline())
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
                      probe=lambda _c: calls.append(1) or "", pool=Inline())
    h.tick(10_000)
    assert calls == []
