"""Record, the runtime's start-path stand-in for frozen dataclasses, behaves as one."""

from __future__ import annotations

import pytest

from mctl.agent.runtime.oci.config import Config, Mount


def test_records_compare_hash_replace_and_stay_frozen():
    a = Mount("/proc", "proc", "proc", ("nosuid",))
    assert a == Mount("/proc", "proc", "proc", ("nosuid",))
    assert hash(a) == hash(Mount("/proc", "proc", "proc", ("nosuid",)))
    assert a != Mount("/sys", "proc", "proc", ("nosuid",))
    assert a.replace(destination="/sys") == Mount("/sys", "proc", "proc", ("nosuid",))
    assert repr(a) == "Mount(destination='/proc', type='proc', source='proc', options=('nosuid',))"
    with pytest.raises(AttributeError, match="replace"):
        a.destination = "/x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        a.replace(target="/x")
    config = Config(args=("sh",))
    changed = config.replace(hostname="box")
    assert (config.hostname, changed.hostname, changed.args) == ("", "box", ("sh",))
    assert config.namespace_paths is not Config(args=("sh",)).namespace_paths
