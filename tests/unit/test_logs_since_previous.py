"""`mctl logs --since/--timestamps/--previous`: parsing, the reader's filter, the previous log."""

from __future__ import annotations

import argparse
import calendar
import os

import pytest

from mctl.agent import previouslog
from mctl.cli import logs as cli_logs
from mctl.common.containerlog import read
from mctl.v1 import control_pb2

T0 = calendar.timegm((2024, 1, 2, 3, 4, 0, 0, 0, 0))  # 2024-01-02T03:04:00Z


def line(second: int, text: str, stream: str = "stdout") -> bytes:
    return f"2024-01-02T03:04:{second:02d}.000000000Z {stream} F {text}\n".encode()


def write(path: str, *lines: bytes) -> None:
    with open(path, "wb") as f:
        f.write(b"".join(lines))


def lines_of(path: str, tail: int = -1, since_s: int = 0, follow: bool = False) -> list[bytes]:
    since = (T0 + since_s) * 1_000_000_000 if since_s else 0
    alive = iter([True, False])
    return [data for batch in read(path, tail, follow, lambda: next(alive, False),
                                   since_ns=since) for _, _, data in batch]


def test_since_keeps_lines_from_that_time_on_across_rotated_files(tmp_path):
    log = str(tmp_path / "container.log")
    write(log + ".1", line(1, "a"), line(2, "b"))
    write(log, line(3, "c"), line(4, "d", "stderr"), line(5, "e"))
    assert lines_of(log, since_s=2) == [b"b", b"c", b"d", b"e"]
    assert lines_of(log, since_s=6) == []
    assert lines_of(log) == [b"a", b"b", b"c", b"d", b"e"]


def test_tail_counts_only_lines_since(tmp_path):
    # As the kubelet: --since first, then the last N of what is left.
    log = str(tmp_path / "container.log")
    write(log + ".1", line(1, "a"), line(2, "b"))
    write(log, line(3, "c"), line(4, "d"))
    assert lines_of(log, tail=3, since_s=3) == [b"c", b"d"]
    assert lines_of(log, tail=1, since_s=1) == [b"d"]
    assert lines_of(log, tail=3, since_s=1, follow=True) == [b"b", b"c", b"d"]


def test_keep_previous_replaces_the_older_previous_and_moves_rotated_files(tmp_path):
    bundle = str(tmp_path)
    current = os.path.join(bundle, "container.log")
    previous = os.path.join(bundle, previouslog.PREVIOUS_LOG_FILE)
    write(previous, line(0, "first run"))
    write(previous + ".1", line(0, "first run, older"))
    write(current + ".1", line(1, "second run, older"))
    write(current, line(2, "second run"))
    assert previouslog.keep_previous(bundle)
    assert not os.path.exists(current) and not os.path.exists(current + ".1")
    assert lines_of(previous) == [b"second run, older", b"second run"]
    # Only two files now: the older previous' extra file did not survive either.
    assert sorted(os.listdir(bundle)) == ["previous.log", "previous.log.1"]


def test_a_run_without_a_log_keeps_the_previous_one(tmp_path):
    bundle = str(tmp_path)
    previous = os.path.join(bundle, previouslog.PREVIOUS_LOG_FILE)
    write(previous, line(0, "last run that wrote"))
    assert not previouslog.keep_previous(bundle)
    assert lines_of(previous) == [b"last run that wrote"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("90s", 90.0), ("250ms", 0.25),
    ("9" * 400 + "h", 1e12)])
def test_since_durations(text, seconds):
    since = cli_logs.parse_since(text)
    assert since.ago_seconds == seconds
    assert since.resolve(now_ns=10**19) == max(1, 10**19 - int(seconds * 1e9))


@pytest.mark.parametrize(("text", "unix_ns"), [
    ("2024-01-02T03:04:00Z", T0 * 10**9),
    ("2024-01-02T05:04:00.5+02:00", T0 * 10**9 + 500_000_000)])
def test_since_rfc3339(text, unix_ns):
    assert cli_logs.parse_since(text).resolve() == unix_ns


@pytest.mark.parametrize(("text", "problem"), [
    ("yesterday", "want a duration"), ("5", "want a duration"), ("5d", "want a duration"),
    ("0s", "longer than 0"), ("2024-01-02", "a date, a time and a zone"),
    ("2024-01-02T03:04:00", "a date, a time and a zone"),
    ("1969-12-31T23:59:59Z", "between 1970 and 2262"),
    ("9999-01-01T00:00:00Z", "between 1970 and 2262")])
def test_since_refused(text, problem):
    with pytest.raises(argparse.ArgumentTypeError, match=problem):
        cli_logs.parse_since(text)


def test_timestamps_are_rfc3339_nano_utc():
    args = argparse.Namespace(timestamps=True)
    stamped = cli_logs.stamp(args, control_pb2.LogLine(unix_ns=T0 * 10**9 + 7))
    assert stamped == b"2024-01-02T03:04:00.000000007Z "
    assert cli_logs.stamp(argparse.Namespace(timestamps=False), control_pb2.LogLine()) == b""
