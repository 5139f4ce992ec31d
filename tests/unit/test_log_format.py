"""--log-format json: one object per line, the same keys as the text format."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from mctl.common import logs


def _record(message: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("mctl.agent.node", level, __file__, 1, message, args, None)


def test_json_line_has_the_text_lines_keys():
    record = _record("container started container=%s replica=%s ms=%.1f",
                     "default_web-1", "default/web-1", 12.5)
    text = logs.formatter("agent", "n1", "text").format(record)
    entry = json.loads(logs.formatter("agent", "n1", "json").format(record))
    # What the text line holds, each under its key.
    m = re.match(r"(\S+) (\S+) (\S+) node=(\S+) (\S+): (.*)", text)
    assert m is not None
    assert (entry["time"], entry["level"], entry["component"], entry["node"], entry["logger"],
            entry["message"]) == m.groups()
    # And the message's key=value pairs as fields of their own.
    assert entry["container"] == "default_web-1"
    assert entry["replica"] == "default/web-1"
    assert entry["ms"] == "12.5"


def test_message_keys_never_replace_the_records_own():
    entry = json.loads(logs.formatter("agent", "n1", "json").format(
        _record("moved node=n2 level=x")))
    assert entry["node"] == "n1" and entry["level"] == "INFO"
    # A scheduler has no node of its own: the message's is lifted.
    entry = json.loads(logs.formatter("scheduler", "", "json").format(
        _record("replica=default/web-1 node=n2 rescheduled: node lost")))
    assert entry["node"] == "n2" and entry["replica"] == "default/web-1"


def test_one_line_per_record_even_with_newlines_and_tracebacks():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed:\n%s", ("two",),
                                   sys.exc_info())
    line = logs.formatter("scheduler", "", "json").format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed:\ntwo"
    assert "ValueError: bad\nthing" in entry["exception"]


def test_trailing_punctuation_is_not_part_of_a_value():
    assert logs.fields_of("workload=default/web: failed, node=n1; ok") == {
        "workload": "default/web", "node": "n1"}
    assert logs.fields_of("address=127.0.0.1:7070 tls=off") == {
        "address": "127.0.0.1:7070", "tls": "off"}


def test_configure_writes_json_lines_to_the_log_file(tmp_path: Path):
    path = tmp_path / "agent.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("agent", "n1", "INFO", str(path), fmt="json")
        logging.getLogger("mctl.agent").info("agent serving address=%s", "10.0.0.1:7071")
        logging.getLogger("mctl.agent").debug("not shown")
        for h in root.handlers:
            h.flush()
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["address"] == "10.0.0.1:7071"


def test_unknown_format_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--log-format"):
        logs.formatter("agent", "", "xml")
