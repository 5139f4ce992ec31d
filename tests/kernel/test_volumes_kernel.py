"""Volumes through the agent's own path (ContainerManager) and the real native runtime.

Needs root. Each test makes a replica with volumes, lets the manager create
and start it, reads what the container wrote (to a disk emptyDir, which the
host sees under the bundle) and tears it down, asserting that no mount and
no file of the replica is left, and that what must be kept (named volumes,
the host's own directories) is. Plain containers and user-namespace ones,
whose ids differ on the host.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest
from boxes import TEST_ID_BASE, Boxes

from mctl.agent import volumes
from mctl.agent.containers import Container, ContainerError, ContainerManager
from mctl.agent.idranges import IdRanges
from mctl.agent.runtime import userns
from mctl.agent.runtime.choose import make_runtime
from mctl.agent.runtime.oci.client import RuntimeNotFound
from mctl.common import procfs
from mctl.v1 import types_pb2 as pb

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

MiB = 1 << 20
SECRET = f"s3cr3t-{secrets.token_hex(8)}"
SOURCES = volumes.Sources.of(
    [pb.Config(metadata=pb.ObjectMeta(name="app", namespace="ktest"),
               data={"app.conf": "port=80\n"})],
    [pb.Secret(metadata=pb.ObjectMeta(name="db", namespace="ktest"),
               data={"password": SECRET.encode()})])


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("volumes")
    try:
        yield b
    finally:
        assert b.close() == {}


@pytest.fixture(params=["plain", "userns"])
def userns_mode(request: pytest.FixtureRequest) -> bool:
    if request.param == "userns" and userns.unavailable():
        pytest.skip(userns.unavailable())
    return request.param == "userns"


@pytest.fixture
def manager(boxes: Boxes) -> Iterator[ContainerManager]:
    state = os.path.join(boxes.tmp, f"state-{secrets.token_hex(3)}")
    host = os.path.join(boxes.tmp, "host")
    os.makedirs(host, exist_ok=True)
    ids = IdRanges(os.path.join(state, "userns"), base=TEST_ID_BASE + (300 << 16))
    m = ContainerManager(state, "knode", boxes.images, boxes.cgroups, boxes.runtime,
                         cgroup_parent=boxes.prefix, id_ranges=ids, host_path_allow=(host,))
    m.sources = SOURCES
    yield m
    for container in m.snapshot():
        m.stop(container, 0)
        m.teardown(container)
    assert procfs.mounts_mentioning(state) == []


def replica(script: str, vols: list[pb.Volume], mounts: list[pb.VolumeMount],
            env: list[pb.EnvVar] = (), user_ns: bool = False) -> pb.Replica:  # type: ignore[assignment]
    name = f"k{secrets.token_hex(4)}"
    # /out: a disk emptyDir the host reads the results from.
    return pb.Replica(
        metadata=pb.ObjectMeta(name=name, namespace="ktest", uid=name),
        spec=pb.WorkloadSpec(
            image="busybox", command=["sh", "-c", script + "; echo end >> /out/result"],
            volumes=[pb.Volume(name="out", empty_dir=pb.EmptyDir()), *vols],
            volume_mounts=[pb.VolumeMount(name="out", mount_path="/out"), *mounts],
            env=list(env),
            resources=pb.Resources(memory_bytes=64 * MiB, pids=64),
            security_context=pb.SecurityContext(user_namespace=user_ns)))


def run(manager: ContainerManager, r: pb.Replica) -> tuple[Container, str]:
    c = manager.create(r)
    manager.start(c)
    return c, result(c)


def result(c: Container) -> str:
    path = os.path.join(c.bundle, volumes.SCRATCH_DIR, "out", "result")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if text.endswith("end\n"):
                return text[:-len("end\n")]
        time.sleep(0.02)
    raise AssertionError(f"{path} not written in 10s")


def remove(manager: ContainerManager, c: Container) -> None:
    manager.stop(c, 0)
    manager.teardown(c)
    assert procfs.mounts_mentioning(c.bundle) == []
    assert not os.path.exists(c.bundle)


def test_memory_empty_dir_gives_enospc_at_its_size_limit(manager, userns_mode):
    c, out = run(manager, replica(
        "dd if=/dev/zero of=/m/big bs=64k count=64 2>/out/err; echo rc=$? >> /out/result; "
        "grep -c 'No space left' /out/err >> /out/result; "
        # The node's disk and the rest of the container are unaffected.
        "echo fine > /out/other && echo other=ok >> /out/result",
        [pb.Volume(name="m", empty_dir=pb.EmptyDir(medium="Memory", size_limit_bytes=MiB))],
        [pb.VolumeMount(name="m", mount_path="/m")], user_ns=userns_mode))
    assert out == "rc=1\n1\nother=ok\n"
    remove(manager, c)


def test_read_only_where_asked_and_secrets_0400_owned_by_the_user(manager, boxes,
                                                                 userns_mode):
    host = os.path.join(boxes.tmp, "host")
    os.makedirs(os.path.join(host, "ro"), exist_ok=True)
    c, out = run(manager, replica(
        "touch /etc/app/new 2>/dev/null; echo config=$? >> /out/result; "
        "cat /etc/app/app.conf >> /out/result; "
        "touch /h/new 2>/dev/null; echo host=$? >> /out/result; "
        "touch /scr/new 2>/dev/null; echo scratch-ro=$? >> /out/result; "
        "stat -c '%a %u %g' /run/secrets/db/password >> /out/result; "
        "touch /run/secrets/db/x 2>/dev/null; echo secret=$? >> /out/result; "
        "test \"$(cat /run/secrets/db/password)\" = \"$PW\" && echo same >> /out/result",
        [pb.Volume(name="conf", config="app"), pb.Volume(name="db", secret="db"),
         pb.Volume(name="h", host_path=pb.HostPath(path=os.path.join(host, "ro"))),
         pb.Volume(name="scr", empty_dir=pb.EmptyDir())],
        [pb.VolumeMount(name="conf", mount_path="/etc/app"),
         pb.VolumeMount(name="db", mount_path="/run/secrets/db"),
         pb.VolumeMount(name="h", mount_path="/h"),
         pb.VolumeMount(name="scr", mount_path="/scr", read_only=True)],
        env=[pb.EnvVar(name="PW", value_from=pb.EnvSource(secret="db", key="password"))],
        user_ns=userns_mode))
    assert out == ("config=1\nport=80\nhost=1\nscratch-ro=1\n400 0 0\nsecret=1\nsame\n")
    secret = os.path.join(c.bundle, volumes.SECRETS_DIR, "db", "password")
    start = manager.id_ranges.held()[c.id].start if userns_mode else 0
    assert (os.stat(secret).st_uid, os.stat(secret).st_mode & 0o777) == (start, 0o400)
    remove(manager, c)
    assert os.path.isdir(os.path.join(host, "ro"))      # the host's directory is kept


def test_host_path_read_write_reaches_the_host(manager, boxes):
    host = os.path.join(boxes.tmp, "host", "rw")
    os.makedirs(host, exist_ok=True)
    c, out = run(manager, replica(
        "echo hello > /h/file && echo ok >> /out/result",
        [pb.Volume(name="h", host_path=pb.HostPath(path=host))],
        [pb.VolumeMount(name="h", mount_path="/h", read_only=False)]))
    assert out == "ok\n"
    remove(manager, c)
    with open(os.path.join(host, "file")) as f:
        assert f.read() == "hello\n"


def test_a_host_path_through_a_symlink_fails_the_create_and_leaves_nothing(manager, boxes):
    link = os.path.join(boxes.tmp, "host", f"out-{secrets.token_hex(3)}")
    os.symlink("/etc", link)
    r = replica("true", [pb.Volume(name="h", host_path=pb.HostPath(path=link + "/ssl"))],
                [pb.VolumeMount(name="h", mount_path="/h")])
    with pytest.raises(ContainerError, match=r"volume h: hostPath .* is a symlink"):
        manager.create(r)
    bundle = os.path.join(manager.root, f"ktest_{r.metadata.name}")
    assert procfs.mounts_mentioning(bundle) == [] and not os.path.exists(bundle)


def test_empty_dirs_survive_a_restart_named_volumes_survive_teardown(manager, userns_mode):
    script = ("echo run >> /e/log; echo run >> /d/log; "
              "wc -l < /e/log >> /out/result; wc -l < /d/log >> /out/result")
    vols = [pb.Volume(name="e", empty_dir=pb.EmptyDir()),
            pb.Volume(name="d", volume=f"data-{secrets.token_hex(3)}")]
    mounts = [pb.VolumeMount(name="e", mount_path="/e"),
              pb.VolumeMount(name="d", mount_path="/d")]
    r = replica("rm -f /out/result; " + script, vols, mounts, user_ns=userns_mode)
    c, out = run(manager, r)
    assert out.split() == ["1", "1"]
    # A container restart (restartPolicy): same bundle, same emptyDir.
    manager.stop(c, 0)
    manager.reset(c)
    os.unlink(os.path.join(c.bundle, volumes.SCRATCH_DIR, "out", "result"))
    manager.start(c)
    assert result(c).split() == ["2", "2"]
    remove(manager, c)
    # A replacement: a new emptyDir, the same named volume.
    c2, out = run(manager, replica(script, vols, mounts, user_ns=userns_mode))
    assert out.split() == ["1", "3"]
    remove(manager, c2)
    named = manager.volumes.named_path("ktest", vols[1].volume)
    assert os.path.isfile(os.path.join(named, "log"))
    assert manager.volumes.named_usage()[("ktest", vols[1].volume)] > 0


def test_no_secret_value_on_disk_outside_the_tmpfs_for_other_users(manager):
    c, out = run(manager, replica(
        "sleep 30 & echo started >> /out/result",
        [pb.Volume(name="db", secret="db")],
        [pb.VolumeMount(name="db", mount_path="/run/secrets/db")],
        env=[pb.EnvVar(name="PW", value_from=pb.EnvSource(secret="db", key="password"))]))
    assert out == "started\n"
    state = os.path.dirname(manager.root)
    # An unprivileged user finds the value nowhere under the state dir.
    found = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "grep", "-rls", SECRET, state], capture_output=True, text=True)
    assert found.stdout == ""
    # Root does not either, on the disk: the secret's files and config.json
    # (with the env value) are on the replica's tmpfs.
    disk = os.stat(state).st_dev
    holders = []
    for top, dirs, files in os.walk(state):
        dirs[:] = [d for d in dirs if os.stat(os.path.join(top, d)).st_dev == disk]
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                continue          # config.json: read through it, the file is on the tmpfs
            try:
                with open(path, "rb") as f:
                    if SECRET.encode() in f.read():
                        holders.append(os.path.relpath(path, c.bundle))
            except OSError:
                pass
    assert holders == []
    config = os.path.join(c.bundle, "config.json")
    assert os.readlink(config) == "secrets/config.json"
    assert os.stat(config).st_mode & 0o777 == 0o600
    with open(config) as f:
        assert f"PW={SECRET}" in f.read()        # what the runtime read, for the control
    # A container restart starts from the same config.json, through the link.
    manager.stop(c, 0)
    manager.reset(c)
    os.unlink(os.path.join(c.bundle, volumes.SCRATCH_DIR, "out", "result"))
    manager.start(c)
    assert result(c) == "started\n"
    remove(manager, c)


@pytest.mark.parametrize("runtime_name", ["runc", "crun", "mctl-runtime"])
def test_oci_runtimes_follow_config_json_to_the_tmpfs_and_mount_the_volumes(boxes,
                                                                           runtime_name):
    try:
        runtime = make_runtime(runtime_name, os.path.join(boxes.tmp, f"oci-{runtime_name}"))
    except RuntimeNotFound as e:
        pytest.skip(str(e))
    state = os.path.join(boxes.tmp, f"state-{runtime_name}")
    m = ContainerManager(state, "knode", boxes.images, boxes.cgroups, runtime,
                         cgroup_parent=boxes.prefix)
    m.sources = SOURCES
    try:
        c, out = run(m, replica(
            "echo $PW >> /out/result; cat /run/secrets/db/password >> /out/result; "
            "echo >> /out/result; touch /etc/app/x 2>/dev/null; echo config=$? >> /out/result",
            [pb.Volume(name="db", secret="db"), pb.Volume(name="conf", config="app")],
            [pb.VolumeMount(name="db", mount_path="/run/secrets/db"),
             pb.VolumeMount(name="conf", mount_path="/etc/app")],
            env=[pb.EnvVar(name="PW", value_from=pb.EnvSource(secret="db", key="password"))]))
        assert out == f"{SECRET}\n{SECRET}\nconfig=1\n"
        assert os.path.islink(os.path.join(c.bundle, "config.json"))
        remove(m, c)
    finally:
        for container in m.snapshot():
            m.stop(container, 0)
            m.teardown(container)
        runtime.close()
    assert procfs.mounts_mentioning(state) == []


def test_a_restarted_agent_adopts_the_volumes_and_its_teardown_leaves_nothing(manager, boxes):
    c, out = run(manager, replica(
        "echo x > /m/f && cat /run/secrets/db/password >> /out/result; sleep 30 & true",
        [pb.Volume(name="m", empty_dir=pb.EmptyDir(medium="Memory")),
         pb.Volume(name="db", secret="db")],
        [pb.VolumeMount(name="m", mount_path="/m"),
         pb.VolumeMount(name="db", mount_path="/run/secrets/db")]))
    assert out == SECRET
    # The agent restarts: a new manager on the same state dir finds the bundle.
    second = ContainerManager(os.path.dirname(manager.root), "knode", boxes.images,
                              boxes.cgroups, boxes.runtime, cgroup_parent=boxes.prefix,
                              id_ranges=manager.id_ranges)
    (adopted,) = second.adopt_all()
    assert adopted.id == c.id
    assert os.path.exists(os.path.join(c.bundle, volumes.VOLUMES_DIR, "m", "f"))
    manager.containers.clear()
    remove(second, adopted)
