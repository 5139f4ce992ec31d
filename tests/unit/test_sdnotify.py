"""common/sdnotify.py against a real unix datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mctl.common import sdnotify


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield s
    s.close()


def test_ready_reaches_the_notify_socket(systemd: socket.socket):
    assert sdnotify.notify("READY=1")
    assert systemd.recv(4096) == b"READY=1"


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch):
    name = f"mctl-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1")
        assert s.recv(4096) == b"READY=1"


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")


def test_a_missing_socket_is_a_warning_not_a_failure(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not sdnotify.notify("READY=1")


def test_watchdog_period_is_for_this_process_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_seconds() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_seconds() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_seconds() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    monkeypatch.delenv("WATCHDOG_PID")
    assert sdnotify.watchdog_seconds() is None


def test_watchdog_pings_at_half_the_period_while_alive(systemd: socket.socket,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")        # 0.2 s: a ping every 0.1 s
    alive = [True]
    dog = sdnotify.Watchdog(alive=lambda: alive[0])
    dog.start()
    try:
        pings = [systemd.recv(4096) for _ in range(3)]
        assert pings == [b"WATCHDOG=1"] * 3
        alive[0] = False          # a stuck main loop: the pings stop, systemd restarts it
        time.sleep(0.15)
        systemd.setblocking(False)
        while True:               # drain a ping sent before the switch
            try:
                systemd.recv(4096)
            except BlockingIOError:
                break
        time.sleep(0.35)
        with pytest.raises(BlockingIOError):
            systemd.recv(4096)
    finally:
        dog.close()


def test_no_watchdog_thread_without_a_period(systemd: socket.socket,
                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = sdnotify.Watchdog()
    dog.start()
    assert dog._thread is None
    dog.close()
