"""The runtime's start-path stand-ins for json, signal and dataclasses behave as those do."""

from __future__ import annotations

import json
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mctl.agent.runtime import lightjson, signals
from mctl.agent.runtime.oci import Config, Mount

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(documents)
def test_lightjson_matches_json(doc):
    text = json.dumps(doc)
    assert lightjson.dumps(doc) == text
    assert lightjson.loads(text) == doc
    assert lightjson.loads(f" \n{text}\t".encode()) == doc


@pytest.mark.parametrize("text", ["", "   ", "{", "[1,]", "1 2", '{"a": }', "nul", '"\\x"'])
def test_lightjson_refuses_what_json_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        lightjson.loads(text)


def test_lightjson_refuses_what_json_cannot_write():
    with pytest.raises(TypeError, match="set"):
        lightjson.dumps({"a": {1, 2}})


def test_signals_are_the_signal_modules():
    for name in ("SIGTERM", "SIGKILL", "SIGCHLD", "SIGPIPE", "SIGWINCH", "NSIG", "SIG_DFL"):
        assert int(getattr(signals, name)) == int(getattr(signal, name))


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
