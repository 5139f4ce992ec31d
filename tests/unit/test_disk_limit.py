"""resources.disk end to end, short of the kernel: the field, the measure, the decision.

The file field parses and validates like the other quantities (absent: the
node's default, stored as 0); the agent adds up a bundle's writable files
as `du` would; a container over its limit is stopped with the reason in
its exit, which the node reports as DiskLimit, also after an agent restart.
Mounting the fresh writable layer on restart is the e2e test's
(tests/e2e/test_disk_limit.py).
"""

from __future__ import annotations

import os
import threading
import types
from pathlib import Path

import pytest
import yaml

from mctl.agent.containers import META_FILE, REPLICA_FILE, Container, ContainerManager
from mctl.agent.disklimit import DiskGuard
from mctl.agent.diskusage import container_bytes, over_limit, tree_bytes, trim_logs
from mctl.agent.node import NodeLoop, exit_reason
from mctl.agent.runtime import state as runtime_state
from mctl.agent.runtime.state import Exit
from mctl.common import spec, validation
from mctl.v1 import types_pb2

MiB = 1 << 20


# -- the decision ------------------------------------------------------------------


def test_a_container_within_its_limit_keeps_running():
    assert over_limit(0, 64 * MiB) is None
    assert over_limit(64 * MiB, 64 * MiB) is None     # at the limit is within it


def test_one_byte_over_the_limit_stops_it_and_says_use_and_limit():
    assert over_limit(70 * MiB, 64 * MiB) == "writable layer and logs use 70Mi, limit 64Mi"
    assert over_limit(64 * MiB + 1, 64 * MiB) == "writable layer and logs use 64Mi, limit 64Mi"
    assert over_limit(int(1.5 * (1 << 30)), 1 << 30) == (
        "writable layer and logs use 1.5Gi, limit 1Gi")


# -- the field ---------------------------------------------------------------------


def parse(resources: str) -> types_pb2.Workload:
    text = ("apiVersion: mctl/v1\nkind: Workload\nmetadata: {name: app}\n"
            f"spec:\n  image: busybox\n  resources: {{{resources}}}\n")
    return spec.parse_documents(text, "app.yaml")[0]


def test_disk_is_a_quantity_like_memory():
    assert parse("disk: 8Mi").spec.resources.disk_bytes == 8 * MiB
    assert parse("disk: 1Gi").spec.resources.disk_bytes == 1 << 30
    assert parse("disk: 1.5Gi").spec.resources.disk_bytes == 3 << 29
    assert parse("disk: 2000000").spec.resources.disk_bytes == 2_000_000


def test_absent_disk_is_the_nodes_default_and_changes_no_spec_hash():
    w = parse("memory: 64Mi")
    assert w.spec.resources.disk_bytes == 0
    # Workloads written before the field keep their hash: no rollout on upgrade.
    before = types_pb2.WorkloadSpec()
    before.CopyFrom(w.spec)
    assert spec.spec_hash(w.spec) == spec.spec_hash(before)
    assert "disk" not in spec.workload_to_dict(w)["spec"]["resources"]
    assert spec.spec_hash(parse("disk: 8Mi").spec) != spec.spec_hash(w.spec)


def test_disk_round_trips_through_get_o_yaml():
    w = parse("disk: 8Mi")
    shown = spec.workload_to_dict(w)
    assert shown["spec"]["resources"]["disk"] == "8Mi"
    again = spec.parse_documents(yaml.safe_dump(shown, sort_keys=False), "again.yaml")[0]
    assert again.spec == w.spec


@pytest.mark.parametrize(("value", "problem"), [
    ("0", "must be more than 0 (leave it out for the node's default)"),
    ("0Mi", "must be more than 0 (leave it out for the node's default)"),
    ("1000", "must be between 1Mi and 64Ti, not 1000"),
    ("65Ti", "must be between 1Mi and 64Ti, not 65Ti"),
    ("8MB", '"8MB" is not a quantity'),
    ("-1Mi", '"-1Mi" must not be negative'),
    ("true", "true is not a quantity"),
])
def test_bad_disk_values_are_refused_at_their_field(value, problem):
    with pytest.raises(spec.SpecError) as e:
        parse(f"disk: {value}")
    assert e.value.field == "spec.resources.disk"
    assert e.value.problem == problem


