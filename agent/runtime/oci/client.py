"""Driving an OCI runtime command (runc, crun, mctl-runtime) the way containerd's shim does.

With `mctl-agent --runtime runc|crun|mctl-runtime|PATH` the agent prepares the
same bundle as for the native runtime, and the container is realized by that
command through the OCI runtime command line. The per-container monitor
(monitor.py) stays the container's owner, like containerd-shim or conmon:

- it makes itself a child subreaper (PR_SET_CHILD_SUBREAPER, man 2 prctl) and
  runs `<runtime> create --bundle B --pid-file P ID` with the container's
  stdio as its own stdio (runc's "pass-through" mode), so the container's
  init inherits the monitor's log pipes;
- when `create` exits, the init is re-parented to the monitor, which runs
  `<runtime> start ID`, then waits for the init as its own child: the exit
  status, signal and the CRI log are recorded exactly as for native;
- once the init has exited it runs `<runtime> delete --force ID` before
  writing exit.json, so a restart that reuses the id never races the delete.

The agent uses `kill` to stop and `delete --force` at teardown (for a monitor
that died). Errors come from the runtime's `--log` file in JSON (runc, crun
and mctl-runtime all write `{"level": "error", "msg": ...}` there).

crun 1.8 refuses cgroup v1 "hybrid" machines (a cgroup2 mount under a tmpfs
/sys/fs/cgroup beside v1 hierarchies). Every crun call therefore runs in a
private mount namespace of its own with that cgroup2 mount detached
(`unshare --mount --propagation private` then `umount -l`), which changes
nothing on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

RUNTIME_LOG = "runtime.log"
RUNTIME_PID = "runtime.pid"
# The names `--runtime` knows; anything else must be a path to an executable.
KNOWN = ("runc", "crun", "mctl-runtime")


class RuntimeNotFound(Exception):
    """--runtime names no executable; the message says what was looked for."""


def resolve(name: str) -> str:
    """The executable for `--runtime NAME|PATH`."""
    if "/" in name:
        path = os.path.abspath(name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RuntimeNotFound(f"--runtime {name}: not an executable file")
        return path
    if name not in KNOWN:
        raise RuntimeNotFound(f"--runtime {name}: not one of native, {', '.join(KNOWN)} "
                              "or a path")
    # mctl-runtime sits beside this interpreter in a virtualenv that is not on PATH.
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise RuntimeNotFound(f"--runtime {name}: not found on PATH")
    return found


def hybrid_cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str:
    """The cgroup2 mount point of a v1 "hybrid" layout (e.g. /sys/fs/cgroup/unified), or ""."""
    v1 = False
    unified = ""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or not rest:
            continue
        if rest[0] == "cgroup":
            v1 = True
        elif rest[0] == "cgroup2" and os.path.dirname(fields[4]) != "/sys/fs":
            unified = fields[4]
    return unified if v1 else ""


def base_argv(binary: str, root: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The argv prefix of every call: the runtime, its --root, and crun's namespace wrap."""
    argv = [binary, "--root", root]
    unified = hybrid_cgroup2_mount(mountinfo) if os.path.basename(binary) == "crun" else ""
    if unified:
        import shlex  # crun on a hybrid hierarchy only: not in every agent

        script = f'umount -l {shlex.quote(unified)} && exec "$0" "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, *argv]
    return argv


def last_error(log_path: str) -> str:
    """The last error message the runtime wrote to its --log (JSON lines), or ""."""
    try:
        with open(log_path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("level") in ("error", "fatal"):
            return str(doc.get("msg", "")).strip()
    return ""


def call(base: list[str], log_path: str, *args: str, stdio: tuple[int, int, int] | None = None,
         timeout: float = 30.0) -> str:
    """Runs one runtime command; returns "" on success, else its error in one line."""
    argv = [*base, "--log", log_path, "--log-format", "json", *args]
    if stdio is not None:
        kwargs: dict[str, object] = {"stdin": stdio[0], "stdout": stdio[1], "stderr": stdio[2]}
    else:
        kwargs = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                  "stderr": subprocess.PIPE}
    try:
        proc = subprocess.run(argv, timeout=timeout, check=False, **kwargs)  # type: ignore
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{args[0]}: {e}"
    if proc.returncode == 0:
        return ""
    detail = last_error(log_path)
    if not detail and proc.stderr and proc.stderr.strip():
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1]
    name = os.path.basename(base_argv_binary(base))
    return f"{name} {args[0]}: {detail or f'exited with status {proc.returncode}'}"


def base_argv_binary(base: list[str]) -> str:
    """The runtime binary in a base argv (after crun's wrapper, if any)."""
    return base[base.index("--root") - 1]


def create_and_start(base: list[str], bundle: str, container_id: str,
                     stdio: tuple[int, int, int]) -> tuple[int, str]:
    """Monitor side: `create` then `start`; returns (init pid, error).

    The caller must be a child subreaper, so the init becomes its child.
    """
    log_path = os.path.join(bundle, RUNTIME_LOG)
    pid_path = os.path.join(bundle, RUNTIME_PID)
    for path in (log_path, pid_path):
        try:
            os.unlink(path)  # a restart reuses the bundle: no stale error or pid
        except FileNotFoundError:
            pass
    error = call(base, log_path, "create", "--bundle", bundle, "--pid-file", pid_path,
                 container_id, stdio=stdio)
    if error:
        call(base, log_path, "delete", "--force", container_id)
        return 0, error
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        call(base, log_path, "delete", "--force", container_id)
        return 0, f"create: no pid file: {e}"
    error = call(base, log_path, "start", container_id)
    if error:
        call(base, log_path, "delete", "--force", container_id)
        return pid, error
    return pid, ""


def log_of(bundle: str) -> str:
    """Where the runtime logs for this container: in its bundle while that exists."""
    return os.path.join(bundle, RUNTIME_LOG) if os.path.isdir(bundle) else os.devnull


def delete(base: list[str], bundle: str, container_id: str) -> str:
    return call(base, log_of(bundle), "delete", "--force", container_id)


def kill(base: list[str], bundle: str, container_id: str, signal_name: str) -> str:
    return call(base, log_of(bundle), "kill", container_id, signal_name)


def remove_empty_cgroups(cgroup: str, mountinfo: str = "/proc/self/mountinfo") -> None:
    """rmdir `cgroup` and its empty ancestors in every cgroup hierarchy mounted.

    runc and crun make a container's cgroup in every v1 hierarchy (devices,
    freezer, blkio...), not only the four the agent's driver knows, and
    delete only the leaf: the node's parent directories would stay behind.
    A busy directory (another container's parent) stops the climb quietly.
    """
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return
    parts = cgroup.strip("/").split("/")
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or not rest or rest[0] not in ("cgroup", "cgroup2"):
            continue
        for depth in range(len(parts), 0, -1):
            try:
                os.rmdir(os.path.join(fields[4], *parts[:depth]))
            except FileNotFoundError:
                continue
            except OSError:
                break
