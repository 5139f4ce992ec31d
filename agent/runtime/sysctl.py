"""linux.sysctl: kernel parameters set inside the container (man 5 proc, /proc/sys).

runtime-spec config-linux.md "Sysctl". A file under /proc/sys acts on the
namespaces of the process that opens it, so the init writes them itself,
after the container's /proc is mounted and pivot_root, and before
readonlyPaths makes /proc/sys read-only (process.py). Most parameters are
the whole machine's whatever the namespace, so only those the kernel keeps
per namespace are allowed, by runc's rules (libcontainer/configs/validate):

- the IPC ones, `kernel.msgmax`, `msgmnb`, `msgmni`, `sem`, `shmall`,
  `shmmax`, `shmmni`, `shm_rmid_forced` and `fs.mqueue.*`, with an ipc namespace;
- `net.*` with a network namespace that is not the runtime's own (a new one,
  or one joined by path; create refuses a path to its own, `netns_problem`);
- `kernel.domainname` with a uts namespace.

`kernel.hostname` is refused: it conflicts with config.json's `hostname`
(runc 1.1.5 and crun 1.8.1 both refuse it, with or without that field).
Everything else fails when config.json is read, naming the key. A key may
be written with "/" as sysctl(8) allows (`net/ipv4/conf/eth0.100/rp_filter`,
where dots are part of a name).
"""

from __future__ import annotations

import os

_IPC = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})


def normalize(key: str) -> str:
    """`key` with "." between its parts, as runc validates it ("/" form swapped)."""
    first = min((i for i in (key.find("."), key.find("/")) if i >= 0), default=-1)
    if first < 0 or key[first] == ".":
        return key
    return key.translate(str.maketrans("./", "/."))


def proc_path(key: str) -> str:
    """The file under /proc/sys for `key` (in either spelling)."""
    return "/proc/sys/" + normalize(key).translate(str.maketrans("./", "/."))


def problem(key: str, namespaces: tuple[str, ...] | list[str]) -> str:
    """Why `key` may not be set in a container with `namespaces`, or "" if it may."""
    # Checked on the path it becomes: no empty, "." or ".." part may climb out of /proc/sys.
    if "\0" in key or any(p in ("", ".", "..") for p in proc_path(key)[10:].split("/")):
        return "is not a sysctl name"
    name = normalize(key)
    if name in _IPC or name.startswith("fs.mqueue."):
        return "" if "ipc" in namespaces else "needs an ipc namespace of the container's own"
    if name.startswith("net."):
        return "" if "network" in namespaces else \
            "needs a network namespace of the container's own"
    if name == "kernel.domainname":
        return "" if "uts" in namespaces else "needs a uts namespace of the container's own"
    if name == "kernel.hostname":
        return "conflicts with the hostname field (set that instead)"
    return ("is not namespaced: a container may set only the IPC ones (kernel.msgmax, msgmnb, "
            "msgmni, sem, shmall, shmmax, shmmni, shm_rmid_forced, fs.mqueue.*), net.* and "
            "kernel.domainname")


def netns_problem(sysctl: dict[str, str], namespace_paths: dict[str, str]) -> str:
    """At create: a net.* key with the runtime's own network namespace joined by path."""
    path = namespace_paths.get("network")
    if not path or not any(normalize(k).startswith("net.") for k in sysctl):
        return ""
    try:
        theirs, ours = os.stat(path), os.stat("/proc/self/ns/net")
    except OSError as e:
        return f"linux.namespaces: network path {path}: {e.strerror}"
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        key = next(k for k in sysctl if normalize(k).startswith("net."))
        return (f"linux.sysctl.{key}: the network namespace {path} is the runtime's own; "
                "a net sysctl would change the host")
    return ""


def apply(sysctl: dict[str, str]) -> None:
    """In the init, in the container's namespaces: writes every parameter."""
    for key, value in sysctl.items():
        path = proc_path(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(f"{key}={value!r}: writing {path}: {e.strerror}") from None
