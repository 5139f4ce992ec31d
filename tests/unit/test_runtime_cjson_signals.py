"""cjson and signals, the start path's stand-ins for json and signal, behave as those do.

cjson drives CPython's `_json` directly (runtime/cjson.py says why); every
document here must read and write exactly as with `json`, errors included,
and the fallback to `json` must give the same answers. The cgroup hand-over
of spawn.py (the parent sends the files to join over a pipe) is checked
here without a kernel: process.join_cgroup on plain files.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from mctl.agent.runtime import cjson, process, signals
from mctl.agent.runtime.oci.config import Config

DOCUMENTS = [
    '{"a": [1, 2.5, -3e10, true, false, null, "x\\u00e9\\n\\ud83d\\ude00"], "b": {}}',
    " [] ", '"s"', "1", "-0", "1e400", "NaN", "[Infinity, -Infinity]", '{"a": 1, "a": 2}',
    # Errors: trailing data, nothing, a cut document, a raw control character,
    # a trailing comma, a byte order mark in a str, a lone surrogate escape.
    '{"a": 1} x', "", "  ", '{"a":', '"\x01"', "[1,]", "\ufeff{}", '"\\ud800"', "[1 2]",
]


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", repr(fn(*args)))
    except ValueError as e:
        return ("error", type(e).__name__, str(e))


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_loads_reads_as_json_does(doc: str) -> None:
    assert outcome(cjson.loads, doc) == outcome(json.loads, doc)
    assert outcome(cjson.loads, doc.encode()) == outcome(json.loads, doc.encode())


def test_loads_bytes_as_json_does_with_bom_and_utf16() -> None:
    for data in (b'\xef\xbb\xbf{"a": 1}', b"\xef\xbb\xbf", '{"é": 1}'.encode("utf-16"),
                 '[1]'.encode("utf-16-le"), b"\xff"):
        assert outcome(cjson.loads, data) == outcome(json.loads, data), data


OBJECTS = [{"a": [1, 2.5, float("nan"), float("-inf"), True, None, "é\n\"\x7f", {"k": []}]},
           [], "x", 3, -0.0, {1: 2, 2.5: "f", False: None, None: 1}, {"a": (1, 2)}, [[[]]]]


@pytest.mark.parametrize("obj", OBJECTS)
def test_dumps_writes_as_json_does(obj: object) -> None:
    assert cjson.dumps(obj) == json.dumps(obj)
    assert cjson.dumps(obj, compact=True) == json.dumps(obj, separators=(",", ":"))


def test_dumps_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        cjson.dumps({"a": {1}})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        cjson.dumps(loop)


def test_without_the_c_module_json_does_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cjson, "_scan", None)
    monkeypatch.setattr(cjson, "_make_encoder", None)
    for doc in DOCUMENTS:
        assert outcome(cjson.loads, doc) == outcome(json.loads, doc)
    for obj in OBJECTS:
        assert cjson.dumps(obj, compact=True) == json.dumps(obj, separators=(",", ":"))


def test_signal_numbers_are_the_signal_modules() -> None:
    names = [n for n in dir(signals) if n.startswith("SIG")]
    assert {"SIG_DFL", "SIG_IGN", "SIGKILL", "SIGTERM", "SIGPIPE", "SIGWINCH"} <= set(names)
    for name in names:
        assert getattr(signals, name) == int(getattr(signal, name)), name


def test_set_handler_sets_a_disposition() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    try:
        signals.set_handler(signals.SIGUSR2, signals.SIG_IGN)
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_cgroup_is_made_later_unless_paths_or_a_user_namespace_decide_where() -> None:
    assert process.cgroup_later(Config(args=("sh",)))
    assert process.cgroup_later(Config(args=("sh",), namespace_paths={"network": "/n"}))
    for joined in ("mount", "cgroup"):
        assert not process.cgroup_later(Config(args=("sh",), namespace_paths={joined: "/x"}))
    with_user = Config(args=("sh",)).replace(namespaces=(*Config(args=("sh",)).namespaces, "user"))
    assert not process.cgroup_later(with_user)


def test_join_cgroup_reads_the_files_from_the_pipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = [tmp_path / "cpu-tasks", tmp_path / "memory-tasks"]
    for f in files:
        f.write_text("")
    r, w = os.pipe()
    os.write(w, "\n".join(str(f) for f in files).encode())
    os.close(w)
    process.join_cgroup(r)
    assert [f.read_text() for f in files] == ["0", "0"]
    with pytest.raises(OSError, match="bad fd|Bad file descriptor"):
        os.fstat(r)   # read to its end and closed


def test_join_cgroup_fails_when_the_parent_sent_nothing() -> None:
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(OSError, match="made no cgroup"):
        process.join_cgroup(r)
