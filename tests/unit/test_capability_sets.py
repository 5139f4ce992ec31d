"""process.capabilities' five sets, and the ambient set raised last (issue 18).

Over the recording syscall seam: the order and values of capset(2) and
prctl(PR_CAP_AMBIENT_RAISE), and config.json's checks naming the field.
"""

from __future__ import annotations

import pytest

from mctl.agent.runtime import capabilities, privileges
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import ConfigError

NET = ["CAP_NET_BIND_SERVICE"]
BASE = ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]


def doc_with(caps: dict) -> dict:
    doc = oci.to_json(oci.Config(args=("true",)))
    doc["process"]["capabilities"] = caps
    return doc


def test_every_set_is_read_and_round_trips():
    config = oci.parse_config(doc_with({"bounding": BASE, "effective": NET, "permitted": BASE,
                                        "inheritable": NET, "ambient": NET}))
    assert config.capabilities == tuple(BASE)
    assert config.effective() == tuple(NET)
    assert config.permitted() == tuple(BASE)
    assert config.cap_inheritable == tuple(NET)
    assert config.cap_ambient == tuple(NET)
    assert oci.parse_config(oci.to_json(config)) == config


def test_a_set_not_given_is_empty_and_no_object_is_dockers_default():
    config = oci.parse_config(doc_with({"bounding": BASE}))
    assert config.effective() == config.permitted() == config.cap_ambient == ()
    doc = doc_with({})
    del doc["process"]["capabilities"]
    config = oci.parse_config(doc)
    assert config.effective() == tuple(oci.DEFAULT_CAPABILITIES)
    assert config.cap_inheritable == config.cap_ambient == ()


@pytest.mark.parametrize(("caps", "field", "words"), [
    ({"ambient": ["CAP_NOPE"]}, "process.capabilities.ambient[0]", "unknown capability"),
    ({"inheritable": "CAP_KILL"}, "process.capabilities.inheritable", "must be array"),
    ({"bounding": BASE, "permitted": ["CAP_KILL"], "ambient": NET},
     "process.capabilities.ambient[0]", "not in process.capabilities.permitted"),
    ({"bounding": ["CAP_KILL"], "permitted": NET, "ambient": NET},
     "process.capabilities.ambient[0]", "not in process.capabilities.bounding"),
])
def test_bad_sets_name_the_field(caps, field, words):
    with pytest.raises(ConfigError) as info:
        oci.parse_config(doc_with(caps))
    assert info.value.field_path == field
    assert words in info.value.problem


def test_ambient_is_raised_after_capset_with_inheritable_holding_it(monkeypatch):
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(privileges.os, name, lambda *a: None)
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), uid=1000, gid=1000, capabilities=tuple(BASE),
                        cap_effective=tuple(NET), cap_permitted=tuple(BASE),
                        cap_inheritable=(), cap_ambient=tuple(NET), no_new_privileges=True)
    privileges.drop_to(fake, config, 40)
    net = 1 << capabilities.CAPABILITIES["CAP_NET_BIND_SERVICE"]
    base = capabilities.mask_of(BASE)
    # Keep permitted across setuid, then the sets, then ambient, then no_new_privs.
    assert fake.calls[-4:] == [
        ("prctl", sc.PR_SET_KEEPCAPS, 1),
        ("capset", net, base, net),
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE,
         capabilities.CAPABILITIES["CAP_NET_BIND_SERVICE"]),
        ("prctl", sc.PR_SET_NO_NEW_PRIVS, 1),
    ]


def test_without_ambient_no_raise(monkeypatch):
    for name in ("setgroups", "setgid", "setuid"):
        monkeypatch.setattr(privileges.os, name, lambda *a: None)
    fake = sc.RecordingSyscalls()
    privileges.drop_to(fake, oci.Config(args=("true",), no_new_privileges=False), 40)
    keep = capabilities.mask_of(oci.DEFAULT_CAPABILITIES)
    assert fake.calls[-1] == ("capset", keep, keep, 0)
    assert not [c for c in fake.calls if c[:2] == ("prctl", sc.PR_CAP_AMBIENT)]


def test_replacing_the_bounding_set_carries_effective_and_permitted_along():
    config = oci.Config(args=("true",)).replace(capabilities=tuple(BASE))
    assert config.effective() == config.permitted() == tuple(BASE)

