"""Mount namespace, propagation and version rules of config.json (issue 18).

Without a "mount" entry in linux.namespaces the rootfs is only chrooted
into: nothing may be mounted or pivoted in the caller's namespace, so
config.json's fields that need mounts are refused, naming the field.
"""

from __future__ import annotations

import copy
import os

import pytest

from mctl.agent.runtime import rootfs
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import ConfigError


def doc_without_mount_namespace() -> dict:
    doc = oci.to_json(oci.Config(args=("true",), mounts=(), masked_paths=(),
                                 readonly_paths=()))
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"]
                                  if ns["type"] != "mount"]
    return doc


def test_no_mount_namespace_without_mounts_is_accepted():
    config = oci.parse_config(doc_without_mount_namespace())
    assert "mount" not in config.namespaces
    assert config.mounts == ()


@pytest.mark.parametrize(("path", "value", "field"), [
    (("mounts",), [{"destination": "/proc", "type": "proc", "source": "proc"}], "mounts"),
    (("linux", "maskedPaths"), ["/proc/kcore"], "linux.maskedPaths"),
    (("linux", "readonlyPaths"), ["/proc/sys"], "linux.readonlyPaths"),
    (("root", "readonly"), True, "root.readonly"),
    (("linux", "rootfsPropagation"), "rslave", "linux.rootfsPropagation"),
])
def test_no_mount_namespace_refuses_what_needs_mounts(path, value, field):
    doc = copy.deepcopy(doc_without_mount_namespace())
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == field
    assert 'linux.namespaces has no "mount" entry' in str(info.value)


def test_enter_by_chroot_chroots_and_never_mounts_or_pivots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chdirs: list[str] = []
    monkeypatch.setattr(rootfs.os, "chdir", chdirs.append)
    fake = sc.RecordingSyscalls()
    rootfs.enter_by_chroot(fake, str(tmp_path))
    assert fake.calls == [("chroot", str(tmp_path))]
    assert chdirs == ["/"]


# -- propagation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "flags"), [
    ((), 0),
    (("rbind", "ro"), 0),
    (("shared",), sc.MS_SHARED),
    (("rshared",), sc.MS_SHARED | sc.MS_REC),
    (("rslave",), sc.MS_SLAVE | sc.MS_REC),
    (("private",), sc.MS_PRIVATE),
    (("runbindable",), sc.MS_UNBINDABLE | sc.MS_REC),
    (("shared", "rprivate"), sc.MS_PRIVATE | sc.MS_REC),   # the last one wins
])
def test_propagation_flags(options, flags):
    assert rootfs.propagation_flags(options) == flags


def test_propagation_options_are_never_mount_data():
    for opt in rootfs.PROPAGATION:
        assert rootfs.split_options((opt, "mode=755")) == (0, "mode=755")


def test_a_shared_mount_gets_a_second_call_for_its_propagation(tmp_path):
    fake = sc.RecordingSyscalls()
    m = oci.Mount("/mnt", "tmpfs", "tmpfs", ("nosuid", "rshared", "size=1m"))
    rootfs._mount_one(fake, str(tmp_path), m, oci.Config(args=("true",)))
    target = str(tmp_path / "mnt")
    assert fake.calls == [
        ("mount", "tmpfs", target, "tmpfs", sc.MS_NOSUID, "size=1m"),
        ("mount", "", target, "", sc.MS_SHARED | sc.MS_REC, ""),
    ]


def test_rootfs_propagation_parses_and_round_trips():
    doc = oci.to_json(oci.Config(args=("true",), rootfs_propagation="rshared"))
    assert doc["linux"]["rootfsPropagation"] == "rshared"
    assert oci.parse_config(doc).rootfs_propagation == "rshared"
    doc["linux"]["rootfsPropagation"] = "sideways"
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == "linux.rootfsPropagation"


def test_pivot_applies_rootfs_propagation_last(tmp_path, monkeypatch):
    monkeypatch.setattr(rootfs.os, "chdir", lambda path: None)
    fake = sc.RecordingSyscalls()
    rootfs.pivot(fake, str(tmp_path), False, "rshared")
    assert fake.calls[-1] == ("mount", "", "/", "", sc.MS_SHARED | sc.MS_REC, "")
    fake = sc.RecordingSyscalls()
    rootfs.pivot(fake, str(tmp_path), False)
    assert [c[0] for c in fake.calls] == ["pivot_root", "umount"]


