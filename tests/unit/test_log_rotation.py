"""Container log rotation (containerlog_writer.LogWriter) and reading across it (containerlog.read).

The writer is the monitor's; the reader the agent's Logs call. Partial (P)
lines are joined back by the reader, within a file and across a rotation.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.agent.runtime.containerlog_writer import MAX_LINE, LogLimits, LogWriter
from mctl.common import containerlog
from mctl.common.containerlog import Joiner, parse_entry, read, rotated_paths

SIZE = 2 * MAX_LINE      # the smallest cap LogLimits allows


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(containerlog, "FOLLOW_POLL_SECONDS", 0.01)


def write_lines(path: str, lines: list[str], limits: LogLimits, stream: str = "stdout") -> None:
    writer = LogWriter(path, limits)
    try:
        for text in lines:
            writer.feed(stream, text.encode() + b"\n")
        writer.flush()
    finally:
        writer.close()


def collect(path: str, tail: int) -> list[str]:
    return [d.decode() for batch in read(path, tail, False, lambda: True) for _, _, d in batch]


def numbered(n: int, width: int = 100) -> list[str]:
    return [f"{i:06d} " + "x" * width for i in range(n)]


# -- the writer ---------------------------------------------------------------------------


def test_rotation_keeps_max_files_each_under_the_cap(tmp_path):
    path = str(tmp_path / "container.log")
    write_lines(path, numbered(2000), LogLimits(max_size=SIZE, max_files=3))
    files = rotated_paths(path)
    assert files == [f"{path}.2", f"{path}.1", path]
    assert all(os.path.getsize(f) <= SIZE for f in files)
    assert not os.path.exists(f"{path}.3")
    assert not os.path.exists(f"{path}.new")
    # The newest lines are all there, in order, oldest file first.
    kept = [parse_entry(raw)[3].decode() for f in files for raw in open(f, "rb").read().split(b"\n")
            if raw]
    assert kept == numbered(2000)[-len(kept):]
    assert sum(os.path.getsize(f) for f in files) > 2 * SIZE - 200   # really full files


def test_no_rotation_below_the_cap(tmp_path):
    path = str(tmp_path / "container.log")
    write_lines(path, numbered(10), LogLimits(max_size=SIZE, max_files=2))
    assert rotated_paths(path) == [path]


def test_a_restarted_container_appends_and_counts_what_is_there(tmp_path):
    path = str(tmp_path / "container.log")
    limits = LogLimits(max_size=SIZE, max_files=2)
    write_lines(path, numbered(200), limits)          # ~21 KiB: no rotation yet
    assert rotated_paths(path) == [path]
    write_lines(path, numbered(200), limits)          # together over the cap: rotates
    assert rotated_paths(path) == [f"{path}.1", path]
    assert os.path.getsize(f"{path}.1") <= SIZE


def test_a_line_over_max_line_is_split_and_rotation_keeps_parts_whole(tmp_path):
    path = str(tmp_path / "container.log")
    long = "y" * (3 * MAX_LINE + 10)
    write_lines(path, ["before", long, "after"], LogLimits(max_size=SIZE, max_files=4))
    raw = b"".join(open(f, "rb").read() for f in rotated_paths(path))
    tags = [parse_entry(r)[2] for r in raw.split(b"\n") if r]
    assert tags == ["F", "P", "P", "P", "F", "F"]
    assert collect(path, -1) == ["before", long, "after"]


@pytest.mark.parametrize(("size", "files"), [(100, 2), (2 * MAX_LINE - 1, 2), (SIZE, 1)])
def test_limits_refuse_what_cannot_work(size, files):
    with pytest.raises(ValueError, match="below"):
        LogLimits(max_size=size, max_files=files)


# -- reading: tail across files, partial lines joined ---------------------------------------


def test_tail_reads_back_through_rotated_files(tmp_path):
    path = str(tmp_path / "container.log")
    write_lines(path, numbered(1000), LogLimits(max_size=SIZE, max_files=3))
    everything = collect(path, -1)
    assert everything == numbered(1000)[-len(everything):]
    in_current = len(open(path, "rb").read().splitlines())
    # More lines than the current file holds: the older files are read too.
    assert collect(path, in_current + 5) == everything[-(in_current + 5):]
    assert collect(path, 3) == everything[-3:]
    assert collect(path, 0) == []


def test_partial_lines_are_joined_per_stream(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(
        b"2024-01-02T03:04:05.000000001Z stdout P hel\n"
        b"2024-01-02T03:04:05.000000002Z stderr F err line\n"
        b"2024-01-02T03:04:05.000000003Z stdout P lo \n"
        b"2024-01-02T03:04:05.000000004Z stdout F world\n"
        b"2024-01-02T03:04:05.000000005Z stdout F next\n")
    lines = [ln for batch in read(str(path), -1, False, lambda: True) for ln in batch]
    stamp = lines[1][0] - 1
    assert lines == [(stamp + 2, "stderr", b"err line"),
                     (stamp + 1, "stdout", b"hello world"),   # the time of its first part
                     (stamp + 5, "stdout", b"next")]
    # --tail counts whole lines.
    assert collect(str(path), 2) == ["hello world", "next"]


def test_a_partial_line_split_by_rotation_is_joined(tmp_path):
    path = str(tmp_path / "container.log")
    with open(f"{path}.1", "wb") as f:
        f.write(b"2024-01-02T03:04:05.1Z stdout F old\n"
                b"2024-01-02T03:04:05.2Z stdout P first half, \n")
    with open(path, "wb") as f:
        f.write(b"2024-01-02T03:04:05.3Z stdout F second half\n")
    assert collect(path, 1) == ["first half, second half"]
    assert collect(path, -1) == ["old", "first half, second half"]


def test_an_unfinished_line_is_shown_when_not_following(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(b"2024-01-02T03:04:05.1Z stdout F done\n"
                     b"2024-01-02T03:04:05.2Z stdout P still being wr\n")
    assert collect(str(path), -1) == ["done", "still being wr"]


def test_joiner_cuts_a_line_that_never_ends():
    joiner = Joiner()
    part = b"z" * MAX_LINE
    out = [joiner.push((i, "stdout", "P", part)) for i in range(200)]
    whole = [line for line in out if line is not None]
    assert whole and all(len(d) == containerlog.MAX_JOINED for _, _, d in whole)


# -- following across rotation -------------------------------------------------------------


class Follower:
    def __init__(self, path: str, tail: int) -> None:
        self.lines: list[str] = []
        self.started = threading.Event()
        self.stop = threading.Event()

        def alive() -> bool:
            self.started.set()
            return not self.stop.is_set()

        def run() -> None:
            for batch in read(path, tail, True, alive):
                self.lines.extend(d.decode() for _, _, d in batch)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.started.wait(3)

    def wait_for(self, last: str, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while last not in self.lines and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.lines

    def close(self) -> None:
        self.stop.set()
        self.thread.join(3)


# With a pause, a file is dropped only after ~60 ms, many polls: nothing may
# be lost. Without one, the writer may outrun the reader by whole files.
@pytest.mark.parametrize("pause", [0.0, 0.005])
def test_follow_sees_every_line_across_rotations(tmp_path, pause):
    path = str(tmp_path / "container.log")
    limits = LogLimits(max_size=SIZE, max_files=3)
    LogWriter(path, limits).close()
    follower = Follower(path, 0)
    writer = LogWriter(path, limits)
    lines = numbered(1500, width=60)
    try:
        for i, text in enumerate(lines):
            writer.feed("stdout", text.encode() + b"\n")
            if pause and i % 50 == 0:
                time.sleep(pause)
    finally:
        writer.close()
    assert len(rotated_paths(path)) == 3          # it did rotate, more than once
    got = follower.wait_for(lines[-1])
    follower.close()
    if pause:
        assert got == lines
    else:
        # Written faster than one poll: files dropped meanwhile are lost,
        # but what is shown is in order, once each, up to the last line.
        numbers = [int(line.split()[0]) for line in got]
        assert numbers == sorted(set(numbers))
        assert got[-1] == lines[-1]


def test_follow_joins_a_partial_line_across_a_rotation(tmp_path):
    path = str(tmp_path / "container.log")
    limits = LogLimits(max_size=SIZE, max_files=2)
    writer = LogWriter(path, limits)
    follower = Follower(path, 0)
    try:
        writer.feed("stdout", b"a" * (SIZE - 200))        # P parts, then a rotation
        writer.feed("stdout", b"b" * 300 + b"\nend\n")
    finally:
        writer.close()
    got = follower.wait_for("end")
    follower.close()
    assert got == ["a" * (SIZE - 200) + "b" * 300, "end"]


@settings(max_examples=examples(300), deadline=None)
@example(entries=[("stdout", True), ("stdout", False)], cuts=[], tail=1)
@example(entries=[("stdout", False), ("stderr", True), ("stdout", False), ("stdout", True)],
         cuts=[2], tail=1)
@given(entries=st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.booleans()),
                        min_size=1, max_size=40),
       cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=2),
       tail=st.integers(min_value=0, max_value=45))
def test_tail_is_the_end_of_reading_everything(tmp_path_factory, entries, cuts, tail):
    # Any interleaving of the two streams' parts (P) and ends (F), spread
    # over rotated files at any points: the last N lines are the last N of all.
    raw = [f"2024-01-02T03:04:{i % 60:02d}.{i:09d}Z {stream} {'F' if ends else 'P'} {stream}{i}\n"
           .encode() for i, (stream, ends) in enumerate(entries)]
    points = sorted({0, len(raw), *(c for c in cuts if c < len(raw))})
    pieces = [b"".join(raw[a:b]) for a, b in zip(points, points[1:], strict=False)]
    d = tmp_path_factory.mktemp("rot")
    path = str(d / "container.log")
    for age, piece in enumerate(reversed(pieces)):
        with open(path if age == 0 else f"{path}.{age}", "wb") as f:
            f.write(piece)
    everything = collect(path, -1)
    assert collect(path, tail) == (everything[-tail:] if tail else [])
