"""systemd's readiness and watchdog protocol (sd_notify), without libsystemd.

Under a unit with Type=notify, systemd passes $NOTIFY_SOCKET, a unix
datagram socket (a path, or an abstract name starting with "@"); the daemon
sends "READY=1" once it serves, so `systemctl start` returns only then and
units ordered after it start against a ready daemon. With WatchdogSec= the
unit also passes $WATCHDOG_USEC, and the daemon must send "WATCHDOG=1" more
often than that or systemd restarts it as hung: the pinger below sends at
half the period, from a thread that also checks that the daemon's own loop
still turns (`alive`), so a wedged loop stops the pings and gets restarted.
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    # An abstract socket: its name starts with a NUL byte on the wire.
    return "\0" + path[1:] if path.startswith("@") else path


def notify(state: str) -> bool:
    """Sends `state` ("READY=1", "WATCHDOG=1", "STOPPING=1"); False outside systemd."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), address)
    except OSError as e:
        # systemd gone or the socket mis-set: readiness is advisory, keep serving.
        log.warning("sd_notify %s to %s failed: %s", state, os.environ["NOTIFY_SOCKET"], e)
        return False
    return True


def watchdog_seconds() -> float | None:
    """systemd's watchdog period for this process, or None if none is asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # WATCHDOG_PID names the process the watchdog is for; a child that
    # inherited the environment must not ping for its parent.
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000


class Watchdog:
    """Sends WATCHDOG=1 every half period while `alive()` says the daemon works."""

    def __init__(self, alive: Callable[[], bool] = lambda: True) -> None:
        self._alive = alive
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        period = watchdog_seconds()
        if period is None or _address() is None:
            return
        self._thread = threading.Thread(target=self._run, args=(period / 2,),
                                        name="watchdog", daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._alive():
                notify("WATCHDOG=1")
            else:
                log.error("not pinging systemd's watchdog: the main loop is stuck")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
