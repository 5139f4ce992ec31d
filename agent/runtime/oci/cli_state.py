"""The state store of `mctl-runtime`: one directory per container under --root.

    <root>/<id>/state.json   written by `create`: the init's pid and start time,
                             the bundle, the cgroup, the annotations
    <root>/<id>/exec.fifo    exists from `create` until `start`: the container's
                             init blocks opening it for writing (as runc does),
                             so the user's program does not run before `start`

The OCI runtime spec's status (runtime.md, "State") is derived, never stored,
so it cannot go stale when a process dies behind the runtime's back:

    creating  state.json written with pid 0 while `create` (still alive) works
    created   the init lives and exec.fifo is still there
    running   the init lives and exec.fifo is gone (`start` removed it)
    paused    created or running, and its cgroup is frozen (`pause`)
    stopped   the init is gone, is a zombie, or is a different process that
              reuses its pid (told apart by its start time, man 5 proc)

Standard library only and no heavy imports: every CLI call loads this.
"""

from __future__ import annotations

import os
import time

from .. import cjson

OCI_VERSION = "1.0.2"
STATE_FILE = "state.json"
FIFO = "exec.fifo"

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"
PAUSED = "paused"  # running or created, and frozen (`pause`, cgroups/freezer.py)


class StateError(Exception):
    """A container that does not exist, already exists, or a bad id; the message says which."""


def check_id(container_id: str) -> str:
    """An id is one path component of letters, digits and `_.-+` (runc's rule)."""
    ok = container_id and container_id not in (".", "..") and all(
        c.isascii() and (c.isalnum() or c in "_.-+") for c in container_id)
    if not ok:
        raise StateError(f"invalid container id {container_id!r}: use letters, digits and _.-+")
    return container_id


def proc_stat(pid: int) -> tuple[str, int]:
    """(state letter, start time) of `pid` from /proc/PID/stat; ("", 0) if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The command name may hold spaces or ")": split after the last ")".
        fields = stat.rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[19])
    except (OSError, ValueError, IndexError):
        return "", 0


def alive(pid: int, start_time: int) -> bool:
    """Whether `pid` is still that process and has not exited (a zombie has)."""
    if pid <= 0:
        return False
    letter, started = proc_stat(pid)
    return started == start_time != 0 and letter not in ("Z", "X")


class Container:
    """One container's record in the store."""

    def __init__(self, root: str, container_id: str, doc: dict[str, object]) -> None:
        self.root = root
        self.id = container_id
        self.doc = doc

    def _int(self, key: str) -> int:
        # The store's own numbers; anything else is a record this runtime did not write.
        value = self.doc.get(key, 0)
        return value if isinstance(value, int) else 0

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.id)

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, FIFO)

    @property
    def pid(self) -> int:
        return self._int("pid")

    @property
    def cgroup(self) -> str:
        return str(self.doc.get("cgroup", ""))

    @property
    def bundle(self) -> str:
        return str(self.doc.get("bundle", ""))

    def status(self) -> str:
        if self.pid == 0:
            creator = self._int("creator_pid")
            started = int(self.doc.get("creator_start_time", 0))  # type: ignore[call-overload]
            return CREATING if alive(creator, started) else STOPPED
        if not alive(self.pid, int(self.doc.get("start_time", 0))):  # type: ignore[call-overload]
            return STOPPED
        if self.cgroup and self.frozen():
            return PAUSED
        return CREATED if os.path.lexists(self.fifo) else RUNNING

    def frozen(self) -> bool:
        from ..cgroups.freezer import is_frozen

        return is_frozen(self.cgroup)

    def oci_state(self) -> dict[str, object]:
        """The state document of the OCI runtime spec (runtime.md, "State")."""
        status = self.status()
        # The spec requires pid while created or running; runc shows 0 after.
        return self.oci_state_as(status,
                                 self.pid if status in (CREATED, RUNNING, PAUSED) else 0)

    def oci_state_as(self, status: str, pid: int) -> dict[str, object]:
        """The state document with a given status and pid: what hooks get (hooks.py)."""
        return {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": pid,
            "bundle": self.bundle,
            "rootfs": str(self.doc.get("rootfs", "")),
            "created": str(self.doc.get("created", "")),
            "annotations": dict(self.doc.get("annotations", {})),  # type: ignore[call-overload]
        }

    def save(self) -> None:
        tmp = os.path.join(self.dir, STATE_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(cjson.dumps(self.doc))
        os.replace(tmp, os.path.join(self.dir, STATE_FILE))


def rfc3339_now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def new(root: str, container_id: str, bundle: str, save: bool = True) -> Container:
    """Claims `<root>/<id>` for a container being created; StateError if the id is taken.

    With `save` False the caller saves the record once it has added to it.
    """
    check_id(container_id)
    if not os.path.isdir(root):
        os.makedirs(root, mode=0o711, exist_ok=True)
        # One directory per container, as the agent's bundles: each in a
        # block group of its own choosing (common/fsflags.py).
        from mctl.common.fsflags import spread_subdirs

        spread_subdirs(root)
    try:
        os.mkdir(os.path.join(root, container_id), 0o711)
    except FileExistsError:
        raise StateError(f"container {container_id} already exists") from None
    me = os.getpid()
    c = Container(root, container_id, {
        "id": container_id, "pid": 0, "bundle": bundle, "created": rfc3339_now(),
        "creator_pid": me, "creator_start_time": proc_stat(me)[1],
    })
    if save:
        c.save()
    return c


def load(root: str, container_id: str) -> Container:
    check_id(container_id)
    path = os.path.join(root, container_id, STATE_FILE)
    try:
        with open(path) as f:
            doc = cjson.loads(f.read())
    except FileNotFoundError:
        raise StateError(f"container {container_id} does not exist") from None
    except (OSError, ValueError) as e:
        raise StateError(f"{path}: cannot be read: {e}") from None
    return Container(root, container_id, doc)


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.exists(os.path.join(root, n, STATE_FILE)))


def remove(c: Container) -> None:
    """Removes the container's directory (state.json, a leftover fifo)."""
    for name in (FIFO, STATE_FILE, STATE_FILE + ".tmp"):
        try:
            os.unlink(os.path.join(c.dir, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(c.dir)
    except FileNotFoundError:
        pass
