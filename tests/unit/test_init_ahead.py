"""Which configs the container init forked ahead (spawn.InitAhead) may become.

The spare monitor forks its container's init before the request, in a new
pid namespace and with no cgroup yet; the init and the monitor each read
config.json and decide alike (spawn.fits_ahead) whether it is the
container's, or is ended for fork_init's other paths. The kernel side is in
tests/kernel/test_runtime_kernel.py and test_zygote_kernel.py.
"""

from __future__ import annotations

import pytest

from mctl.agent.runtime import zygote
from mctl.agent.runtime.oci.config import Config, Hooks, parse_config
from mctl.agent.runtime.spawn import fits_ahead

AGENT_LIKE = Config(("/bin/true",), namespace_paths={"network": "/run/netns/x"})


def test_the_agents_config_fits():
    # A network namespace joined by path is the agent's own (network.py).
    assert fits_ahead(AGENT_LIKE)
    assert fits_ahead(Config(("/bin/true",)))


@pytest.mark.parametrize("change, why", [
    ({"namespaces": ("network", "ipc", "uts", "mount", "cgroup")}, "no pid namespace"),
    ({"namespace_paths": {"pid": "/proc/1/ns/pid"}}, "a pid namespace joined"),
    ({"namespace_paths": {"mount": "/proc/1/ns/mnt"}}, "the cgroup made first"),
    ({"namespace_paths": {"cgroup": "/proc/1/ns/cgroup"}}, "the cgroup made first"),
    ({"namespaces": ("user", "pid", "mount")}, "a user namespace forks pid 1 itself"),
    ({"hooks": Hooks()}, "hooks need a runtime that runs them"),
    ({"sysctl": {"net.ipv4.ip_forward": "1"}}, "sysctls are checked first"),
    ({"apparmor_profile": "p"}, "LSM labels are checked first"),
    ({"selinux_label": "l"}, "LSM labels are checked first"),
])
def test_configs_fork_init_starts_do_not_fit(change, why):
    assert not fits_ahead(AGENT_LIKE.replace(**change)), why


def test_the_warm_up_config_parses_as_an_agent_config():
    # Its parse is what warms the spare and its init (zygote.serve); a config
    # that failed to parse would warm only the error path.
    config = parse_config(zygote.cjson.loads(zygote._representative_config(None)))
    assert fits_ahead(config)
    assert config.resources.memory_limit == 64 << 20
    assert config.seccomp is None


def test_the_warm_up_config_carries_the_default_seccomp_profile():
    # The agent's configs have it, and its cache lookup is most of a warm parse.
    profile = zygote.warm_seccomp()
    if profile is None:
        pytest.skip("no libseccomp on this machine")
    config = parse_config(zygote.cjson.loads(zygote._representative_config(profile)))
    assert config.seccomp is not None and config.seccomp.doc == profile.doc
