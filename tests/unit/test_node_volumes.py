"""Volumes on the node (agent/volumes.py): sources, mounts in config.json, env valueFrom.

Mounts are recorded, not made (RecordingSyscalls): the kernel tier mounts
them for real (tests/kernel/test_volumes_kernel.py). Files are written for
real, owned by the test's own user, so no root is needed.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent import diskusage  # noqa: E402
from mctl.agent import volumes as v  # noqa: E402
from mctl.agent.containers import ContainerError, ContainerManager  # noqa: E402
from mctl.agent.images.archive import import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402
from mctl.agent.runtime import syscalls as sc  # noqa: E402
from mctl.v1 import types_pb2 as pb  # noqa: E402

ME = v.Owner(os.getuid(), os.getgid())
MiB = 1 << 20


def meta(name: str, namespace: str = "default") -> pb.ObjectMeta:
    return pb.ObjectMeta(name=name, namespace=namespace)


def replica(volumes=(), mounts=(), env=(), memory=0) -> pb.Replica:
    return pb.Replica(metadata=meta("r-bcdfg"), spec=pb.WorkloadSpec(
        image="t/app:1", volumes=list(volumes), volume_mounts=list(mounts), env=list(env),
        resources=pb.Resources(memory_bytes=memory)))


SOURCES = v.Sources.of(
    [pb.Config(metadata=meta("app"), data={"app.conf": "port=80\n", "level": "debug"})],
    [pb.Secret(metadata=meta("db"), data={"password": b"hunter2", "blob": b"\xff\x00"})])


@pytest.fixture
def vm(tmp_path: Path) -> v.VolumeManager:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return v.VolumeManager(str(tmp_path / "state"), sc.RecordingSyscalls(),  # type: ignore[arg-type]
                           host_path_allow=(str(allowed),))


def prepare(vm: v.VolumeManager, tmp_path: Path, r: pb.Replica) -> list:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    return vm.prepare(r, str(bundle), ME, SOURCES)


def test_each_kind_becomes_one_bind_mount_with_its_default_read_only(vm, tmp_path):
    logs = tmp_path / "allowed" / "logs"
    logs.mkdir()
    r = replica(
        volumes=[pb.Volume(name="scratch", empty_dir=pb.EmptyDir()),
                 pb.Volume(name="data", volume="api-data"),
                 pb.Volume(name="conf", config="app"),
                 pb.Volume(name="creds", secret="db"),
                 pb.Volume(name="logs", host_path=pb.HostPath(path=str(logs)))],
        mounts=[pb.VolumeMount(name="scratch", mount_path="/tmp/work"),
                pb.VolumeMount(name="data", mount_path="/var/lib/data"),
                pb.VolumeMount(name="conf", mount_path="/etc/app"),
                pb.VolumeMount(name="creds", mount_path="/run/secrets/db"),
                pb.VolumeMount(name="logs", mount_path="/var/log/host")])
    mounts = prepare(vm, tmp_path, r)
    bundle = str(tmp_path / "bundle")
    got = {m.destination: (m.source, m.options[:2]) for m in mounts}
    assert got == {
        "/tmp/work": (f"{bundle}/scratch/scratch", ("rbind", "rw")),
        "/var/lib/data": (str(tmp_path / "state/volumes/default/api-data"), ("rbind", "rw")),
        "/etc/app": (f"{bundle}/volumes/conf", ("rbind", "ro")),
        "/run/secrets/db": (f"{bundle}/secrets/creds", ("rbind", "ro")),
        "/var/log/host": (f"{bundle}/volumes/logs", ("rbind", "ro")),
    }
    assert all({"nosuid", "nodev"} <= set(m.options) for m in mounts)
    assert all(m.type == "bind" for m in mounts)
    # The named volume is made on the node, and kept by teardown.
    assert os.path.isdir(tmp_path / "state/volumes/default/api-data")
    # One file per key; configs readable by all, secrets 0400 in a 0500 directory.
    assert (tmp_path / "bundle/volumes/conf/app.conf").read_text() == "port=80\n"
    assert stat.S_IMODE(os.stat(tmp_path / "bundle/volumes/conf/level").st_mode) == 0o444
    secret = tmp_path / "bundle/secrets/creds/password"
    assert secret.read_bytes() == b"hunter2"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o400
    assert (os.stat(secret).st_uid, os.stat(secret).st_gid) == (ME.uid, ME.gid)
    assert stat.S_IMODE(os.stat(tmp_path / "bundle/secrets/creds").st_mode) == 0o500
    # Kernel side: the secrets tmpfs, and the hostPath bound from the checked descriptor.
    calls = vm.sys.calls
    tmpfs = [c for c in calls if c[3] == "tmpfs"]
    assert [c[2] for c in tmpfs] == [f"{bundle}/secrets"]
    assert tmpfs[0][4] & sc.MS_NOEXEC and f"size={v.SECRETS_TMPFS_BYTES}" in tmpfs[0][5]
    binds = [c for c in calls if c[4] & sc.MS_BIND]
    assert len(binds) == 1 and binds[0][1].startswith("/proc/self/fd/")
    assert binds[0][2] == f"{bundle}/volumes/logs"


def test_read_only_can_be_asked_or_lifted_but_configs_and_secrets_stay_read_only(vm, tmp_path):
    (tmp_path / "allowed" / "x").mkdir()
    r = replica(
        volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir()),
                 pb.Volume(name="h", host_path=pb.HostPath(path=str(tmp_path / "allowed/x"))),
                 pb.Volume(name="c", config="app")],
        mounts=[pb.VolumeMount(name="s", mount_path="/a", read_only=True),
                pb.VolumeMount(name="h", mount_path="/b", read_only=False),
                pb.VolumeMount(name="c", mount_path="/c", read_only=False)])
    assert [m.options[1] for m in prepare(vm, tmp_path, r)] == ["ro", "rw", "ro"]


def test_memory_empty_dir_is_a_tmpfs_of_its_size_limit_or_a_bound(vm, tmp_path):
    r = replica(volumes=[pb.Volume(name="a", empty_dir=pb.EmptyDir(medium="Memory",
                                                                    size_limit_bytes=3 * MiB)),
                         pb.Volume(name="b", empty_dir=pb.EmptyDir(medium="Memory"))],
                mounts=[pb.VolumeMount(name="a", mount_path="/a"),
                        pb.VolumeMount(name="b", mount_path="/b")])
    prepare(vm, tmp_path, r)
    sizes = [c[5].split(",")[0] for c in vm.sys.calls if c[3] == "tmpfs"]
    assert sizes == [f"size={3 * MiB}", f"size={v.MEMORY_DEFAULT_BYTES}"]
    # Without sizeLimit, the workload's memory limit bounds it.
    assert v.memory_size(r.spec.volumes[1], replica(memory=32 * MiB).spec) == 32 * MiB


@pytest.mark.parametrize("path, problem", [
    ("relative/x", "must be absolute"),
    ("/a/../etc", "'..'"),
    ("/", "must not be /"),
    ("/proc", "under /proc"),
    ("/dev/shm/x", "under /dev"),
    ("/sys/fs", "under /sys"),
])
def test_mount_paths_the_node_refuses(vm, tmp_path, path, problem):
    r = replica(volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir())],
                mounts=[pb.VolumeMount(name="s", mount_path=path)])
    with pytest.raises(v.VolumeError, match=r"volumeMounts\[0\] \(s\): .*" + problem):
        prepare(vm, tmp_path, r)


def test_a_mount_of_no_volume_and_two_mounts_on_one_path_are_refused(vm, tmp_path):
    with pytest.raises(v.VolumeError, match="no volume named 'nope'"):
        prepare(vm, tmp_path, replica(mounts=[pb.VolumeMount(name="nope", mount_path="/x")]))
    r = replica(volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir())],
                mounts=[pb.VolumeMount(name="s", mount_path="/x"),
                        pb.VolumeMount(name="s", mount_path="/x/")])
    with pytest.raises(v.VolumeError, match="mounted twice"):
        prepare(vm, tmp_path, r)


def test_missing_config_secret_or_key_names_it(vm, tmp_path):
    r = replica(volumes=[pb.Volume(name="c", secret="gone")],
                mounts=[pb.VolumeMount(name="c", mount_path="/c")])
    with pytest.raises(v.VolumeError, match="volume c: secret 'gone' not found"):
        prepare(vm, tmp_path, r)
    bad = v.Sources.of([pb.Config(metadata=meta("x"), data={"../evil": "1"})], [])
    r = replica(volumes=[pb.Volume(name="c", config="x")],
                mounts=[pb.VolumeMount(name="c", mount_path="/c")])
    with pytest.raises(v.VolumeError, match="key '../evil' is not a file name"):
        vm.prepare(r, str(tmp_path / "bundle"), ME, bad)


# -- hostPath ---------------------------------------------------------------------


def test_host_path_is_refused_by_default_naming_the_path_and_the_allow_list(tmp_path):
    with pytest.raises(v.VolumeError, match=r"hostPath '/etc' is not under the node's allowed "
                                            r"prefixes \(none; mctl-agent --host-path-allow\)"):
        v.open_host_path("/etc", (), "volume h")


def test_host_path_outside_the_prefixes_is_refused(tmp_path):
    allowed = str(tmp_path / "allowed")
    os.mkdir(allowed)
    for path in ("/etc/passwd", allowed + "x", allowed + "/../etc"):
        with pytest.raises(v.VolumeError, match="hostPath"):
            v.open_host_path(path, (allowed,), "volume h")


def test_host_path_symlinks_are_not_followed_out_of_the_prefix_or_at_all(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "real").mkdir(parents=True)
    (allowed / "out").symlink_to("/etc")
    (allowed / "in").symlink_to(allowed / "real")
    (allowed / "real" / "f").write_text("x")
    with pytest.raises(v.VolumeError, match=r"/out is a symlink, which is not followed"):
        v.open_host_path(str(allowed / "out" / "passwd"), (str(allowed),), "volume h")
    with pytest.raises(v.VolumeError, match=r"/out is a symlink"):
        v.open_host_path(str(allowed / "out"), (str(allowed),), "volume h")
    # Even one that stays inside: what is checked must be what is mounted.
    with pytest.raises(v.VolumeError, match=r"/in is a symlink"):
        v.open_host_path(str(allowed / "in"), (str(allowed),), "volume h")
    with pytest.raises(v.VolumeError, match=r"/real/f/x: .*Not a directory|is not a directory"):
        v.open_host_path(str(allowed / "real" / "f" / "x"), (str(allowed),), "volume h")
    with pytest.raises(v.VolumeError, match=r"/missing: No such file"):
        v.open_host_path(str(allowed / "missing"), (str(allowed),), "volume h")
    fd = v.open_host_path(str(allowed / "real"), (str(allowed),), "volume h")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(allowed / "real"))
    finally:
        os.close(fd)


def test_the_allow_list_is_parsed_and_checked():
    assert v.parse_allow_list("") == ()
    assert v.parse_allow_list("/srv/data/, /mnt//x") == ("/srv/data", "/mnt/x")
    with pytest.raises(ValueError, match="'srv' must be an absolute path"):
        v.parse_allow_list("srv")
    with pytest.raises(ValueError, match="without '..'"):
        v.parse_allow_list("/srv/../etc")


# -- env valueFrom ---------------------------------------------------------------


def env_from(**kw) -> pb.EnvVar:
    name = kw.pop("name")
    return pb.EnvVar(name=name, value_from=pb.EnvSource(**kw))


def test_env_value_from_configs_and_secrets():
    r = replica(env=[env_from(name="PW", secret="db", key="password"),
                     env_from(name="LEVEL", config="app", key="level"),
                     pb.EnvVar(name="PLAIN", value="x")])
    assert v.environment(r, SOURCES) == {"PW": "hunter2", "LEVEL": "debug"}
    for var, problem in ((env_from(name="A", secret="db", key="nope"), "has no key 'nope'"),
                         (env_from(name="A", secret="db", key="blob"), "not UTF-8"),
                         (env_from(name="A", config="gone", key="k"), "config 'gone' not found"),
                         (env_from(name="A", key="k"), "neither a config nor a secret")):
        with pytest.raises(v.VolumeError, match="env A: .*" + problem):
            v.environment(replica(env=[var]), SOURCES)


# -- config.json, through the container manager --------------------------------------


@pytest.fixture
def manager(tmp_path: Path) -> ContainerManager:
    store = ImageStore(str(tmp_path / "store"))
    spec = ib.ImageSpec(layers=[ib.layer_tar([ib.file("etc/passwd", "root:x:0:0::/:/bin/sh\n")])],
                        name="t/app:1", entrypoint=["/bin/tool"], env=["PATH=/bin"])
    import_archive(store, ib.write_tar(ib.docker_archive([spec]), str(tmp_path / "a.tar")))
    m = ContainerManager(str(tmp_path / "state"), "node1", store, cgroups=None,  # type: ignore[arg-type]
                         runtime=None, cgroup_parent="mctl/test",  # type: ignore[arg-type]
                         sys=sc.RecordingSyscalls())  # type: ignore[arg-type]
    m.sources = SOURCES
    return m


def test_config_json_has_volume_mounts_after_the_defaults_and_env_from_sources(manager,
                                                                              tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    r = replica(volumes=[pb.Volume(name="conf", config="app")],
                mounts=[pb.VolumeMount(name="conf", mount_path="/etc/app")],
                env=[env_from(name="PW", secret="db", key="password")])
    c = manager._config(r, str(bundle))
    assert c.mounts[-1].destination == "/etc/app"
    assert [m.destination for m in c.mounts].index("/proc") < len(c.mounts) - 1
    assert "PW=hunter2" in c.env


def test_a_refused_volume_is_a_create_error_naming_it(manager, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    r = replica(volumes=[pb.Volume(name="h", host_path=pb.HostPath(path="/etc"))],
                mounts=[pb.VolumeMount(name="h", mount_path="/host")])
    with pytest.raises(ContainerError, match=r"volume h: hostPath '/etc' is not under"):
        manager._config(r, str(bundle))


# -- disk emptyDir sizeLimit ------------------------------------------------------


def test_disk_empty_dirs_count_in_the_container_and_against_their_size_limit(tmp_path):
    bundle = tmp_path / "b"
    scratch = bundle / "scratch" / "s"
    scratch.mkdir(parents=True)
    r = replica(volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir(size_limit_bytes=MiB))])
    (scratch / "small").write_bytes(b"x" * 4096)
    assert v.emptydir_over(str(bundle), r) is None
    assert diskusage.container_bytes(str(bundle)) >= 4096
    (scratch / "big").write_bytes(os.urandom(2 * MiB))
    assert v.emptydir_over(str(bundle), r) == "emptyDir s uses 2Mi, sizeLimit 1Mi"
    # A Memory one is the tmpfs's business, and one without a limit has none.
    r2 = replica(volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir())])
    assert v.emptydir_over(str(bundle), r2) is None


def test_teardown_removes_the_replicas_sources_and_keeps_named_volumes(vm, tmp_path):
    r = replica(volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir()),
                         pb.Volume(name="d", volume="keep"),
                         pb.Volume(name="c", config="app")],
                mounts=[pb.VolumeMount(name="s", mount_path="/s"),
                        pb.VolumeMount(name="d", mount_path="/d"),
                        pb.VolumeMount(name="c", mount_path="/c")])
    prepare(vm, tmp_path, r)
    (tmp_path / "state/volumes/default/keep/f").write_text("kept")
    assert vm.teardown(str(tmp_path / "bundle")) == []
    assert sorted(os.listdir(tmp_path / "bundle")) == []
    assert (tmp_path / "state/volumes/default/keep/f").read_text() == "kept"
    assert vm.teardown(str(tmp_path / "bundle")) == []      # idempotent
    assert vm.named_usage()[("default", "keep")] > 0


def test_config_json_goes_on_the_secrets_tmpfs_only_for_a_replica_with_secrets(vm, tmp_path):
    from mctl.agent.runtime.oci import config as oci

    config = oci.Config(args=("true",), env=("PW=hunter2",))
    plain, secret = tmp_path / "plain", tmp_path / "secret"
    plain.mkdir()
    secret.mkdir()
    vm.write_config(replica(env=[pb.EnvVar(name="A", value="1")]), str(plain), config)
    assert not os.path.islink(plain / "config.json")
    vm.write_config(replica(env=[env_from(name="PW", secret="db", key="password")]),
                    str(secret), config)
    assert os.readlink(secret / "config.json") == "secrets/config.json"
    assert "hunter2" in (secret / "config.json").read_text()
    assert [c[2] for c in vm.sys.calls if c[3] == "tmpfs"] == [f"{secret}/secrets"]
    # Written again (a fresh start after DiskLimit): the link is replaced, not doubled.
    vm.write_config(replica(volumes=[pb.Volume(name="s", secret="db")]), str(secret), config)
    assert os.readlink(secret / "config.json") == "secrets/config.json"


def test_the_disk_guard_stops_a_container_whose_empty_dir_passes_its_size_limit(tmp_path):
    import threading
    import types

    from mctl.agent.containers import Container
    from mctl.agent.disklimit import DiskGuard
    from mctl.agent.runtime.state import Exit

    r = replica(volumes=[pb.Volume(name="s", empty_dir=pb.EmptyDir(size_limit_bytes=MiB))])
    c = Container("default_r", str(tmp_path), r, "cg", monitor_pid=10)
    (tmp_path / "scratch" / "s").mkdir(parents=True)
    (tmp_path / "scratch" / "s" / "f").write_bytes(os.urandom(2 * MiB))
    done = threading.Event()

    def stop(container: Container, grace: float) -> None:
        container.exit = Exit(143, signal=15)

    manager = types.SimpleNamespace(snapshot=lambda: [c], disk_limit_of=lambda _c: 10 << 30,
                                    mark_disk_limit=lambda _c, _why: None, stop=stop)
    g = DiskGuard(manager, 1.0, on_change=done.set)  # type: ignore[arg-type]
    assert g.check_once() == [c]
    assert done.wait(5)
    assert c.exit is not None and c.exit.disk_limit == "emptyDir s uses 2Mi, sizeLimit 1Mi"


def test_debug_node_volumes_lists_named_volumes_with_size_and_users(manager, tmp_path):
    from mctl.agent import debug
    from mctl.agent.containers import Container

    assert debug.inspect("volumes", manager, None) == [
        f"no named volumes under {tmp_path}/state/volumes"]
    r = replica(volumes=[pb.Volume(name="d", volume="api-data")],
                mounts=[pb.VolumeMount(name="d", mount_path="/data")])
    manager.containers["default_r-bcdfg"] = Container("default_r-bcdfg", "/b", r, "cg")
    os.makedirs(tmp_path / "state/volumes/default/api-data")
    (tmp_path / "state/volumes/default/api-data/f").write_bytes(b"x" * 8192)
    lines = debug.inspect("volumes", manager, None)
    assert lines[0].split() == ["VOLUME", "USED", "USED", "BY"]
    assert lines[1].split()[0::2] == ["default/api-data", "r-bcdfg"]
    assert lines[-1].split() == ["default_r-bcdfg", "d", "volume", "/data", "rw"]


def test_reports_carry_named_volume_sizes_measured_in_the_background(vm, tmp_path):
    import time

    os.makedirs(tmp_path / "state/volumes/default/api-data")
    (tmp_path / "state/volumes/default/api-data/f").write_bytes(b"x" * 8192)
    assert vm.latest_usage() == {}          # not measured yet: the report does not wait
    deadline = time.monotonic() + 5
    while not vm.latest_usage() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert vm.latest_usage()[("default", "api-data")] >= 8192
    # Fresh for USAGE_SECONDS: a new file shows only after the next walk.
    (tmp_path / "state/volumes/default/api-data/g").write_bytes(b"x" * 65536)
    assert vm.latest_usage()[("default", "api-data")] < 65536


def test_nested_mount_paths_are_mounted_parents_first(vm, tmp_path):
    r = replica(volumes=[pb.Volume(name="a", empty_dir=pb.EmptyDir()),
                         pb.Volume(name="b", empty_dir=pb.EmptyDir())],
                mounts=[pb.VolumeMount(name="b", mount_path="/data/logs"),
                        pb.VolumeMount(name="a", mount_path="/data")])
    assert [m.destination for m in prepare(vm, tmp_path, r)] == ["/data", "/data/logs"]
