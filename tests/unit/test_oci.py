"""oci.parse_config / load_config: the bundle contract, checked field by field.

Every bad field must fail before any kernel state exists, with a ConfigError
whose field_path (and message) names the field, so a user can fix config.json
without reading the runtime.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import Config, ConfigError, Mount, Resources


def full_config() -> Config:
    """A config with every field away from its default."""
    return Config(
        args=("/bin/sh", "-c", "echo hi"),
        env=("PATH=/bin", "A=b=c"),
        cwd="/work",
        uid=1000,
        gid=1001,
        additional_gids=(10, 20),
        no_new_privileges=True,
        capabilities=("CAP_CHOWN", "CAP_KILL"),
        terminal=True,
        root_path="rootfs",
        root_readonly=True,
        hostname="box",
        mounts=tuple(oci.default_mounts()) + (
            Mount("/etc/hosts", "bind", "/tmp/hosts", ("bind", "ro")),
        ),
        namespaces=("pid", "network", "mount", "ipc", "uts", "cgroup"),
        cgroups_path="/mctl/node1/default_web",
        resources=Resources(memory_limit=64 << 20, memory_swap=64 << 20,
                            cpu_quota=50_000, cpu_period=100_000, pids_limit=32),
        masked_paths=("/proc/kcore",),
        readonly_paths=("/proc/sys",),
        annotations={"mctl.replica": "web-1", "mctl.node": "n1"},
    )


def valid_doc() -> dict:
    return oci.to_json(full_config())


def error_for(doc: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    return info.value


# -- valid documents -----------------------------------------------------------


def test_full_config_round_trips_through_to_json():
    config = full_config()
    # Through real JSON text, as a runtime reads it.
    doc = json.loads(json.dumps(oci.to_json(config)))
    assert oci.parse_config(doc) == config


def test_default_config_round_trips():
    config = Config(args=("sh",), mounts=tuple(oci.default_mounts()))
    assert oci.parse_config(json.loads(json.dumps(oci.to_json(config)))) == config


def test_write_then_load_config(tmp_path):
    config = full_config()
    oci.write_config(str(tmp_path), config)
    assert oci.load_config(str(tmp_path)) == config
    # Atomic write: no temporary file is left next to config.json.
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_minimal_document_gets_defaults():
    config = oci.parse_config({"process": {"args": ["true"]}, "root": {"path": "rootfs"}})
    assert config.args == ("true",)
    assert config.cwd == "/"
    assert config.uid == config.gid == 0
    assert config.capabilities == tuple(oci.DEFAULT_CAPABILITIES)
    assert config.namespaces == ()
    assert config.resources == Resources()
    assert config.rootfs("/b") == "/b/rootfs"


def test_to_json_writes_capabilities_in_every_set():
    caps = oci.to_json(full_config())["process"]["capabilities"]
    assert caps == {k: ["CAP_CHOWN", "CAP_KILL"] for k in ("bounding", "effective", "permitted")}


def test_to_json_leaves_out_unset_resources():
    # Only the deny-all device rule, always there for runc and crun.
    assert oci.to_json(Config(args=("sh",)))["linux"]["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}]}


def test_namespace_paths_round_trip():
    config = Config(args=("sh",), namespaces=("pid", "network", "mount"),
                    namespace_paths={"network": "/run/netns/mctl-x"})
    doc = json.loads(json.dumps(oci.to_json(config)))
    assert doc["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "network", "path": "/run/netns/mctl-x"}, {"type": "mount"}]
    assert oci.parse_config(doc) == config


def test_namespace_flags_leave_joined_namespaces_out():
    from mctl.agent.runtime import process
    from mctl.agent.runtime import syscalls as sc
    joined = Config(args=("sh",), namespaces=("pid", "network", "uts"),
                    namespace_paths={"network": "/run/netns/x"})
    assert process.namespace_flags(joined) == sc.CLONE_NEWUTS
    fresh = Config(args=("sh",), namespaces=("pid", "network", "uts"))
    assert process.namespace_flags(fresh) == sc.CLONE_NEWUTS | sc.CLONE_NEWNET


def test_join_namespaces_setns_each_path(tmp_path):
    from mctl.agent.runtime import process
    from mctl.agent.runtime import syscalls as sc
    ns_file = tmp_path / "net"
    ns_file.write_text("")
    fake = sc.RecordingSyscalls()
    process.join_namespaces(fake, Config(args=("sh",), namespaces=("network", "ipc"),
                                         namespace_paths={"network": str(ns_file)}))
    assert [(c[0], c[2]) for c in fake.calls] == [("setns", sc.CLONE_NEWNET)]


# -- bad documents: each names its field ---------------------------------------


def mutate(path: str, value: object, *, delete: bool = False) -> dict:
    """valid_doc() with the dotted `path` (list indexes as numbers) set or deleted."""
    doc = copy.deepcopy(valid_doc())
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key = int(last) if last.isdigit() else last
    if delete:
        del node[key]
    else:
        node[key] = value
    return doc


BAD_FIELDS = [
    # (mutation path, new value or DELETE, expected field path, words in the problem)
    ("process.args", None, "process.args", "required"),
    ("process.args", [], "process.args", "must not be empty"),
    ("process.args", "sh -c true", "process.args", "must be array"),
    ("process.args", ["sh", 3], "process.args[1]", "must be string"),
    ("process.cwd", "work", "process.cwd", "not an absolute path"),
    ("process.cwd", 7, "process.cwd", "must be string"),
    ("process.env", "PATH=/bin", "process.env", "must be array"),
    ("process.env", ["A=1", None], "process.env[1]", "must be string"),
    ("process.user", [0, 0], "process.user", "must be object"),
    ("process.user.uid", "0", "process.user.uid", "must be int"),
    ("process.user.uid", True, "process.user.uid", "must be int"),
    ("process.user.uid", -1, "process.user.uid", "must not be negative"),
    ("process.user.gid", -5, "process.user.gid", "must not be negative"),
    ("process.user.additionalGids", 10, "process.user.additionalGids", "must be array"),
    ("process.user.additionalGids", [10, "wheel"], "process.user.additionalGids[1]",
     "must be a non-negative int"),
    ("process.user.additionalGids", [True], "process.user.additionalGids[0]",
     "must be a non-negative int"),
    ("process.user.additionalGids", [-1], "process.user.additionalGids[0]",
     "must be a non-negative int"),
    ("process.noNewPrivileges", "yes", "process.noNewPrivileges", "must be bool"),
    ("process.terminal", 1, "process.terminal", "must be bool"),
    ("process.capabilities", ["CAP_KILL"], "process.capabilities", "must be object"),
    ("process.capabilities.bounding", [1], "process.capabilities.bounding[0]",
     "must be string"),
    ("process", None, "process", "required"),
    ("process", [], "process", "must be object"),
    ("root.path", None, "root.path", "required"),
    ("root.path", 1, "root.path", "must be string"),
    ("root.readonly", "true", "root.readonly", "must be bool"),
    ("root", None, "root", "required"),
    ("hostname", 5, "hostname", "must be string"),
    ("mounts", {}, "mounts", "must be array"),
    ("mounts.0", "proc", "mounts[0]", "must be object"),
    ("mounts.0.destination", "proc", "mounts[0].destination", "not an absolute path"),
    ("mounts.0.destination", None, "mounts[0].destination", "required"),
    ("mounts.1.options", "nosuid", "mounts[1].options", "must be array"),
    ("mounts.2.type", 1, "mounts[2].type", "must be string"),
    ("linux", "x", "linux", "must be object"),
    ("linux.namespaces.1.type", "time", "linux.namespaces[1].type", "'time' is not one of"),
    ("linux.namespaces.1.type", "pid", "linux.namespaces[1].type", "'pid' is given twice"),
    ("linux.namespaces.1.type", None, "linux.namespaces[1].type", "required"),
    ("linux.namespaces.2", "ipc", "linux.namespaces[2]", "must be object"),
    # pid and mount namespaces may be joined since issue 18; user and cgroup may not.
    ("linux.namespaces.0", {"type": "user", "path": "/proc/1/ns/user"},
     "linux.namespaces[0].path", "joining a user namespace is not supported"),
    ("linux.namespaces.1.path", "run/netns/x", "linux.namespaces[1].path",
     "not an absolute path"),
    ("linux.namespaces.1.path", 7, "linux.namespaces[1].path", "must be string"),
    ("linux.cgroupsPath", 3, "linux.cgroupsPath", "must be string"),
    ("linux.resources.memory.limit", "64Mi", "linux.resources.memory.limit", "must be int"),
    ("linux.resources.cpu", 2, "linux.resources.cpu", "must be object"),
    ("linux.resources.pids.limit", 1.5, "linux.resources.pids.limit", "must be int"),
    ("linux.maskedPaths", "/proc/kcore", "linux.maskedPaths", "must be array"),
    ("annotations", ["a"], "annotations", "must be object"),
]


@pytest.mark.parametrize(("path", "value", "field", "problem"), BAD_FIELDS,
                         ids=[f"{p}={v!r}" for p, v, _, _ in BAD_FIELDS])
def test_bad_field_names_the_field(path, value, field, problem):
    doc = mutate(path, value, delete=value is None)
    err = error_for(doc)
    assert err.field_path == field
    assert problem in err.problem
    assert str(err).startswith(f"config.json: {field}: ")


@pytest.mark.parametrize("doc", [None, [], "config", 3, True])
def test_non_object_document(doc):
    err = error_for(doc)
    assert err.field_path == "config.json"
    assert "must be a JSON object" in str(err)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -- load_config: the file itself ------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        oci.load_config(str(tmp_path))
    assert info.value.field_path == "config.json"
    assert "not found" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_unreadable_file_is_a_directory(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError) as info:
        oci.load_config(str(tmp_path))
    assert info.value.field_path == "config.json"
    assert "cannot be read" in str(info.value)


def test_unreadable_file_without_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads a mode-000 file anyway")
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot be read"):
        oci.load_config(str(tmp_path))


@pytest.mark.parametrize("text", ["", "{", "{'process': 1}", "\xff\xfe"])
def test_invalid_json(tmp_path, text):
    (tmp_path / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        oci.load_config(str(tmp_path))
    assert info.value.field_path == "config.json"
    assert "cannot be read" in str(info.value)


def test_load_config_checks_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(mutate("process.cwd", "rel")))
    with pytest.raises(ConfigError) as info:
        oci.load_config(str(tmp_path))
    assert info.value.field_path == "process.cwd"
    assert "'rel'" in str(info.value)