@pytest.mark.parametrize(("propagation", "flags"), [
    ("", sc.MS_REC | sc.MS_PRIVATE), ("rshared", sc.MS_REC | sc.MS_PRIVATE),
    ("slave", sc.MS_REC | sc.MS_SLAVE), ("rslave", sc.MS_REC | sc.MS_SLAVE),
])
def test_prepare_keeps_the_root_private_or_slave_never_shared(tmp_path, monkeypatch,
                                                              propagation, flags):
    monkeypatch.setattr(rootfs, "_make_devices", lambda sys, root: None)
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), mounts=(oci.Mount("/dev", "tmpfs", "tmpfs"),),
                        rootfs_propagation=propagation)
    rootfs.prepare(fake, str(tmp_path), config)
    assert fake.calls[0] == ("mount", "", "/", "", flags, "")


# -- a cgroup mount without a cgroup namespace ---------------------------------------------------


V1_HOST = [("/sys/fs/cgroup/memory", "cgroup", "memory"),
           ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cpu,cpuacct"),
           ("/sys/fs/cgroup/devices", "cgroup", "devices"),
           ("/sys/fs/cgroup/unified", "cgroup2", "nsdelegate")]
OWN = {"memory": "/mctl/c1", "cpu,cpuacct": "/mctl/c1", "devices": "/",
       "": "/mctl/c1", "name=systemd": "/user.slice"}


def test_a_cgroup_mount_without_a_namespace_binds_the_containers_own_cgroups(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(rootfs, "_host_cgroup_mounts", lambda: V1_HOST)
    monkeypatch.setattr(rootfs, "_own_cgroup_paths", lambda: OWN)
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), namespaces=("pid", "mount"))
    m = oci.Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "ro"))
    rootfs._mount_one(fake, str(tmp_path), m, config)
    target = str(tmp_path / "sys/fs/cgroup")
    ro = sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV | sc.MS_RDONLY
    remount = sc.MS_BIND | sc.MS_REMOUNT | ro
    assert fake.calls == [
        ("mount", "tmpfs", target, "tmpfs", ro & ~sc.MS_RDONLY, "mode=755"),
        ("mount", "/sys/fs/cgroup/memory/mctl/c1", f"{target}/memory", "", sc.MS_BIND, ""),
        ("mount", "", f"{target}/memory", "", remount, ""),
        ("mount", "/sys/fs/cgroup/cpu,cpuacct/mctl/c1", f"{target}/cpu,cpuacct", "",
         sc.MS_BIND, ""),
        ("mount", "", f"{target}/cpu,cpuacct", "", remount, ""),
        ("mount", "/sys/fs/cgroup/unified/mctl/c1", f"{target}/unified", "", sc.MS_BIND, ""),
        ("mount", "", f"{target}/unified", "", remount, ""),
        ("mount", "tmpfs", target, "tmpfs", ro | sc.MS_REMOUNT, "mode=755"),
    ]


def test_a_cgroup_mount_without_a_namespace_on_cgroup2_binds_the_container_cgroup(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(rootfs, "_host_cgroup_mounts",
                        lambda: [("/sys/fs/cgroup", "cgroup2", "nsdelegate")])
    monkeypatch.setattr(rootfs, "_own_cgroup_paths", lambda: {"": "/mctl/c1"})
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), namespaces=("mount",))
    rootfs._mount_one(fake, str(tmp_path),
                      oci.Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("ro",)), config)
    target = str(tmp_path / "sys/fs/cgroup")
    assert fake.calls == [
        ("mount", "/sys/fs/cgroup/mctl/c1", target, "", sc.MS_BIND, ""),
        ("mount", "", target, "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY, ""),
    ]


# -- ociVersion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2", "1.0.2-dev", "1.1.0", "1.2.0",
                                     "1.2.1-rc.1"])
def test_supported_versions_are_accepted(version):
    doc = oci.to_json(oci.Config(args=("true",)))
    doc["ociVersion"] = version
    oci.parse_config(doc)


@pytest.mark.parametrize("version", ["0.6.0", "1.3.0", "2.0.0", "1.0", "one", ""])
def test_other_versions_are_refused_naming_the_field(version):
    doc = oci.to_json(oci.Config(args=("true",)))
    doc["ociVersion"] = version
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == "ociVersion"
    assert "1.0.x, 1.1.x or 1.2.x" in info.value.problem


# -- joining mount and pid namespaces by path ----------------------------------------------------


