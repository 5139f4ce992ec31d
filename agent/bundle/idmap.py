"""Idmapped image layers for containers with a user namespace (agent side, on the host).

The image's layers are owned by the host's ids (root, mostly). A container
whose ids 0..65535 are host ids 100000..165535 would see them as the
overflow id 65534 and could not modify them: overlayfs refuses the copy-up
of a file the caller may not write. An idmapped mount (man 2
mount_setattr, "ID-mapped mounts"; Documentation/filesystems/idmappings.rst)
shows a file owned by host id N on disk as owned by N mapped through a user
namespace's mapping, so host root's /bin/busybox shows as 100000 on the
host side of the mount, root's inside the container. Overlayfs takes such
mounts as lower layers (Linux 5.19, "ovl: support idmapped layers") and
copies up with the mapped owner, so what root modifies lands in the upper
dir as uid 100000, and the layer on disk is untouched.

Per layer: open_tree(OPEN_TREE_CLONE) makes a detached bind mount of it,
mount_setattr(MOUNT_ATTR_IDMAP) gives it the container's mapping (only a
detached mount that is not yet idmapped may be given one), move_mount
attaches it at bundle/lower/N, the path the overlay then stacks. The
mapping comes from a user namespace fd: the kernel has no call that makes
a user namespace without a process in it, and the agent is multi-threaded,
so it must not fork Python code; a helper `unshare --user cat` (util-linux)
unshares and execs, the agent writes its uid_map and gid_map as the host's
root (as the runtime does for containers: userns.py), opens
/proc/PID/ns/user, and closes the helper's stdin, so it exits; the
mounts keep the namespace alive, not the helper.

Everything here runs in the agent before the container starts; nothing of
it is on the child side of start.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess

from ..runtime import syscalls as sc
from ..runtime.newmount import AT_FDCWD, MOVE_MOUNT, MOVE_MOUNT_F_EMPTY_PATH, syscall
from ..runtime.oci.config import IdMapping
from ..runtime.syscalls import SyscallError
from ..runtime.userns import map_text

# Syscall numbers shared by every architecture (include/uapi/asm-generic/unistd.h).
_OPEN_TREE, _MOUNT_SETATTR = 428, 442
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_IDMAP = 0x00100000

# bundle/lower/0..N-1: the idmapped layers, top layer first (as overlay's lowerdir).
LAYERS_DIR = "lower"
# How long the helper may take to unshare and exec: far more than it needs
# (bench/README.md, "Idmapped layers").
HELPER_TIMEOUT = 10.0


class IdmapUnsupported(OSError):
    """This kernel or the layers' file system cannot make idmapped mounts."""


class _MountAttr(ctypes.Structure):
    """struct mount_attr (linux/mount.h), MOUNT_ATTR_SIZE_VER0: 32 bytes."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def user_namespace(uid_mappings: tuple[IdMapping, ...],
                   gid_mappings: tuple[IdMapping, ...]) -> int:
    """An fd of a new user namespace with these mappings (the caller closes it)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise OSError(errno.ENOENT, "idmapped layers: no `unshare` (util-linux) in PATH")
    # No preexec_fn: the child only execs, which is safe in a threaded process.
    helper = subprocess.Popen([unshare, "--user", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              close_fds=True)
    assert helper.stdin is not None and helper.stdout is not None
    try:
        # cat echoing a line proves unshare has unshared and exec'd: the
        # maps can be written only once the namespace exists.
        helper.stdin.write(b"ready\n")
        helper.stdin.flush()
        if helper.stdout.readline() != b"ready\n":
            raise OSError(errno.ECHILD, "idmapped layers: `unshare --user cat` exited early "
                                        "(are user namespaces allowed?)")
        for name, mappings in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
            path = f"/proc/{helper.pid}/{name}"
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, map_text(mappings).encode())
            except OSError as e:
                raise OSError(e.errno, f"idmapped layers: writing {path}: {e.strerror}") \
                    from None
            finally:
                os.close(fd)
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        try:
            helper.stdin.close()   # end of input: cat exits
        except BrokenPipeError:
            pass
        try:
            helper.wait(HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            helper.kill()          # our own child, by its pid
            helper.wait()
        helper.stdout.close()


def mount_idmapped(source: str, target: str, userns_fd: int) -> None:
    """A bind mount of `source` at `target`, idmapped by the user namespace `userns_fd`."""
    try:
        tree = syscall(f"open_tree({source})", _OPEN_TREE, ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(source.encode()),
                     ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))
    except SyscallError as e:
        if e.errno == errno.ENOSYS:
            raise IdmapUnsupported(e.errno, f"{e.strerror} (Linux < 5.2)") from None
        raise
    try:
        attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
        try:
            syscall(f"mount_setattr({source}, MOUNT_ATTR_IDMAP)", _MOUNT_SETATTR,
                  ctypes.c_int(tree), ctypes.c_char_p(b""), ctypes.c_uint(AT_EMPTY_PATH),
                  ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
        except SyscallError as e:
            # ENOSYS: Linux < 5.12; EINVAL (with a valid request, as here): the
            # file system does not support idmapped mounts (man 2 mount_setattr).
            if e.errno in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise IdmapUnsupported(e.errno, e.strerror) from None
            raise
        # Detached until here: closing `tree` before this would drop the mount.
        syscall(f"move_mount({source}, {target})", MOVE_MOUNT, ctypes.c_int(tree),
              ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(target.encode()),
              ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    finally:
        os.close(tree)


def mount_layers(sys: sc.Syscalls, layers: list[str], directory: str,
                 uid_mappings: tuple[IdMapping, ...],
                 gid_mappings: tuple[IdMapping, ...]) -> list[str]:
    """Idmapped mounts of `layers` at `directory`/0..N-1, in order; returns their paths.

    On failure nothing stays mounted.
    """
    # Numbers, not digests: the bundle's paths show up in mountinfo.
    targets = [os.path.join(directory, str(n)) for n in range(len(layers))]
    ns = user_namespace(uid_mappings, gid_mappings)
    try:
        os.makedirs(directory, mode=0o711, exist_ok=True)
        for source, target in zip(layers, targets, strict=True):
            os.makedirs(target, mode=0o711, exist_ok=True)
            mount_idmapped(source, target, ns)
    except BaseException:
        unmount_layers(sys, directory)
        raise
    finally:
        os.close(ns)
    return targets


def unmount_layers(sys: sc.Syscalls, directory: str) -> None:
    """Unmounts every idmapped layer under `directory` (none, or no directory: nothing).

    Called after the overlay that stacks them is unmounted; the overlay holds
    its own references to the layers, so the order is not required by the
    kernel, but it keeps mountinfo consistent at every step.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if not name.isdigit():
            continue
        target = os.path.join(directory, name)
        while True:     # until nothing is left, as for the rootfs
            try:
                sys.umount(target, sc.MNT_DETACH)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount
                    break
                raise