def workload_with_disk(disk: int) -> types_pb2.Workload:
    w = parse("cpu: 1")
    w.spec.resources.disk_bytes = disk
    return w


def test_the_server_holds_a_raw_message_to_the_same_bounds():
    assert validation.workload_problem(workload_with_disk(0)) is None      # node default
    assert validation.workload_problem(workload_with_disk(validation.MIN_DISK_BYTES)) is None
    assert validation.workload_problem(workload_with_disk(validation.MAX_DISK_BYTES)) is None
    for bad in (1, validation.MIN_DISK_BYTES - 1, validation.MAX_DISK_BYTES + 1, -5):
        found = validation.workload_problem(workload_with_disk(bad))
        assert found is not None and found.field == "spec.resources.disk", bad
        assert found.problem.startswith("must be between 1Mi and 64Ti, not ")


# -- the measure -------------------------------------------------------------------


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        os.fsync(f.fileno())


def du(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_the_measure_counts_writable_layer_etc_files_and_logs(tmp_path: Path):
    b = tmp_path / "bundle"
    write(b / "upper" / "data" / "big", 3 * MiB)
    write(b / "work" / "work" / "tmp", 64 << 10)
    write(b / "etc" / "hosts", 100)
    write(b / "container.log", 1 * MiB)
    write(b / "container.log.1", 2 * MiB)
    # The agent's own files and the image's layers are not the container's writing.
    write(b / "config.json", 5 * MiB)
    write(b / "rootfs-not-counted" / "x", 5 * MiB)
    write(b / "container.log.tmp", 5 * MiB)
    used = container_bytes(str(b))
    files = [b / "upper" / "data" / "big", b / "work" / "work" / "tmp", b / "etc" / "hosts",
             b / "container.log", b / "container.log.1"]
    dirs = [b / "upper", b / "upper" / "data", b / "work", b / "work" / "work", b / "etc"]
    assert used == sum(du(p) for p in files + dirs)
    assert 6 * MiB < used < 7 * MiB


def test_a_hard_linked_file_counts_once_and_a_sparse_one_by_its_blocks(tmp_path: Path):
    upper = tmp_path / "upper"
    write(upper / "a", 2 * MiB)
    os.link(upper / "a", upper / "b")
    with open(upper / "sparse", "wb") as f:
        f.truncate(1 << 30)             # a 1 GiB hole takes no blocks
    used = tree_bytes(str(upper), set())
    assert used == du(upper) + du(upper / "a") + du(upper / "sparse")
    assert used < 3 * MiB


def test_a_missing_tree_measures_zero(tmp_path: Path):
    assert tree_bytes(str(tmp_path / "gone"), set()) == 0
    assert container_bytes(str(tmp_path / "gone")) == 0


def test_trimming_keeps_only_a_small_current_log(tmp_path: Path):
    write(tmp_path / "container.log", 1 * MiB)
    write(tmp_path / "container.log.1", 1 * MiB)
    write(tmp_path / "container.log.2", 1 * MiB)
    trim_logs(str(tmp_path), 8 * MiB)
    assert sorted(os.listdir(tmp_path)) == ["container.log"]
    assert os.path.getsize(tmp_path / "container.log") == 1 * MiB
    # Over half the limit alone: the restarted container would start near it.
    trim_logs(str(tmp_path), 1 * MiB)
    assert os.path.getsize(tmp_path / "container.log") == 0


# -- the guard ---------------------------------------------------------------------


class FakeManager:
    default_disk_limit = 10 << 30

    def __init__(self, containers: list[Container]) -> None:
        self.containers = containers
        self.stopped: list[str] = []
        self.marked: list[tuple[str, str]] = []

    def snapshot(self) -> list[Container]:
        return list(self.containers)

    def disk_limit_of(self, c: Container) -> int:
        return c.replica.spec.resources.disk_bytes or self.default_disk_limit

    def mark_disk_limit(self, c: Container, why: str) -> None:
        self.marked.append((c.id, why))

    def stop(self, c: Container, grace: float) -> None:
        assert c.disk_limit        # the node reports it as being stopped meanwhile
        self.stopped.append(c.id)
        c.exit = Exit(143, signal=15)


def container(name: str, disk: int = 0, policy: str = "Never", **kw: object) -> Container:
    r = types_pb2.Replica(spec_hash="h")
    r.metadata.namespace, r.metadata.name, r.metadata.uid = "default", name, "u-" + name
    r.spec.resources.disk_bytes = disk
    r.spec.restart_policy = policy
    kw.setdefault("monitor_pid", 10)
    return Container(f"default_{name}", f"/b/{name}", r, "cg", **kw)  # type: ignore[arg-type]


def guard(containers: list[Container], sizes: dict[str, int]) -> tuple[DiskGuard, FakeManager,
                                                                           threading.Event]:
    manager = FakeManager(containers)
    woken = threading.Event()
    g = DiskGuard(manager, 1.0, on_change=woken.set,  # type: ignore[arg-type]
                  measure=lambda bundle: sizes[bundle])
    return g, manager, woken


def test_the_guard_stops_only_the_container_over_its_limit():
    hog = container("hog", disk=8 * MiB)
    calm = container("calm", disk=8 * MiB)
    big = container("big")                  # the node's default, 10Gi
    g, manager, woken = guard([hog, calm, big], {"/b/hog": 16 * MiB, "/b/calm": 1 * MiB,
                                                  "/b/big": 1 << 30})
    assert g.check_once() == [hog]
    assert woken.wait(5)
    why = "writable layer and logs use 16Mi, limit 8Mi"
    assert manager.stopped == ["default_hog"]
    assert manager.marked == [("default_hog", why)]
    assert hog.exit is not None and hog.exit.disk_limit == why
    assert (hog.exit.exit_code, hog.exit.signal) == (143, 15)
    assert not hog.disk_limit and calm.exit is None and big.exit is None
    assert (g.used("default_hog"), g.used("default_calm"), g.used("default_big")) == (
        16 * MiB, 1 * MiB, 1 << 30)


def test_the_node_default_applies_when_the_workload_gives_none():
    c = container("app")
    g, manager, woken = guard([c], {"/b/app": 2 * MiB})
    manager.default_disk_limit = 1 * MiB
    assert g.check_once() == [c]
    assert woken.wait(5)
    assert c.exit is not None and c.exit.disk_limit == "writable layer and logs use 2Mi, limit 1Mi"


def test_containers_not_running_or_being_stopped_are_not_measured():
    cs = [container("busy", busy=True), container("sick", unhealthy="probe failed"),
          container("stopping", disk_limit="earlier"), container("new", monitor_pid=0),
          container("done", exit=Exit(0))]
    g, manager, _ = guard(cs, {})          # measuring any of them would raise KeyError
    assert g.check_once() == []
    assert manager.stopped == [] and all(g.used(c.id) is None for c in cs)


# -- what the node reports -----------------------------------------------------------


def status(c: Container) -> types_pb2.ReplicaStatus:
    loop = NodeLoop(types.SimpleNamespace(), types.SimpleNamespace(),  # type: ignore[arg-type]
                    lambda report: None, "n1", 1.0)
    return loop.status_of(c, now=10_000)


WHY = "writable layer and logs use 16Mi, limit 8Mi"


def test_the_reason_is_disk_limit_with_use_and_limit():
    assert exit_reason(Exit(143, signal=15, disk_limit=WHY)) == (
        types_pb2.REPLICA_REASON_DISK_LIMIT, WHY)
    failed = status(container("a", exit=Exit(143, disk_limit=WHY, finished_unix_ms=9_000)))
    assert (failed.phase, failed.reason, failed.message, failed.exit_code) == (
        types_pb2.REPLICA_PHASE_FAILED, types_pb2.REPLICA_REASON_DISK_LIMIT, WHY, 143)


def test_while_stopping_and_before_a_restart_the_reason_shows():
    stopping = status(container("a", disk_limit=WHY))
    assert (stopping.phase, stopping.reason, stopping.message) == (
        types_pb2.REPLICA_PHASE_RUNNING, types_pb2.REPLICA_REASON_DISK_LIMIT, f"stopping: {WHY}")
    waiting = status(container("a", policy="Always", started_ms=9_000,
                               exit=Exit(143, disk_limit=WHY, finished_unix_ms=9_500)))
    assert (waiting.phase, waiting.reason) == (types_pb2.REPLICA_PHASE_STARTING,
                                               types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF)
    assert waiting.message.startswith(f"DiskLimit: {WHY}; restarting in ")


def test_the_reconciler_leaves_a_container_alone_while_it_is_stopped():
    c = container("a", policy="Always", disk_limit=WHY, exit=Exit(143, finished_unix_ms=1))
    manager = types.SimpleNamespace(snapshot=lambda: [c], refresh=lambda _c: None)
    loop = NodeLoop(manager, None, lambda report: None, "n1", 1.0)  # type: ignore[arg-type]
    assert loop._observed()[c.id].busy


# -- across an agent restart -----------------------------------------------------------


def test_an_adopted_container_keeps_the_reason_and_starts_afresh(tmp_path: Path):
    runtime = types.SimpleNamespace(state=runtime_state.read_state,
                                    exit=runtime_state.read_exit)
    manager = ContainerManager(str(tmp_path), "node1", images=None,  # type: ignore[arg-type]
                               cgroups=None, runtime=runtime,  # type: ignore[arg-type]
                               cgroup_parent="mctl/node1", sys=types.SimpleNamespace())
    c = container("hog", disk=8 * MiB)
    c.bundle = os.path.join(manager.root, c.id)
    os.makedirs(c.bundle)
    with open(os.path.join(c.bundle, REPLICA_FILE), "wb") as f:
        f.write(c.replica.SerializeToString())
    manager.mark_disk_limit(c, WHY)
    assert c.renew_rootfs
    # The monitor recorded the TERM the guard sent; then the agent restarted.
    runtime_state.write_json(os.path.join(c.bundle, runtime_state.STATE_FILE),
                             runtime_state.State(c.id, 10, 11, 1, 1, 1).to_json())
    runtime_state.write_json(os.path.join(c.bundle, runtime_state.EXIT_FILE),
                             Exit(143, signal=15, finished_unix_ms=5).to_json())
    (adopted,) = manager.adopt_all()
    assert adopted.exit is not None and adopted.exit.disk_limit == WHY
    assert adopted.renew_rootfs
    assert exit_reason(adopted.exit)[0] == types_pb2.REPLICA_REASON_DISK_LIMIT
    # A restart before the fresh layer is mounted keeps the promise in meta.json.
    manager.cgroups = types.SimpleNamespace(destroy=lambda cg: None)
    manager.reset(adopted)
    with open(os.path.join(c.bundle, META_FILE)) as f:
        assert f.read() == '{"restarts": 1, "renew_rootfs": true}'


def test_a_container_that_exits_0_on_the_term_still_failed():
    # A shell that traps TERM and exits 0: stopped for its disk use all the same.
    ex = Exit(0, disk_limit=WHY, finished_unix_ms=9_000)
    st = status(container("a", policy="OnFailure", exit=ex))
    assert (st.phase, st.reason) == (types_pb2.REPLICA_PHASE_STARTING,
                                     types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF)
    st = status(container("a", policy="Never", exit=ex))
    assert (st.phase, st.reason, st.exit_code) == (
        types_pb2.REPLICA_PHASE_FAILED, types_pb2.REPLICA_REASON_DISK_LIMIT, 0)
    c = container("a", policy="OnFailure", exit=ex)
    manager = types.SimpleNamespace(snapshot=lambda: [c], refresh=lambda _c: None)
    loop = NodeLoop(manager, None, lambda report: None, "n1", 1.0)  # type: ignore[arg-type]
    assert loop._observed()[c.id].exit_code != 0


def test_a_full_disk_does_not_keep_the_container_from_being_stopped():
    c = container("hog", disk=8 * MiB)
    g, manager, woken = guard([c], {"/b/hog": 16 * MiB})

    def full(c: Container, why: str) -> None:
        raise OSError(28, "No space left on device")

    manager.mark_disk_limit = full  # type: ignore[method-assign]
    g.check_once()
    assert woken.wait(5)
    assert manager.stopped == ["default_hog"] and c.exit is not None and c.exit.disk_limit