def test_a_joined_mount_namespace_is_treated_as_not_ours():
    doc = doc_without_mount_namespace()
    doc["linux"]["namespaces"].append({"type": "mount", "path": "/proc/1/ns/mnt"})
    config = oci.parse_config(doc)
    assert config.namespace_paths["mount"] == "/proc/1/ns/mnt"
    doc["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == "mounts"
    assert "joins one by path" in info.value.problem


def test_joining_a_pid_namespace_with_a_user_namespace_is_refused():
    doc = doc_without_mount_namespace()
    doc["linux"]["namespaces"] = [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "user"}]
    doc["linux"]["uidMappings"] = doc["linux"]["gidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 1}]
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == "linux.namespaces[0].path"


@pytest.mark.parametrize("kind", ["user", "cgroup"])
def test_joining_user_or_cgroup_namespaces_stays_refused(kind):
    doc = doc_without_mount_namespace()
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != kind]
    doc["linux"]["namespaces"].append({"type": kind, "path": f"/proc/1/ns/{kind}"})
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert "is not supported" in info.value.problem


def test_join_namespaces_opens_every_path_then_joins_mount_first(tmp_path):
    from mctl.agent.runtime import process

    for name in ("net", "mnt", "pid"):
        (tmp_path / name).write_text("")
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("sh",), namespaces=("network", "pid", "mount"),
                        namespace_paths={"network": str(tmp_path / "net"),
                                         "pid": str(tmp_path / "pid"),
                                         "mount": str(tmp_path / "mnt")})
    process.join_namespaces(fake, config)
    # The pid namespace is the forking parent's to join (spawn.py), not the init's.
    assert [(c[0], c[2]) for c in fake.calls] == [("setns", sc.CLONE_NEWNS),
                                                   ("setns", sc.CLONE_NEWNET)]


# -- linux.devices -------------------------------------------------------------------------------


def test_devices_parse_check_and_round_trip():
    doc = oci.to_json(oci.Config(args=("true",), devices=(
        oci.Device("/dev/fuse", "c", 10, 229, 0o666, 0, 0), oci.Device("/dev/pipe", "p"))))
    assert doc["linux"]["devices"] == [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666,
         "uid": 0, "gid": 0},
        {"path": "/dev/pipe", "type": "p"}]
    config = oci.parse_config(doc)
    assert config.devices[0] == oci.Device("/dev/fuse", "c", 10, 229, 0o666, 0, 0)


@pytest.mark.parametrize(("entry", "field"), [
    ({"path": "/etc/x", "type": "c", "major": 1, "minor": 3}, "linux.devices[0].path"),
    ({"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3}, "linux.devices[0].path"),
    ({"path": "/dev/x", "type": "x", "major": 1, "minor": 3}, "linux.devices[0].type"),
    ({"path": "/dev/x", "type": "c", "minor": 3}, "linux.devices[0].major"),
    ({"path": "/dev/x", "type": "p", "fileMode": 0o70000}, "linux.devices[0].fileMode"),
    ({"path": "/dev/x", "type": "p", "uid": -1}, "linux.devices[0].uid"),
])
def test_bad_devices_name_the_field(entry, field):
    doc = oci.to_json(oci.Config(args=("true",)))
    doc["linux"]["devices"] = [entry]
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    assert info.value.field_path == field


def test_a_device_is_the_hosts_node_bound_and_a_fifo_is_made(tmp_path):
    import stat

    host = next((p for p in ("/dev/kmsg", "/dev/tty0", "/dev/fuse") if os.path.exists(p)), None)
    if host is None:
        pytest.skip("no host character device besides the defaults")
    rdev = os.stat(host).st_rdev
    (tmp_path / "dev").mkdir()
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), devices=(
        oci.Device("/dev/null", "c", 1, 3),                 # a default: made already
        oci.Device("/dev/pipe", "p", file_mode=0o640),
        oci.Device(host, "c", os.major(rdev), os.minor(rdev))))
    rootfs.make_config_devices(fake, str(tmp_path), config)
    fifo = os.stat(tmp_path / "dev/pipe")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    target = str(tmp_path / host.lstrip("/"))
    assert fake.calls == [("mount", host, target, "", sc.MS_BIND, "")]


def test_a_device_the_host_lacks_is_refused_naming_the_entry(tmp_path):
    (tmp_path / "dev").mkdir()
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), devices=(oci.Device("/dev/nope-mctl", "c", 1, 99),))
    with pytest.raises(OSError, match=r"linux.devices\[0\] \(/dev/nope-mctl\): no such node"):
        rootfs.make_config_devices(fake, str(tmp_path), config)
    config = oci.Config(args=("true",), devices=(oci.Device("/dev/kmsg", "c", 1, 99),))
    with pytest.raises(OSError, match=r"is not c 1:99"):
        rootfs.make_config_devices(fake, str(tmp_path), config)
    assert fake.calls == []
