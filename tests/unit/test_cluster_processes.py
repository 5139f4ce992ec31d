"""How `mctl cluster` tells a live process from a dead one: a zombie is dead."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mctl.cli import cluster
from mctl.common.procfs import start_time
from mctl.scheduler.main import etcd_credentials


def record(proc: subprocess.Popen[bytes], name: str = "node1") -> cluster.ProcessRecord:
    return {"name": name, "pid": proc.pid, "start_time": start_time(proc.pid),
            "argv": [str(a) for a in proc.args], "log": os.devnull}  # type: ignore[union-attr]


def wait_state(pid: int, want: str) -> None:
    deadline = time.monotonic() + 10
    while cluster.process_state(pid) != want:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {want}"
        time.sleep(0.01)


def test_a_running_process_is_alive():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert cluster.alive(record(proc))
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_child_is_dead_and_gets_reaped():
    # A child that exited and that nobody has waited for: its pid and start
    # time are still in /proc, exactly as when it ran.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    rec = record(proc)
    wait_state(proc.pid, "Z")
    assert start_time(proc.pid) == rec["start_time"] != 0
    assert not cluster.alive(rec)
    # alive() collected it: the pid is gone, no zombie is left behind.
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)
    assert cluster.process_state(proc.pid) == ""
    proc.returncode = 0     # it was reaped behind Popen's back


def test_a_pid_reused_by_another_process_is_not_taken_for_it():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rec = record(proc)
        rec["start_time"] -= 1
        assert not cluster.alive(rec)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("stat", "state"), [
    (b"42 (mctl-agent) S 1 42 42 0 -1", "S"),
    (b"42 (a) Z (b) R 1 42 42 0 -1", "R"),     # a name holding ") Z (": the last ")" counts
    (b"42 (sh) Z 1 42 42 0 -1", "Z"),
])
def test_process_state_reads_the_field_after_the_command_name(tmp_path, stat, state):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_bytes(stat)
    assert cluster.process_state(42, str(tmp_path)) == state


def test_process_state_of_no_process_is_empty(tmp_path):
    assert cluster.process_state(42, str(tmp_path)) == ""


def test_a_zombie_in_proc_is_dead(tmp_path):
    # A zombie whose parent is not us (it cannot be reaped here) is dead all the same.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rec = record(proc)
        (tmp_path / str(proc.pid)).mkdir()
        (tmp_path / str(proc.pid) / "stat").write_bytes(
            f"{proc.pid} (mctl-agent) Z 1 1 1 0".encode())
        assert not cluster.alive(rec, procfs=str(tmp_path))
        assert cluster.alive(rec)
    finally:
        proc.kill()
        proc.wait()


def test_scheduler_etcd_flags_come_all_three_or_none(tmp_path):
    assert etcd_credentials("", "", "") is None
    with pytest.raises(ValueError, match="--etcd-key missing"):
        etcd_credentials("ca", "cert", "")
    with pytest.raises(ValueError, match=r"--etcd-ca .*nope"):
        etcd_credentials(str(tmp_path / "nope"), str(tmp_path), str(tmp_path))
    files = []
    for name in ("ca.crt", "s.crt", "s.key"):
        (tmp_path / name).write_text("x")
        files.append(str(tmp_path / name))
    tls = etcd_credentials(*files)
    assert tls is not None and (tls.ca, tls.cert, tls.key) == tuple(files)
