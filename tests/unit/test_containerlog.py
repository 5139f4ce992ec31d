"""CRI container logs: parse_line, and read with tail and follow."""

from __future__ import annotations

import calendar
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.common import containerlog
from mctl.common.containerlog import parse_line, read

T0 = calendar.timegm((2024, 1, 2, 3, 4, 5, 0, 0, 0))  # 2024-01-02T03:04:05Z


def line(i: int, stream: str = "stdout", tag: str = "F", data: str | None = None) -> bytes:
    text = f"line {i}" if data is None else data
    return f"2024-01-02T03:04:{i % 60:02d}.{i:09d}Z {stream} {tag} {text}\n".encode()


# -- parse_line ------------------------------------------------------------------


def test_parse_full_line():
    assert parse_line(b"2024-01-02T03:04:05.123456789Z stdout F hello world\n") == (
        T0 * 1_000_000_000 + 123_456_789, "stdout", b"hello world")


def test_parse_partial_line():
    assert parse_line(b"2024-01-02T03:04:05.000000001Z stderr P part of a long") == (
        T0 * 1_000_000_000 + 1, "stderr", b"part of a long")


def test_parse_keeps_spaces_in_data():
    assert parse_line(b"2024-01-02T03:04:05.0Z stdout F   a  b ")[2] == b"  a  b "


@pytest.mark.parametrize(("raw", "data"), [
    (b"2024-01-02T03:04:05.5Z stdout F", b""),
    (b"2024-01-02T03:04:05.5Z stdout F \n", b""),
])
def test_parse_empty_data(raw, data):
    assert parse_line(raw) == (T0 * 1_000_000_000 + 500_000_000, "stdout", data)


def test_parse_short_fraction_and_none():
    assert parse_line(b"2024-01-02T03:04:05.5Z stdout F x")[0] == T0 * 10**9 + 5 * 10**8
    assert parse_line(b"2024-01-02T03:04:05Z stdout F x")[0] == T0 * 10**9
    # More than nanosecond precision is cut, not rounded.
    assert parse_line(b"2024-01-02T03:04:05.1234567899Z stdout F x")[0] == T0 * 10**9 + 123456789


def test_parse_binary_data():
    assert parse_line(b"2024-01-02T03:04:05.0Z stdout F \xff\x00\xfe")[2] == b"\xff\x00\xfe"


@pytest.mark.parametrize("raw", [
    b"",
    b"\n",
    b"hello",
    b"hello world",
    b"not-a-time stdout F hello",
    b"2024-13-45T03:04:05.0Z stdout F bad date",
    b"2024-01-02 03:04:05.0Z stdout F space in stamp",
    b"2024-01-02T03:04:05.abcZ stdout F bad fraction",
])
def test_parse_bad_lines(raw):
    assert parse_line(raw) is None


# -- read: tail ---------------------------------------------------------------------


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(b"".join(line(i) for i in range(10)))
    return str(path)


def collect(path, tail, follow=False, alive=lambda: True):
    return [entry for batch in read(path, tail, follow, alive) for entry in batch]


def datas(entries):
    return [e[2].decode() for e in entries]


def test_tail_all(log_file):
    assert datas(collect(log_file, -1)) == [f"line {i}" for i in range(10)]


def test_tail_zero_gives_nothing(log_file):
    assert collect(log_file, 0) == []


@pytest.mark.parametrize("n", [1, 3, 10, 50])
def test_tail_n(log_file, n):
    assert datas(collect(log_file, n)) == [f"line {i}" for i in range(10)][-n:]


