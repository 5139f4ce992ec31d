"""process.rlimits through the real native runtime, `mctl exec` and a user namespace.

Needs root. The limits are read back from inside with the shell's ulimit
and from the host in /proc/PID/limits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from boxes import Box, Boxes

from mctl.agent.bundle.config import default_rlimits
from mctl.agent.runtime import userns
from mctl.agent.runtime.api import StartError
from mctl.agent.runtime.oci import config as oci

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

# Below any limit this test process has, so setting them needs no privilege
# and differs from what the container would inherit.
LIMITS = (oci.Rlimit("RLIMIT_NOFILE", 500, 700), oci.Rlimit("RLIMIT_CORE", 0, 0),
          oci.Rlimit("RLIMIT_NPROC", 300, 400))
SHOW = "ulimit -Sn; ulimit -Hn; ulimit -c; ulimit -Su; ulimit -Hu"


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("rlimit")
    try:
        yield b
    finally:
        assert b.close() == {}


@pytest.fixture
def made(boxes: Boxes) -> Iterator[list[Box]]:
    boxes_made: list[Box] = []
    yield boxes_made
    for box in boxes_made:
        boxes.teardown(box)


def limits_of(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits as {"Max open files": (soft, hard)}."""
    with open(f"/proc/{pid}/limits") as f:
        rows = f.read().splitlines()[1:]
    return {row[:26].strip(): tuple(row[26:].split()[:2]) for row in rows}


def test_configured_limits_are_set_before_exec(boxes, made):
    box = boxes.run(f"{SHOW}; sleep 30", rlimits=LIMITS)
    made.append(box)
    lines = _wait_lines(box, 5)
    assert lines == ["500", "700", "0", "300", "400"]
    host_view = limits_of(box.init_pid)
    assert host_view["Max open files"] == ("500", "700")
    assert host_view["Max processes"] == ("300", "400")
    assert host_view["Max core file size"] == ("0", "0")


def test_exec_gets_the_containers_limits(boxes, made):
    box = boxes.run("sleep 30", rlimits=LIMITS)
    made.append(box)
    _wait_lines(box, 0)
    proc = subprocess.run(
        [sys.executable, "-m", "mctl.agent.runtime.nsexec", "--pid", str(box.init_pid),
         "--bundle", box.bundle, "--", "sh", "-c", SHOW],
        capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["500", "700", "0", "300", "400"]


def test_limits_apply_in_a_user_namespace(boxes, made):
    if userns.unavailable():
        pytest.skip(userns.unavailable())
    box = boxes.run(SHOW, rlimits=LIMITS, userns=True)
    made.append(box)
    assert box.wait_exit()["exit_code"] == 0
    assert box.lines() == ["500", "700", "0", "300", "400"]


def test_default_open_files_limit(boxes, made):
    (nofile,) = default_rlimits()
    assert nofile.type == "RLIMIT_NOFILE" and nofile.soft == nofile.hard
    box = boxes.run("ulimit -Sn; ulimit -Hn")
    made.append(box)
    box.wait_exit()
    assert box.lines() == [str(nofile.soft), str(nofile.hard)]


def test_a_limit_above_the_kernels_maximum_fails_with_one_line(boxes, made):
    with open("/proc/sys/fs/nr_open") as f:
        too_many = int(f.read()) + 1
    box = boxes.make("true", rlimits=(oci.Rlimit("RLIMIT_NOFILE", too_many, too_many),))
    made.append(box)
    with pytest.raises(StartError) as info:
        boxes.start(box)
    message = str(info.value)
    assert message.startswith(f"rlimits: RLIMIT_NOFILE soft={too_many} hard={too_many}: "), \
        message
    assert "\n" not in message
    assert boxes.cgroups.pids(box.cgroup) == []


def _wait_lines(box: Box, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = box.lines()
        if len(lines) >= count and box.init_pid:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{box.id} wrote {box.lines()} in 10s, wanted {count} lines")
