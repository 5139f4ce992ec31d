"""An agent SIGKILLed while several starts are in flight: its successor gets every replica Running.

A child process plays the agent: the real node loop, container manager,
node network and native runtime (zygote and all) start REPLICAS replicas
on a pool of 1 or 4, and the test kills it with SIGKILL at a point spread
over its starts (before the first bundle, in the middle of creates, while
monitors set up, after some have reported). A new manager then adopts the
state dir as a restarted agent does, its loop plans the same desired set,
and every replica must come up Running with a live monitor, exactly once.
Everything is then removed, and nothing may be left: no mount, cgroup,
network namespace, veth, address claim, id range, process or bundle.
test_zygote_kernel.py checks the rule this rests on: a start in flight
dies with the zygote, so with the agent, and records nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from boxes import TEST_ID_BASE, Boxes

from mctl.agent.containers import ContainerManager, container_id, pid_alive
from mctl.agent.idranges import IdRanges
from mctl.agent.network import NodeNetwork
from mctl.agent.node import NodeLoop
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.state import read_state
from mctl.common import netns
from mctl.common.procfs import mounts_mentioning
from mctl.v1 import types_pb2 as pb

REPLICAS = 6
SUBNET, CLUSTER = "10.98.1.0/24", "10.98.0.0/16"
# Seconds after the child says it is ready (zygote up, network set) until
# the kill: from before the first create to after the last start.
KILL_AFTER = (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.25, 0.4)

# The doomed agent: argv[1] is the JSON of `setup`. It prints "ready",
# then plans and starts until killed.
CHILD = """
import json, sys, time
from types import SimpleNamespace
sys.path.insert(0, {tests!r})
from test_start_kill_kernel import agent_parts, desired
setup = json.loads(sys.argv[1])
manager, loop = agent_parts(setup)
manager.runtime.warm_up()    # from the main thread, as the agent does
loop.set_desired(1, desired(setup["names"]))
print("ready", flush=True)
while True:
    loop.reconcile_once()
    time.sleep(0.002)
"""


def desired(names: list[str]) -> list[pb.Replica]:
    out = []
    for name in names:
        r = pb.Replica(
            metadata=pb.ObjectMeta(name=name, namespace="ktest", uid=f"uid-{name}"),
            spec=pb.WorkloadSpec(image="busybox", command=["sleep", "1000"],
                                 restart_policy="Always",
                                 resources=pb.Resources(memory_bytes=32 << 20, pids=16)),
            spec_hash="h1")
        out.append(r)
    return out


def agent_parts(setup: dict) -> tuple[ContainerManager, NodeLoop]:
    """What mctl-agent builds, on the test's state dir, cgroup prefix and node namespace."""
    boxes = SimpleNamespace(**setup)
    from mctl.agent.images.store import ImageStore
    from mctl.agent.runtime.cgroups import detect

    net = NodeNetwork(boxes.state, netns_prefix=f"{boxes.ns}-", node_netns=boxes.ns)
    net.configure(SUBNET, CLUSTER)
    manager = ContainerManager(
        boxes.state, "knode", ImageStore(boxes.images), detect("/sys/fs/cgroup"),
        NativeRuntime("/sys/fs/cgroup"), cgroup_parent=boxes.prefix, network=net,
        id_ranges=IdRanges(os.path.join(boxes.state, "userns"), base=TEST_ID_BASE + (400 << 16)))
    loop = NodeLoop(manager, SimpleNamespace(latest=lambda cid: None),  # type: ignore[arg-type]
                    lambda report: None, "knode", 0.0, max_parallel_starts=boxes.bound)
    # The drift repair and the service table are not what this is about.
    loop.selfcheck.run = lambda containers, starting=False: []  # type: ignore[method-assign]
    loop.services.sync = lambda: None  # type: ignore[method-assign]
    return manager, loop


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("startkill")
    try:
        yield b
    finally:
        assert b.close() == {}


@pytest.fixture
def node() -> Iterator[str]:
    name = f"mctl-t{secrets.token_hex(3)}"
    netns.create(name)
    with netns.rtnl(name) as rt:
        rt.set_link("lo", up=True)
    yield name
    netns.remove(name)
    assert netns.list_names(name) == []


def links(ns: str) -> list[str]:
    with netns.rtnl(ns) as rt:
        return sorted(link.name for link in rt.links() if link.name != "lo")


@pytest.mark.parametrize("bound", [1, 4])
@pytest.mark.parametrize("kill_after", KILL_AFTER)
def test_a_kill_at_any_point_of_parallel_starts_recovers(boxes, node, kill_after, bound):
    state = tempfile.mkdtemp(prefix="state-", dir=boxes.tmp)
    names = [f"k{i}-{secrets.token_hex(2)}" for i in range(REPLICAS)]
    setup = {"state": state, "images": boxes.images.root, "prefix": boxes.prefix,
             "ns": node, "names": names, "bound": bound}
    tests = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=tests), json.dumps(setup)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(kill_after)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # A restarted agent: adopt, then plan the same desired set until it is met.
    manager, loop = agent_parts(setup)
    manager.adopt_all()
    loop.set_desired(1, desired(names))
    ids = {container_id("ktest", n) for n in names}
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            loop.reconcile_once()
            phases = {c.id: loop.status_of(c, 0).phase for c in manager.snapshot()}
            if phases == {cid: pb.REPLICA_PHASE_RUNNING for cid in ids} and not loop.in_flight():
                break
            time.sleep(0.02)
        # What a replica that is not Running has in its bundle says where the kill hit.
        assert phases == {cid: pb.REPLICA_PHASE_RUNNING for cid in ids}, (
            f"killed {kill_after}s in: {phases}", {
                c.id: sorted(os.listdir(c.bundle)) for c in manager.snapshot()
                if phases.get(c.id) != pb.REPLICA_PHASE_RUNNING})
        for c in manager.snapshot():
            st = read_state(c.bundle)
            assert st is not None and pid_alive(st.monitor_pid, st.monitor_start_time), c.id
            assert st.monitor_pid == c.monitor_pid, c.id
        assert len(links(node)) == REPLICAS + 1        # the bridge and one veth each
    finally:
        loop.close()
        for c in manager.snapshot():
            manager.stop(c, 0)
            manager.teardown(c)
        manager.runtime.close()
        manager.network.cleanup()   # type: ignore[union-attr]
    assert os.listdir(manager.root) == []
    assert manager.network.pool.held() == {}   # type: ignore[union-attr]
    assert list(manager.id_ranges.held()) == []
    assert netns.list_names(f"{node}-") == []
    assert links(node) == []
    assert mounts_mentioning(state) == []
    shutil.rmtree(state)

