"""An imported image's defaults in a container's config.json, and how the spec overrides them.

As in Kubernetes (SPEC.md): `command` replaces the image's Entrypoint (and
its Cmd), `args` replace the Cmd; spec env and workingDir win over the
image's; the image's User is resolved in the image's own /etc/passwd.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.containers import ContainerError, ContainerManager  # noqa: E402
from mctl.agent.images.archive import import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402
from mctl.v1 import types_pb2  # noqa: E402

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nlog:x:40:app\n"


@pytest.fixture
def manager(tmp_path: Path) -> ContainerManager:
    store = ImageStore(str(tmp_path / "store"))
    for name, user in (("t/app:1", "app"), ("t/ghost:1", "ghost")):
        spec = ib.ImageSpec(
            layers=[ib.layer_tar([ib.file("etc/passwd", PASSWD), ib.file("etc/group", GROUP)])],
            name=name, entrypoint=["/bin/tool"], cmd=["--serve"],
            env=["PATH=/bin", "MODE=image", "KEEP=1"], working_dir="/app", user=user)
        import_archive(store, ib.write_tar(ib.docker_archive([spec]),
                                           str(tmp_path / f"{user}.tar")))
    # Only _config is used: no cgroups, runtime or network are touched.
    return ContainerManager(str(tmp_path / "state"), "node1", store, cgroups=None,
                            runtime=None, cgroup_parent="mctl/test", sys=object())


def config(manager: ContainerManager, tmp_path: Path, **spec):
    replica = types_pb2.Replica(metadata=types_pb2.ObjectMeta(name="r-bcdfg",
                                                              namespace="default"),
                                spec=types_pb2.WorkloadSpec(image="t/app:1", **spec))
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    return manager._config(replica, str(bundle))


def test_image_defaults(manager, tmp_path):
    c = config(manager, tmp_path)
    assert c.args == ("/bin/tool", "--serve")
    assert c.cwd == "/app"
    assert (c.uid, c.gid, c.additional_gids) == (1000, 1000, (40,))
    env = dict(e.split("=", 1) for e in c.env)
    assert (env["PATH"], env["MODE"], env["KEEP"]) == ("/bin", "image", "1")


def test_args_replace_cmd_and_keep_the_entrypoint(manager, tmp_path):
    assert config(manager, tmp_path, args=["--once"]).args == ("/bin/tool", "--once")


def test_command_replaces_entrypoint_and_cmd(manager, tmp_path):
    assert config(manager, tmp_path, command=["/bin/other"]).args == ("/bin/other",)
    assert config(manager, tmp_path, command=["/bin/other"], args=["-v"]).args == (
        "/bin/other", "-v")


def test_spec_env_and_working_dir_win(manager, tmp_path):
    c = config(manager, tmp_path, env=[types_pb2.EnvVar(name="MODE", value="spec")],
               working_dir="/srv")
    env = dict(e.split("=", 1) for e in c.env)
    assert (env["MODE"], env["KEEP"], c.cwd) == ("spec", "1", "/srv")


def test_an_image_user_missing_from_its_passwd_is_a_clear_error(manager, tmp_path):
    replica = types_pb2.Replica(metadata=types_pb2.ObjectMeta(name="r-x", namespace="default"),
                                spec=types_pb2.WorkloadSpec(image="t/ghost:1"))
    (tmp_path / "b").mkdir()
    with pytest.raises(ContainerError, match="image 't/ghost:1': image user 'ghost' is not in "
                                             "the image's /etc/passwd"):
        manager._config(replica, str(tmp_path / "b"))
