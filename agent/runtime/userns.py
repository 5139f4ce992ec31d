"""User namespaces: root inside the container, an unprivileged id range on the host.

With a "user" entry in linux.namespaces (man 7 user_namespaces), the
container's ids are mapped by linux.uidMappings / gidMappings, e.g. ids
0-65535 inside to 100000-165535 on the host: its root may do root's things
to what its namespaces own (mount /proc, set the hostname) and nothing to
the host's, where it is uid 100000, an id no one else holds.

The kernel wants things in an order, which process.py and spawn.py follow:
- the user namespace is made first, so the namespaces made after it belong
  to it (the pid namespace, say: mounting /proc needs CAP_SYS_ADMIN in the
  user namespace that owns the pid namespace);
- only a process outside it may write its /proc/PID/uid_map and gid_map,
  once each: the child unshares, tells the runtime through a `Handshake`
  (two pipes), the runtime writes the maps and answers, then the child
  goes on. The runtime is the host's root (CAP_SETUID, CAP_SETGID in the
  parent namespace), so writing "deny" to /proc/PID/setgroups first, which
  an unprivileged writer of gid_map needs, is not needed, and the container
  may still call setgroups(2) to take on its user's groups;
- an unmapped host id, such as the host root a process was before, shows
  as 65534 (overflowuid) inside and cannot own files made there, so the
  child becomes uid/gid 0 of the namespace before making anything.

Files: the overlay rootfs is mounted by the host (the agent), so overlayfs
accesses its layers with the host root's credentials, but checks the
caller first and gives what the container makes to the caller's host id.
The agent chowns the upper dir to the mapped root, so root in the container
owns "/" and what it makes lands on disk as uid 100000. The layers the
overlay stacks are idmapped mounts of the image's (the agent's bundle/idmap.py): a file of
the host's root shows as the container's root's, who may modify it (the
copy-up lands in the upper dir as uid 100000; the layer stays as it is).
Where idmapping is not possible the agent stacks the layers themselves,
whose files then show as 65534 inside and are read-only to it. The path
to the rootfs must be searchable by that uid (`unreachable_ancestor`).
"""

from __future__ import annotations

import os
import stat

from .oci.config import Config, IdMapping

MAX_USER_NAMESPACES = "/proc/sys/user/max_user_namespaces"
# What the child and the runtime tell each other.
UNSHARED = b"unshared"
MAPPED = b"mapped"


def unavailable() -> str:
    """Why this kernel cannot make user namespaces now, or "" if it can."""
    if not os.path.exists("/proc/self/ns/user"):
        return "this kernel has no user namespaces (CONFIG_USER_NS is off)"
    try:
        with open(MAX_USER_NAMESPACES) as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return ""
    if limit == 0:
        return f"user namespaces are turned off ({MAX_USER_NAMESPACES} is 0)"
    return ""


def unreachable_ancestor(path: str) -> str:
    """The first directory on the way to `path` that others may not search, or "".

    The container's mapped root is no one to the host, so the kernel lets it
    through a directory only by its "other" execute bit (its capabilities
    do not count for files whose owner it does not map).
    """
    parts = os.path.abspath(path).split("/")[1:]
    current = "/"
    for part in parts:
        if not stat.S_IMODE(os.stat(current).st_mode) & stat.S_IXOTH:
            return current
        current = os.path.join(current, part)
    return ""


def needs_host_sysfs(config: Config) -> bool:
    """Whether /sys must be mounted before the user namespace is made.

    sysfs shows the mounter's network namespace, and only a process with
    CAP_SYS_ADMIN in the user namespace owning that network namespace may
    mount it. A network namespace joined by path (the agent's) or kept from
    the host belongs to the host's user namespace.
    """
    own_network = "network" in config.namespaces and "network" not in config.namespace_paths
    return not own_network


def host_root(config: Config) -> tuple[int, int]:
    """The host uid and gid of the container's root (oci/config.py makes sure both are mapped)."""
    uid = next(m.host_id for m in config.uid_mappings if m.container_id == 0)
    gid = next(m.host_id for m in config.gid_mappings if m.container_id == 0)
    return uid, gid


def map_text(mappings: tuple[IdMapping, ...]) -> str:
    """The uid_map / gid_map text: one "inside outside count" line per range."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def write_mappings(pid: int, config: Config) -> None:
    """Writes the uid and gid maps of `pid`'s user namespace (once each, in one write)."""
    for name, mappings in (("uid_map", config.uid_mappings), ("gid_map", config.gid_mappings)):
        path = f"/proc/{pid}/{name}"
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, map_text(mappings).encode())
        except OSError as e:
            raise OSError(e.errno, f"writing {path}: {e.strerror}") from None
        finally:
            os.close(fd)


class Handshake:
    """Two close-on-exec pipes between the runtime (parent) and the child it maps.

    Each message is one write of a few bytes (atomic on a pipe), and each
    side waits for the other's answer before it writes again, so one read
    is one message.
    """

    def __init__(self) -> None:
        self._up_r, self._up_w = os.pipe2(os.O_CLOEXEC)      # child -> parent
        self._down_r, self._down_w = os.pipe2(os.O_CLOEXEC)  # parent -> child

    def as_parent(self) -> None:
        """After fork, in the parent: drop the child's ends."""
        os.close(self._up_w)
        os.close(self._down_r)
        self._up_w = self._down_r = -1

    def as_child(self) -> None:
        """After fork, in the child: drop the parent's ends."""
        os.close(self._up_r)
        os.close(self._down_w)
        self._up_r = self._down_w = -1

    def child_says(self, message: bytes) -> None:
        os.write(self._up_w, message)

    def child_hears(self) -> bytes:
        return _read_message(self._down_r)

    def parent_says(self, message: bytes) -> None:
        try:
            os.write(self._down_w, message)
        except BrokenPipeError:
            pass  # the child is gone; its error is on the sync pipe

    def parent_hears(self) -> bytes:
        return _read_message(self._up_r)

    def close(self) -> None:
        for fd in (self._up_r, self._up_w, self._down_r, self._down_w):
            if fd >= 0:
                os.close(fd)
        self._up_r = self._up_w = self._down_r = self._down_w = -1


def _read_message(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 512)
        except InterruptedError:
            continue


def map_child(handshake: Handshake, pid: int, config: Config) -> int:
    """Parent side: maps the ids of child `pid` once it has unshared; returns its init's pid.

    0 if the child failed before forking the init; the child then reports
    why on the sync pipe, and so does a failure to write the maps (sent to
    the child, which fails with it), so every error reaches one place.
    """
    if handshake.parent_hears() != UNSHARED:
        return 0
    try:
        write_mappings(pid, config)
    except OSError as e:
        handshake.parent_says(f"id mappings: {e.strerror or e}".encode()[:500])
        return 0
    handshake.parent_says(MAPPED)
    reply = handshake.parent_hears()
    return int(reply) if reply.isdigit() else 0
