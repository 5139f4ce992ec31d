"""The node loop starts independent replicas concurrently, each exactly once, within its bound.

A fake manager stands in for the kernel (ContainerManager's create and
start are the seam): each start takes a while, so replicas in flight stay
in flight across many passes of the loop, which is woken far more often
than it would be in an agent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from mctl.agent import node as node_module
from mctl.agent.containers import Container, ContainerError, container_id
from mctl.agent.images.userslock import UsersLock
from mctl.agent.main import MAX_PARALLEL_STARTS, build_parser
from mctl.agent.node import NodeLoop, default_parallel_starts
from mctl.agent.volumes import Sources
from mctl.v1 import types_pb2

START_SECONDS = 0.05


class SlowManager:
    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.network = None
        self.gate = threading.Event()        # starts wait for it (set: they do not)
        self.gate.set()
        self.sources = Sources.of([], [])
        self.images = SimpleNamespace(users_lock=UsersLock(), touch=lambda ref: None,
                                      pinned_digests=lambda limit: [])
        self.volumes = SimpleNamespace(latest_usage=dict)
        self.containers: dict[str, Container] = {}
        self.fail = fail
        self.created: Counter[str] = Counter()
        self.started: Counter[str] = Counter()
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def network_ready(self) -> bool:
        return True

    def snapshot(self) -> list[Container]:
        with self._lock:
            return list(self.containers.values())

    def refresh(self, c: Container) -> None:
        pass

    def create(self, replica: types_pb2.Replica) -> Container:
        cid = container_id(replica.metadata.namespace, replica.metadata.name)
        with self._lock:
            self.created[cid] += 1
        if cid in self.fail:
            raise ContainerError("no room")
        c = Container(id=cid, bundle=f"/nonexistent/{cid}", replica=replica, cgroup=cid)
        with self._lock:
            self.containers[cid] = c
        return c

    def start(self, c: Container) -> None:
        with self._lock:
            self.started[c.id] += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.gate.wait(10)
        time.sleep(START_SECONDS)
        with self._lock:
            self.active -= 1
        c.monitor_pid = 1000 + len(self.started)
        c.started_ms = int(time.time() * 1000)


def replica(name: str) -> types_pb2.Replica:
    r = types_pb2.Replica(spec_hash="h1")
    r.metadata.namespace, r.metadata.name, r.metadata.uid = "default", name, f"uid-{name}"
    r.spec.image = "busybox"
    r.spec.restart_policy = "Always"
    return r


def loop_of(manager: SlowManager, bound: int) -> tuple[NodeLoop, list[types_pb2.StatusReport]]:
    reports: list[types_pb2.StatusReport] = []
    loop = NodeLoop(manager, SimpleNamespace(latest=lambda cid: None),  # type: ignore[arg-type]
                    reports.append, "n1", 1.0, max_parallel_starts=bound)
    # The kernel checks and the service table are not what this is about.
    loop.selfcheck.run = lambda containers, starting=False: []  # type: ignore[method-assign]
    loop.services.sync = lambda: None  # type: ignore[method-assign]
    return loop, reports


def run_until(loop: NodeLoop, done, timeout: float = 10.0) -> None:
    """Passes of the loop back to back (as wake-ups after each start would cause)."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        loop.reconcile_once()
        time.sleep(0.002)
    loop.reconcile_once()


def test_replicas_start_at_once_each_exactly_once_within_the_bound():
    manager = SlowManager()
    loop, reports = loop_of(manager, bound=3)
    names = [f"r{i}" for i in range(12)]
    loop.set_desired(1, [replica(n) for n in names])
    try:
        run_until(loop, lambda: len(manager.started) == 12 and not loop.in_flight())
    finally:
        loop.close()
    ids = {f"default_{n}" for n in names}
    assert manager.created == Counter({cid: 1 for cid in ids})
    assert manager.started == Counter({cid: 1 for cid in ids})
    assert manager.peak == 3            # concurrent, and never beyond the bound
    phases = {r.name: r.status.phase for r in reports[-1].replicas}
    assert phases == {n: types_pb2.REPLICA_PHASE_RUNNING for n in names}


