"""config.json's process.rlimits and user namespace mappings: round trips and field errors."""

from __future__ import annotations

import json

import pytest

from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import Config, ConfigError, IdMapping, Rlimit

USERNS = Config(
    args=("sh",),
    namespaces=("user", *oci.DEFAULT_NAMESPACES),
    uid_mappings=(IdMapping(0, 100000, 65536),),
    gid_mappings=(IdMapping(0, 100000, 65536), IdMapping(65536, 300000, 10)),
    rlimits=(Rlimit("RLIMIT_NOFILE", 1024, 4096), Rlimit("RLIMIT_CORE", 0, 0)),
)


def doc_of(config: Config) -> dict:
    return json.loads(json.dumps(oci.to_json(config)))


def test_round_trip_through_json():
    doc = doc_of(USERNS)
    assert doc["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]
    # runc's spelling of the mappings.
    assert doc["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert doc["linux"]["namespaces"][0] == {"type": "user"}
    assert oci.parse_config(doc) == USERNS


def test_absent_fields_are_left_out():
    doc = doc_of(Config(args=("sh",)))
    assert "rlimits" not in doc["process"]
    assert "uidMappings" not in doc["linux"] and "gidMappings" not in doc["linux"]


def test_unlimited_is_the_largest_unsigned_value():
    doc = doc_of(USERNS)
    doc["process"]["rlimits"][0].update(soft=2**64 - 1, hard=2**64 - 1)
    assert oci.parse_config(doc).rlimits[0] == Rlimit("RLIMIT_NOFILE", 2**64 - 1, 2**64 - 1)


def rlimit_error(entry: object) -> ConfigError:
    doc = doc_of(Config(args=("sh",)))
    doc["process"]["rlimits"] = [{"type": "RLIMIT_AS", "soft": 1, "hard": 2}, entry]
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    return info.value


@pytest.mark.parametrize(("entry", "field", "problem"), [
    ("RLIMIT_NOFILE", "process.rlimits[1]", "must be object"),
    ({"soft": 1, "hard": 1}, "process.rlimits[1].type", "required"),
    ({"type": "RLIMIT_FILES", "soft": 1, "hard": 1}, "process.rlimits[1].type",
     "unknown rlimit 'RLIMIT_FILES'"),
    ({"type": "RLIMIT_AS", "soft": 1, "hard": 1}, "process.rlimits[1].type", "given twice"),
    ({"type": "RLIMIT_CORE", "soft": 1}, "process.rlimits[1].hard", "required"),
    ({"type": "RLIMIT_CORE", "soft": "1", "hard": 1}, "process.rlimits[1].soft", "must be int"),
    ({"type": "RLIMIT_CORE", "soft": -1, "hard": 1}, "process.rlimits[1].soft",
     "between 0 and"),
    ({"type": "RLIMIT_CORE", "soft": 1, "hard": 2**64}, "process.rlimits[1].hard",
     "between 0 and"),
    ({"type": "RLIMIT_CORE", "soft": 5, "hard": 4}, "process.rlimits[1].soft",
     "5 is above the hard limit 4"),
])
def test_bad_rlimit_names_the_field(entry, field, problem):
    err = rlimit_error(entry)
    assert err.field_path == field
    assert problem in err.problem


def mapping_error(mutate) -> ConfigError:
    doc = doc_of(USERNS)
    mutate(doc)
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc)
    return info.value


def _set(key, value):
    return lambda doc: doc["linux"].__setitem__(key, value)


def _entry(**changes):
    return lambda doc: doc["linux"]["uidMappings"][0].update(changes)


@pytest.mark.parametrize(("mutate", "field", "problem"), [
    (_set("uidMappings", []), "linux.uidMappings", "required with a user namespace"),
    (lambda d: d["linux"].pop("gidMappings"), "linux.gidMappings",
     "required with a user namespace"),
    (_set("uidMappings", {"containerID": 0}), "linux.uidMappings", "must be array"),
    (_set("uidMappings", [7]), "linux.uidMappings[0]", "must be object"),
    (_entry(hostID=None), "linux.uidMappings[0].hostID", "must be int"),
    (_entry(containerID=1), "linux.uidMappings", "must map the container's id 0"),
    (_entry(size=0), "linux.uidMappings[0].size", "at least 1"),
    (_entry(hostID=-3), "linux.uidMappings[0].hostID", "between 0 and"),
    (_entry(hostID=2**32 - 100, size=200), "linux.uidMappings[0].size", "runs past"),
    (lambda d: d["linux"].__setitem__("namespaces", [{"type": "pid"}]), "linux.uidMappings",
     "without a user namespace"),
    (lambda d: d["linux"]["namespaces"][0].__setitem__("path", "/proc/1/ns/user"),
     "linux.namespaces[0].path", "joining a user namespace is not supported"),
])
def test_bad_mapping_names_the_field(mutate, field, problem):
    err = mapping_error(mutate)
    assert err.field_path == field
    assert problem in err.problem