def test_tail_skips_bad_lines(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(line(1) + b"garbage\n" + line(2, "stderr"))
    entries = collect(str(path), -1)
    assert [(e[1], e[2]) for e in entries] == [("stdout", b"line 1"), ("stderr", b"line 2")]


def test_missing_file_yields_nothing(tmp_path):
    assert collect(str(tmp_path / "nope.log"), -1, follow=True) == []


def test_batches_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(containerlog, "BATCH", 4)
    path = tmp_path / "container.log"
    path.write_bytes(b"".join(line(i) for i in range(10)))
    batches = list(read(str(path), -1, False, lambda: True))
    assert [len(b) for b in batches] == [4, 4, 2]


# -- read: follow -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(containerlog, "FOLLOW_POLL_SECONDS", 0.01)


class Follower:
    """Runs read(..., follow=True) in a thread and collects what it yields."""

    def __init__(self, path, tail, alive=lambda: True):
        self.entries = []
        self.done = threading.Event()
        # Set at the first alive() call: the initial tail is read, following began.
        self.following = threading.Event()
        self.error = None

        def alive_and_ready():
            self.following.set()
            return alive()

        def run():
            try:
                for batch in read(path, tail, True, alive_and_ready):
                    self.entries.extend(batch)
            except BaseException as e:  # noqa: BLE001 - surfaced by the test
                self.error = e
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.following.wait(3.0), "read() never started following"

    def wait_for(self, count, timeout=3.0):
        deadline = time.monotonic() + timeout
        while len(self.entries) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return datas(self.entries)


def append(path, data: bytes):
    with open(path, "ab") as f:
        f.write(data)


def test_follow_picks_up_appended_lines_and_ends_on_removal(log_file):
    f = Follower(log_file, 2)
    assert f.wait_for(2) == ["line 8", "line 9"]
    append(log_file, line(10) + line(11, "stderr"))
    assert f.wait_for(4) == ["line 8", "line 9", "line 10", "line 11"]
    assert f.entries[-1][1] == "stderr"
    assert not f.done.is_set()  # still following
    os.unlink(log_file)
    assert f.done.wait(3.0), "follow did not end when the log was removed"
    assert f.error is None


def test_follow_from_tail_zero_sees_only_new_lines(log_file):
    f = Follower(log_file, 0)
    append(log_file, line(42))
    assert f.wait_for(1) == ["line 42"]
    os.unlink(log_file)
    assert f.done.wait(3.0)


def test_follow_joins_a_line_written_in_pieces(log_file):
    f = Follower(log_file, 0)
    raw = line(7, data="split across writes")
    append(log_file, raw[:20])
    time.sleep(0.1)  # several polls see only the first piece
    assert f.entries == []
    append(log_file, raw[20:])
    assert f.wait_for(1) == ["split across writes"]
    os.unlink(log_file)
    assert f.done.wait(3.0)


def test_follow_with_a_thread_appending(log_file):
    stop = threading.Event()

    def writer():
        for i in range(100, 130):
            if stop.is_set():
                return
            append(log_file, line(i))
            time.sleep(0.005)

    f = Follower(log_file, 0)
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    try:
        assert f.wait_for(30) == [f"line {i}" for i in range(100, 130)]
    finally:
        stop.set()
        w.join(3.0)
    os.unlink(log_file)
    assert f.done.wait(3.0)


def test_follow_ends_when_alive_goes_false(log_file):
    alive = threading.Event()
    alive.set()
    f = Follower(log_file, -1, alive=alive.is_set)
    assert len(f.wait_for(10)) == 10
    time.sleep(0.05)
    assert not f.done.is_set()
    alive.clear()
    assert f.done.wait(3.0), "follow did not end when alive() turned false"
    assert os.path.exists(log_file)


def test_no_follow_returns_at_end(log_file):
    start = time.monotonic()
    assert len(collect(log_file, -1, follow=False)) == 10
    assert time.monotonic() - start < 1.0


# -- the monitor's writer, read back -------------------------------------------------------
#
# The monitor (agent/runtime/monitor.py) writes what this module reads; a line
# longer than MAX_LINE is written in parts tagged P, the last part F, however
# the container's output happened to be chunked by the pipe.


def written(tmp_path, chunks, name="w.log"):
    from mctl.agent.runtime.containerlog_writer import LogWriter

    path = tmp_path / name
    writer = LogWriter(str(path))
    try:
        for stream, data in chunks:
            writer.feed(stream, data)
        writer.flush()
    finally:
        os.close(writer.fd)
    raw = path.read_bytes().splitlines()
    return [(r.split(b" ", 3)[1].decode(), r.split(b" ", 3)[2].decode(), parse_line(r)[2])
            for r in raw]


def test_writer_full_lines_and_flush(tmp_path):
    assert written(tmp_path, [("stdout", b"a\nb"), ("stderr", b"e1\n"), ("stdout", b"c\nd")]) == [
        ("stdout", "F", b"a"), ("stderr", "F", b"e1"), ("stdout", "F", b"bc"),
        ("stdout", "F", b"d")]


@pytest.mark.parametrize("chunk", [1, 1000, 16384, 16385, 40001, 65536])
def test_writer_splits_long_lines_whatever_the_chunking(tmp_path, chunk):
    from mctl.agent.runtime.containerlog_writer import MAX_LINE

    data = b"a" * (2 * MAX_LINE + 7232) + b"\nshort\n"
    chunks = [("stdout", data[i:i + chunk]) for i in range(0, len(data), chunk)]
    assert written(tmp_path, chunks) == [
        ("stdout", "P", b"a" * MAX_LINE), ("stdout", "P", b"a" * MAX_LINE),
        ("stdout", "F", b"a" * 7232), ("stdout", "F", b"short")]


@settings(max_examples=examples(60), deadline=None)
@given(lines=st.lists(st.integers(min_value=0, max_value=40_000), min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=120_000), max_size=6))
def test_writer_output_does_not_depend_on_chunking(tmp_path_factory, lines, cuts):
    from mctl.agent.runtime.containerlog_writer import MAX_LINE

    data = b"".join(b"x" * n + b"\n" for n in lines)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [("stdout", data[a:b]) for a, b in zip(points, points[1:], strict=False)]
    tmp = tmp_path_factory.mktemp("w")
    got = written(tmp, chunks)
    expected = []
    for n in lines:
        rest = n
        while rest > MAX_LINE:
            expected.append(("stdout", "P", b"x" * MAX_LINE))
            rest -= MAX_LINE
        expected.append(("stdout", "F", b"x" * rest))
    assert got == expected
