"""A restarted agent removes the bundles whose start was cut short, and adopts the rest.

An agent killed while it made or started containers leaves bundles at any
step of containers.create and of the monitor's start. One without
state.json never had a container recorded, and never will (a start dies
with the agent until it has: runtime/zygote.py), so adoption removes it
and the node loop makes it again; adopted as it was, it showed Starting
for good. One with state.json is adopted as before, its monitor alive or
lost.
"""

from __future__ import annotations

import errno
import os
import types

import pytest

from mctl.agent import reconcile
from mctl.agent.containers import META_FILE, REPLICA_FILE, ContainerManager
from mctl.agent.node import policy_code
from mctl.agent.runtime import state as runtime_state
from mctl.v1 import types_pb2


class Recorder:
    def __init__(self) -> None:
        self.destroyed: list[str] = []
        self.deleted: list[str] = []


def not_mounted(target: str, flags: int) -> None:
    raise OSError(errno.EINVAL, "not a mount point", target)


def manager_at(tmp_path) -> tuple[ContainerManager, Recorder]:
    seen = Recorder()
    runtime = types.SimpleNamespace(state=runtime_state.read_state, exit=runtime_state.read_exit,
                                    delete=lambda cid, bundle, cg: seen.deleted.append(cid))
    cgroups = types.SimpleNamespace(destroy=seen.destroyed.append)
    m = ContainerManager(str(tmp_path), "node1", images=None,  # type: ignore[arg-type]
                         cgroups=cgroups, runtime=runtime,  # type: ignore[arg-type]
                         cgroup_parent="mctl/node1",
                         sys=types.SimpleNamespace(umount=not_mounted))  # type: ignore[arg-type]
    return m, seen


def bundle_with(m: ContainerManager, name: str, files: dict[str, object]) -> str:
    """A bundle of replica `name` holding `files` (name -> a State, an Exit or text)."""
    bundle = os.path.join(m.root, f"default_{name}")
    os.makedirs(bundle)
    replica = types_pb2.Replica(metadata=types_pb2.ObjectMeta(namespace="default", name=name,
                                                              uid=f"uid-{name}"))
    with open(os.path.join(bundle, REPLICA_FILE), "wb") as f:
        f.write(replica.SerializeToString())
    for file, content in files.items():
        if isinstance(content, (runtime_state.State, runtime_state.Exit)):
            runtime_state.write_json(os.path.join(bundle, file), content.to_json())
        else:
            with open(os.path.join(bundle, file), "w") as f:
                f.write(str(content))
    return bundle


# The steps of a create and a start (or restart) at which a kill leaves no state.json.
CUT_SHORT = {
    "replica recorded": {},
    "meta written": {META_FILE: '{"restarts": 0}'},
    "network, rootfs and config written": {META_FILE: '{"restarts": 0}',
                                           "network.json": "{}", "config.json": "{}"},
    # reset() unlinks state.json, then exit.json: killed in between.
    "restart cut short after reset began": {META_FILE: '{"restarts": 3}',
                                            runtime_state.EXIT_FILE: runtime_state.Exit(1)},
    "restart cut short after reset": {META_FILE: '{"restarts": 3}',
                                      "container.log": "", "previous.log": ""},
}


@pytest.mark.parametrize("step", sorted(CUT_SHORT))
def test_a_bundle_without_state_is_removed_and_made_again(tmp_path, step):
    m, seen = manager_at(tmp_path)
    bundle = bundle_with(m, "web-1", CUT_SHORT[step])
    assert m.adopt_all() == []
    assert not os.path.exists(bundle)
    # Everything it may hold is released: its cgroup, the runtime's state.
    assert seen.destroyed == ["mctl/node1/default_web-1"]
    assert seen.deleted == ["default_web-1"]
    assert m.containers == {}
    # So the node loop's plan makes it again.
    want = {"default_web-1": reconcile.Want("uid-web-1", "", "Always")}
    assert reconcile.plan(want, {}, 0) == [reconcile.Action(reconcile.Do.CREATE, "default_web-1")]


def test_a_recorded_container_is_adopted_running_or_lost(tmp_path):
    m, seen = manager_at(tmp_path)
    me = os.getpid()
    from mctl.common.procfs import start_time
    alive = runtime_state.State("default_up", me, me, 1, start_time(me), start_time(me))
    # A monitor killed after it recorded the container, before it reported
    # (it dies with the zygote until then): its pid is gone.
    lost = runtime_state.State("default_lost", 1 << 22, 1 << 22, 1, 1, 1)
    bundle_with(m, "up", {runtime_state.STATE_FILE: alive})
    bundle_with(m, "lost", {runtime_state.STATE_FILE: lost})
    adopted = {c.id: c for c in m.adopt_all()}
    assert sorted(adopted) == ["default_lost", "default_up"]
    assert adopted["default_up"].running()
    ex = adopted["default_lost"].exit
    assert ex is not None and ex.lost and policy_code(ex) != 0
    assert seen.destroyed == [] and seen.deleted == []
