"""The zygote with several starts in flight: replies reach their starts; none outlives it.

The agent starts independent replicas at once (node.py's pool), so the
zygote takes tagged requests and answers each as its monitor reports, in
any order (zygote.py). A monitor dies with the zygote, so with the agent,
until it has recorded its container and reported: what a restarted agent's
adoption relies on (containers.py, docs/parallel-starts.md).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from boxes import WAIT, Box, Boxes

from mctl.agent.runtime.api import StartError
from mctl.agent.runtime.containerlog_writer import LogLimits
from mctl.agent.runtime.state import STATE_FILE
from mctl.common import procfs


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("zygote")
    # From this thread: the zygote dies with the thread that made it.
    b.runtime.warm_up()
    try:
        yield b
    finally:
        assert b.close() == {}


def slow_runtime(boxes: Boxes, script: str) -> list[str]:
    """An OCI runtime command (`BINARY --root DIR`, oci/client.py) whose `create` runs `script`."""
    binary = os.path.join(boxes.tmp, f"slow-runtime-{len(os.listdir(boxes.tmp))}")
    with open(binary, "w") as f:
        f.write(f'#!/bin/sh\nfor a; do [ "$a" = create ] && {{ {script}; }}; done\nexit 7\n')
    os.chmod(binary, 0o755)
    return [binary, "--root", os.path.join(boxes.tmp, "slow-root")]


def test_starts_are_in_flight_at_once_and_each_gets_its_own_reply(boxes):
    # A slow start (an OCI runtime command that takes seconds to `create`)
    # is still waiting on the zygote while other starts, from other threads,
    # are handed out and answered: the zygote does not serve one at a time,
    # and each reply reaches the start it belongs to (tags, zygote.py).
    slow_box = boxes.make("true")
    runtime = slow_runtime(boxes, "sleep 3")
    slow_error: list[str] = []

    def slow() -> None:
        try:
            boxes.runtime.zygote.start(slow_box.id, slow_box.bundle, LogLimits(), runtime)
        except StartError as e:
            slow_error.append(str(e))

    waiting = threading.Thread(target=slow)
    waiting.start()
    try:
        time.sleep(0.2)                 # the slow request is with its monitor
        started: dict[str, Box] = {}

        def fast(word: str) -> None:
            started[word] = boxes.run(f"echo {word}")

        threads = [threading.Thread(target=fast, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert sorted(started) == ["w0", "w1", "w2", "w3"]
        assert waiting.is_alive(), "the fast starts waited for the slow one"
        for word, box in started.items():
            assert box.wait_exit()["exit_code"] == 0
            assert box.stdout() == f"{word}\n"
            with open(box.path(STATE_FILE)) as f:
                assert json.load(f)["monitor_pid"] == box.monitor_pid
    finally:
        waiting.join(WAIT)
    assert slow_error and slow_error[0].endswith("exited with status 7"), slow_error


def test_a_start_in_flight_dies_with_the_zygote_and_records_nothing(boxes):
    # A monitor that has not reported its start must not outlive the zygote
    # (so the agent), or a restarted agent could remove a bundle that the
    # monitor then records a container in (test_start_kill_kernel.py). Its
    # start is held up by an OCI runtime command whose `create` waits for as
    # long as the monitor lives.
    box = boxes.make("true")
    # Waits while its parent is still the monitor (field 4 of its stat).
    runtime = slow_runtime(boxes, 'while [ "$(cut -d" " -f4 /proc/$$/stat)" = "$PPID" ]; '
                                  'do sleep 0.05; done')
    zygote = boxes.runtime.zygote.pid
    errors: list[str] = []

    def start() -> None:
        try:
            boxes.runtime.zygote.start(box.id, box.bundle, LogLimits(), runtime)
        except StartError as e:
            errors.append(str(e))

    thread = threading.Thread(target=start)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        monitors: list[int] = []
        while not monitors and time.monotonic() < deadline:
            # The monitor is the zygote's child named so once it has a
            # request (zygote.py), and its runtime command is running (a
            # spare's only child is its container's init forked ahead, pid 1
            # of a pid namespace of its own: spawn.InitAhead).
            monitors = [pid for pid, state, _ in procfs.children(zygote)
                        if state != "Z" and procfs.comm(pid) == "mctl-monitor"
                        and any(not _own_pid_namespace(child) for child, _, _ in
                                procfs.children(pid))]
            time.sleep(0.01)
        assert len(monitors) == 1, monitors
        born = procfs.start_time(monitors[0])
        os.kill(zygote, signal.SIGKILL)
        while procfs.start_time(monitors[0]) == born and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.start_time(monitors[0]) != born, "the monitor outlived the zygote"
    finally:
        thread.join(WAIT)
    assert errors, "the start did not fail"
    assert not os.path.exists(box.path(STATE_FILE))



def test_a_waiting_spare_and_its_init_forked_ahead_die_with_the_zygote(boxes):
    # The spare monitor waits for its request with its container's init
    # forked ahead (spawn.InitAhead, pid 1 of a pid namespace of its own);
    # neither may outlive the zygote, so the agent.
    assert boxes.run("true").wait_exit()["exit_code"] == 0   # a spare follows the report
    zygote = boxes.runtime.zygote.pid
    deadline = time.monotonic() + WAIT
    spares: list[int] = []
    inits: list[int] = []
    while not inits and time.monotonic() < deadline:
        spares = [pid for pid, state, _ in procfs.children(zygote)
                  if state != "Z" and procfs.comm(pid) == "mctl-spare"]
        inits = [child for spare in spares for child, state, _ in procfs.children(spare)
                 if state != "Z" and _own_pid_namespace(child)]
        time.sleep(0.01)
    assert len(spares) == 1 and len(inits) == 1, (spares, inits)
    born = {pid: procfs.start_time(pid) for pid in (*spares, *inits)}
    os.kill(zygote, signal.SIGKILL)
    while any(procfs.start_time(pid) == t for pid, t in born.items()) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    assert procfs.start_time(spares[0]) != born[spares[0]], "the spare outlived the zygote"
    assert procfs.start_time(inits[0]) != born[inits[0]], "its init outlived the zygote"


def _own_pid_namespace(pid: int) -> bool:
    """Whether `pid` is in another pid namespace than this test (False if it is gone)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except OSError:
        return False
