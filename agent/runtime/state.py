"""What the runtime tells about a container: its start report, state.json and exit.json.

Every runtime (native, or an OCI command such as runc) starts a container
through a per-container monitor (monitor.py), and the monitor is the one
writer of the two files it keeps in the bundle:

    state.json   once the container runs: the monitor's and the init's pid
                 and /proc start time (pids are reused), when it started
    exit.json    once it exited: exit code, signal, OOM kill, times

The agent reads them back as the typed records below, through
`Runtime.state` (api.py). `Exit` has three more causes the agent itself
records when no monitor wrote a file: a start that failed, a monitor that
vanished, a container stopped by a failing health check or for writing more
than its disk limit. Those are made by
the classmethods here, so every writer of an exit spells it the same way.

Loaded by the zygote and every monitor: imports stay light (record.py).
"""

from __future__ import annotations

import json
import os
import time

from .record import Record

LOG_FILE = "container.log"
STATE_FILE = "state.json"
EXIT_FILE = "exit.json"
# The exit code of a container that never ran or whose monitor vanished:
# 127 as a shell's "command not found", 255 as an unknown failure.
START_FAILED_CODE = 127
LOST_CODE = 255


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class StartResult(Record):
    """The monitor's report on a start: its pid and the init's, or why it failed."""

    __slots__ = ("monitor_pid", "init_pid", "error")

    def __init__(self, monitor_pid: int, init_pid: int, error: str = "") -> None:
        self.monitor_pid = monitor_pid
        self.init_pid = init_pid
        self.error = error

    def to_bytes(self) -> bytes:
        return json.dumps({"monitor_pid": self.monitor_pid, "init_pid": self.init_pid,
                           "error": self.error}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StartResult:
        if not data:
            return cls(0, 0, "the monitor exited before reporting")
        doc = json.loads(data)
        return cls(int(doc["monitor_pid"]), int(doc["init_pid"]), str(doc["error"]))


class State(Record):
    """state.json: a running container's processes, each with its /proc start time."""

    __slots__ = ("id", "monitor_pid", "init_pid", "started_unix_ms", "monitor_start_time",
                 "init_start_time")

    def __init__(self, id: str, monitor_pid: int, init_pid: int, started_unix_ms: int,
                 monitor_start_time: int, init_start_time: int) -> None:
        self.id = id
        self.monitor_pid = monitor_pid
        self.init_pid = init_pid
        self.started_unix_ms = started_unix_ms
        self.monitor_start_time = monitor_start_time
        self.init_start_time = init_start_time

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> State:
        return cls(str(doc["id"]), _int(doc, "monitor_pid"), _int(doc, "init_pid"),
                   _int(doc, "started_unix_ms"), _int(doc, "monitor_start_time"),
                   _int(doc, "init_start_time"))


class Exit(Record):
    """How a container ended: exit.json as its monitor wrote it, or a cause the agent saw.

    `start_error` says why it never ran, `lost` that its monitor vanished
    without a record, `unhealthy` why a health check stopped it, `disk_limit`
    why the agent stopped it for its disk use (agent/disklimit.py).
    """

    __slots__ = ("exit_code", "signal", "oom_killed", "started_unix_ms", "finished_unix_ms",
                 "start_error", "lost", "unhealthy", "disk_limit")

    def __init__(self, exit_code: int, signal: int = 0, oom_killed: bool = False,
                 started_unix_ms: int = 0, finished_unix_ms: int = 0, start_error: str = "",
                 lost: bool = False, unhealthy: str = "", disk_limit: str = "") -> None:
        self.exit_code = exit_code
        self.signal = signal
        self.oom_killed = oom_killed
        self.started_unix_ms = started_unix_ms
        self.finished_unix_ms = finished_unix_ms
        self.start_error = start_error
        self.lost = lost
        self.unhealthy = unhealthy
        self.disk_limit = disk_limit

    @classmethod
    def of_wait_status(cls, status: int, oom_killed: bool, started_unix_ms: int) -> Exit:
        """The monitor's record of its init's wait status; a signal shows as 128+N."""
        code = os.waitstatus_to_exitcode(status)
        return cls(exit_code=code if code >= 0 else 128 - code, signal=-code if code < 0 else 0,
                   oom_killed=oom_killed, started_unix_ms=started_unix_ms,
                   finished_unix_ms=now_ms())

    @classmethod
    def start_failed(cls, error: str) -> Exit:
        """A start that failed: it counts as an exit, so restart policy and back-off apply."""
        return cls(START_FAILED_CODE, start_error=error, finished_unix_ms=now_ms())

    @classmethod
    def monitor_lost(cls) -> Exit:
        """The monitor is gone and wrote no exit.json (killed, or the node rebooted)."""
        return cls(LOST_CODE, lost=True, finished_unix_ms=now_ms())

    def to_json(self) -> dict[str, object]:
        # Only what a monitor records: the agent's own causes live in memory.
        return {"exit_code": self.exit_code, "signal": self.signal,
                "oom_killed": self.oom_killed, "started_unix_ms": self.started_unix_ms,
                "finished_unix_ms": self.finished_unix_ms}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Exit:
        return cls(_int(doc, "exit_code"), _int(doc, "signal"), bool(doc.get("oom_killed")),
                   _int(doc, "started_unix_ms"), _int(doc, "finished_unix_ms"))


def _int(doc: dict[str, object], key: str) -> int:
    # Every field is written by the monitor: a missing one is not its file.
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key}: not an integer: {value!r}")
    return value


def write_json(path: str, doc: dict[str, object]) -> None:
    """Writes `doc` to `path` atomically: a reader sees the old file or the new one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc))
    os.replace(tmp, path)


def _read_json(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_state(bundle: str) -> State | None:
    """The container's state.json; None until its monitor wrote one (or if unreadable)."""
    doc = _read_json(os.path.join(bundle, STATE_FILE))
    try:
        return State.from_json(doc) if doc is not None else None
    except (KeyError, ValueError):  # not a state.json the monitor wrote
        return None


def read_exit(bundle: str) -> Exit | None:
    """The container's exit.json; None while it runs (or if unreadable)."""
    doc = _read_json(os.path.join(bundle, EXIT_FILE))
    try:
        return Exit.from_json(doc) if doc is not None else None
    except ValueError:  # not an exit.json the monitor wrote
        return None