def test_a_bound_of_one_starts_one_at_a_time():
    manager = SlowManager()
    loop, _ = loop_of(manager, bound=1)
    loop.set_desired(1, [replica(f"r{i}") for i in range(4)])
    try:
        run_until(loop, lambda: len(manager.started) == 4 and not loop.in_flight())
    finally:
        loop.close()
    assert manager.peak == 1 and sum(manager.started.values()) == 4


def test_a_failed_create_is_reported_and_retried_later_not_at_once():
    manager = SlowManager(fail=frozenset({"default_bad"}))
    loop, reports = loop_of(manager, bound=2)
    loop.set_desired(1, [replica("bad"), replica("good")])
    try:
        run_until(loop, lambda: "default_good" in manager.started and not loop.in_flight())
        for _ in range(20):          # many passes within the 5 s back-off
            loop.reconcile_once()
    finally:
        loop.close()
    assert manager.created["default_bad"] == 1
    status = {r.name: r.status for r in reports[-1].replicas}
    assert status["bad"].reason == types_pb2.REPLICA_REASON_CREATE_ERROR
    assert status["bad"].message == "no room"
    assert status["good"].phase == types_pb2.REPLICA_PHASE_RUNNING


def test_a_replica_removed_while_it_waited_for_a_slot_is_not_made():
    manager = SlowManager()
    manager.gate.clear()
    loop, _ = loop_of(manager, bound=1)
    loop.set_desired(1, [replica("first"), replica("second")])
    try:
        loop.reconcile_once()              # both handed to the pool; "second" waits
        loop.set_desired(2, [replica("first")])
        manager.gate.set()
        run_until(loop, lambda: not loop.in_flight())
    finally:
        loop.close()
    assert "default_second" not in manager.created


def test_a_replica_in_flight_is_reported_starting():
    # Absent from the report, a replica being deleted would count as
    # removed while its container may still be made.
    manager = SlowManager()
    manager.gate.clear()
    loop, reports = loop_of(manager, bound=1)
    loop.set_desired(1, [replica("first"), replica("second")])
    try:
        loop.reconcile_once()        # "first" is held at its start, "second" is queued
        status = {r.name: (r.uid, r.status.phase) for r in reports[-1].replicas}
        assert status == {"first": ("uid-first", types_pb2.REPLICA_PHASE_STARTING),
                          "second": ("uid-second", types_pb2.REPLICA_PHASE_STARTING)}
        manager.gate.set()
        run_until(loop, lambda: len(manager.started) == 2 and not loop.in_flight())
    finally:
        manager.gate.set()
        loop.close()
    assert {r.status.phase for r in reports[-1].replicas} == {types_pb2.REPLICA_PHASE_RUNNING}


def test_the_bound_is_a_flag_with_one_line_for_a_bad_value(capsys):
    assert build_parser().parse_args(["--max-parallel-starts", "3"]).max_parallel_starts == 3
    assert build_parser().parse_args([]).max_parallel_starts == 0     # 0: from the CPUs
    for bad in ("0", "-1", "x", str(MAX_PARALLEL_STARTS + 1)):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--max-parallel-starts", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.endswith(f"argument --max-parallel-starts: must be a whole number from 1 to "
                            f"{MAX_PARALLEL_STARTS}, got {bad!r}")


@pytest.mark.parametrize(("cpus", "bound"), [(1, 2), (2, 4), (3, 6), (40, 64)])
def test_the_default_bound_is_twice_the_cpus_at_least_2_at_most_the_cap(monkeypatch, cpus,
                                                                        bound):
    monkeypatch.setattr(node_module.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert MAX_PARALLEL_STARTS == 64
    assert default_parallel_starts() == bound
