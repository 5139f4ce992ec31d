"""userns.py's host-side checks and the agent's default rlimits, without the kernel."""

from __future__ import annotations

import os
import shutil
import tempfile

from mctl.agent.bundle import config as bundle_config
from mctl.agent.runtime import userns
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import Config, IdMapping


def test_map_text_is_one_line_per_range():
    assert userns.map_text((IdMapping(0, 100000, 65536), IdMapping(65536, 5, 1))) == (
        "0 100000 65536\n65536 5 1\n")


def test_unavailable_when_turned_off(tmp_path, monkeypatch):
    knob = tmp_path / "max_user_namespaces"
    knob.write_text("0\n")
    monkeypatch.setattr(userns, "MAX_USER_NAMESPACES", str(knob))
    assert userns.unavailable() == f"user namespaces are turned off ({knob} is 0)"
    knob.write_text("15000\n")
    assert userns.unavailable() == ""


def test_unreachable_ancestor_names_the_first_closed_directory():
    # Under /tmp itself: pytest's own tmp_path sits in a 0700 directory.
    top = tempfile.mkdtemp(prefix="mctl-utest-")
    try:
        os.chmod(top, 0o755)
        outer = os.path.join(top, "outer")
        inner = os.path.join(outer, "inner")
        os.makedirs(inner)
        os.chmod(outer, 0o700)
        assert userns.unreachable_ancestor(os.path.join(inner, "rootfs")) == outer
        os.chmod(outer, 0o711)      # search, no listing: enough to pass through
        assert userns.unreachable_ancestor(os.path.join(inner, "rootfs")) == ""
    finally:
        shutil.rmtree(top)


def test_sysfs_comes_first_unless_the_container_makes_its_network_namespace():
    own = Config(args=("sh",), namespaces=("user", "network", "mount"))
    joined = Config(args=("sh",), namespaces=("user", "network", "mount"),
                    namespace_paths={"network": "/run/netns/x"})
    hosts = Config(args=("sh",), namespaces=("user", "mount"))
    assert [userns.needs_host_sysfs(c) for c in (own, joined, hosts)] == [False, True, True]


def status(tmp_path, capeff: int) -> str:
    path = tmp_path / "status"
    path.write_text(f"Name:\tx\nCapEff:\t{capeff:016x}\n")
    return str(path)


def test_default_rlimits_nofile_within_nr_open(tmp_path):
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("1048576\n")
    everything = status(tmp_path, (1 << 41) - 1)
    assert bundle_config.default_rlimits(str(nr_open), everything) == (
        oci.Rlimit("RLIMIT_NOFILE", 1 << 20, 1 << 20),)
    nr_open.write_text("4096\n")
    assert bundle_config.default_rlimits(str(nr_open), everything)[0].hard == 4096


def test_default_rlimits_without_cap_sys_resource_stay_within_the_agents(tmp_path, monkeypatch):
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("1048576\n")
    no_resource = status(tmp_path, ((1 << 41) - 1) & ~(1 << 24))
    monkeypatch.setattr(bundle_config.resource, "getrlimit", lambda which: (1024, 20000))
    assert bundle_config.default_rlimits(str(nr_open), no_resource) == (
        oci.Rlimit("RLIMIT_NOFILE", 20000, 20000),)
