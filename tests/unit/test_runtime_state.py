"""The runtime's records of a container (runtime/state.py) and what reads them back."""

from __future__ import annotations

import json
import os
import signal

import pytest

from mctl.agent.runtime import state
from mctl.agent.runtime.api import Runtime
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.oci.command import OciCommandRuntime
from mctl.agent.runtime.state import Exit, StartResult, State


def test_an_exit_status_is_recorded_as_a_shell_shows_it():
    exited = Exit.of_wait_status(3 << 8, oom_killed=False, started_unix_ms=5)
    assert (exited.exit_code, exited.signal, exited.oom_killed) == (3, 0, False)
    assert exited.started_unix_ms == 5 and exited.finished_unix_ms >= 5
    killed = Exit.of_wait_status(signal.SIGKILL, oom_killed=True, started_unix_ms=5)
    assert (killed.exit_code, killed.signal, killed.oom_killed) == (137, 9, True)


def test_the_agents_own_causes_are_spelled_one_way():
    failed = Exit.start_failed("exec: no such file")
    assert (failed.exit_code, failed.start_error, failed.lost) == (127, "exec: no such file", False)
    lost = Exit.monitor_lost()
    assert (lost.exit_code, lost.lost, lost.start_error) == (255, True, "")
    assert lost.finished_unix_ms > 0
    unhealthy = lost.replace(unhealthy="probe failed")
    assert (unhealthy.unhealthy, unhealthy.exit_code, lost.unhealthy) == ("probe failed", 255, "")


def test_exit_json_keeps_what_a_monitor_records(tmp_path):
    exited = Exit(2, signal=0, oom_killed=True, started_unix_ms=10, finished_unix_ms=20)
    state.write_json(str(tmp_path / state.EXIT_FILE), exited.to_json())
    assert json.loads((tmp_path / state.EXIT_FILE).read_text()) == {
        "exit_code": 2, "signal": 0, "oom_killed": True, "started_unix_ms": 10,
        "finished_unix_ms": 20}
    assert state.read_exit(str(tmp_path)) == exited
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_state_json_round_trips(tmp_path):
    running = State("default_web-0", 100, 101, 1_000, 55, 56)
    state.write_json(str(tmp_path / state.STATE_FILE), running.to_json())
    assert state.read_state(str(tmp_path)) == running


@pytest.mark.parametrize("text", ["", "{", "[]", '{"exit_code": "3"}', '{"exit_code": true}'])
def test_unreadable_or_foreign_exit_files_read_as_none(tmp_path, text):
    (tmp_path / state.EXIT_FILE).write_text(text)
    assert state.read_exit(str(tmp_path)) is None


def test_missing_records_read_as_none(tmp_path):
    assert state.read_state(str(tmp_path)) is None
    assert state.read_exit(str(tmp_path)) is None
    (tmp_path / state.STATE_FILE).write_text('{"id": "x", "monitor_pid": 1}')
    assert state.read_state(str(tmp_path)) is None


def test_the_start_report_round_trips_and_an_empty_one_is_an_error():
    report = StartResult(10, 11, "")
    assert StartResult.from_bytes(report.to_bytes()) == report
    assert StartResult.from_bytes(b"").error == "the monitor exited before reporting"


def test_both_runtimes_read_the_monitors_records(tmp_path):
    bundle = str(tmp_path)
    state.write_json(os.path.join(bundle, state.STATE_FILE),
                     State("c", 1, 2, 3, 4, 5).to_json())
    runtimes: list[Runtime] = [NativeRuntime(),
                               OciCommandRuntime("/bin/true", str(tmp_path / "root"))]
    for runtime in runtimes:
        assert runtime.state(bundle) == State("c", 1, 2, 3, 4, 5)
        assert runtime.exit(bundle) is None
    assert [r.name for r in runtimes] == ["native", "true"]
