"""The one seam between the runtime and the kernel's namespace and mount calls.

Python 3.11 has no os.unshare, os.setns, mount or pivot_root, so they are
called in libc through ctypes (man 2 unshare, setns, mount, umount2,
pivot_root, sethostname, prctl). Every call goes through a `Syscalls`
object: `LibcSyscalls` talks to the kernel, `RecordingSyscalls` only records,
so unit tests can assert the exact mounts and flags a setup step makes.

The child side of container start runs these between fork and exec, where
logging is not safe (another thread may have held the logging lock at fork
time), so this module logs nothing itself: callers log in the parent.
"""

from __future__ import annotations

import ctypes
import os

from mctl.common import libc as libc_handle

# typing is not imported on `mctl-runtime run`'s path (bench/README.md, "Import
# costs on the start path"): type checkers see the
# Protocol, the interpreter a plain base class (TYPE_CHECKING = False is
# understood by type checkers as typing.TYPE_CHECKING).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
}

# Mount flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2

SECCOMP_SET_MODE_FILTER = 1


class SyscallError(OSError):
    """A failed kernel call, carrying the call and its arguments."""


class Syscalls(Protocol):
    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int) -> None: ...
    def mount(
        self, source: str, target: str, fstype: str, flags: int = 0, data: str = ""
    ) -> None: ...
    def umount(self, target: str, flags: int = 0) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def chroot(self, path: str) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def prctl(self, option: int, arg: int, arg3: int = 0) -> None: ...
    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def seccomp(self, program: bytes, flags: int = 0) -> None: ...


class _SockFprog(ctypes.Structure):
    # struct sock_fprog (linux/filter.h): the length in instructions, then a pointer.
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _errcheck(ret: int, call: str, *args: object) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        detail = ", ".join(repr(a) for a in args)
        raise SyscallError(err, f"{call}({detail}): {os.strerror(err)}")


_loaded_libc: ctypes.CDLL | None = None


def load_libc() -> ctypes.CDLL:
    """libc, loaded once per process (callers such as newmount.py use it per syscall)."""
    global _loaded_libc
    if _loaded_libc is None:
        _loaded_libc = libc_handle.load()
    return _loaded_libc


class LibcSyscalls:
    """The real kernel, through libc."""

    def __init__(self) -> None:
        libc = load_libc()
        self._unshare = libc.unshare
        self._unshare.argtypes = [ctypes.c_int]
        self._setns = libc.setns
        self._setns.argtypes = [ctypes.c_int, ctypes.c_int]
        self._mount = libc.mount
        self._mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._umount2 = libc.umount2
        self._umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._sethostname = libc.sethostname
        self._sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self._prctl = libc.prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                ctypes.c_ulong, ctypes.c_ulong]
        # glibc has no pivot_root wrapper: call it by number (x86_64 155,
        # aarch64 41).
        self._capset = libc.capset
        self._capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._syscall = libc.syscall
        self._pivot_root_nr = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)
        # Nor a seccomp(2) wrapper (prctl(PR_SET_SECCOMP) takes no flags).
        self._seccomp_nr = {"x86_64": 317, "aarch64": 277}.get(os.uname().machine, 317)

    def unshare(self, flags: int) -> None:
        _errcheck(self._unshare(flags), "unshare", hex(flags))

    def setns(self, fd: int, nstype: int) -> None:
        _errcheck(self._setns(fd, nstype), "setns", fd, hex(nstype))

    def mount(
        self, source: str, target: str, fstype: str, flags: int = 0, data: str = ""
    ) -> None:
        ret = self._mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
        _errcheck(ret, "mount", source, target, fstype, hex(flags), data)

    def umount(self, target: str, flags: int = 0) -> None:
        _errcheck(self._umount2(target.encode(), flags), "umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        ret = self._syscall(
            ctypes.c_long(self._pivot_root_nr),
            ctypes.c_char_p(new_root.encode()),
            ctypes.c_char_p(put_old.encode()),
        )
        _errcheck(ret, "pivot_root", new_root, put_old)

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        _errcheck(self._sethostname(raw, len(raw)), "sethostname", name)

    def prctl(self, option: int, arg: int, arg3: int = 0) -> None:
        _errcheck(self._prctl(option, arg, arg3, 0, 0), "prctl", option, arg, arg3)

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set (man 2 capset).
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)(
            effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
            effective >> 32, permitted >> 32, inheritable >> 32,
        )
        _errcheck(self._capset(ctypes.addressof(header), ctypes.addressof(data)),
                  "capset", hex(effective))

    def seccomp(self, program: bytes, flags: int = 0) -> None:
        """Loads a seccomp filter (packed struct sock_filter) into this thread (man 2 seccomp)."""
        buf = ctypes.create_string_buffer(program, len(program))
        fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
        ret = self._syscall(ctypes.c_long(self._seccomp_nr),
                            ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(flags),
                            ctypes.c_void_p(ctypes.addressof(fprog)))
        _errcheck(ret, "seccomp", "SECCOMP_SET_MODE_FILTER", hex(flags),
                  f"{len(program) // 8} instructions")


class RecordingSyscalls:
    """Records every call instead of making it; for unit tests."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def unshare(self, flags: int) -> None:
        self.calls.append(("unshare", flags))

    def setns(self, fd: int, nstype: int) -> None:
        self.calls.append(("setns", fd, nstype))

    def mount(
        self, source: str, target: str, fstype: str, flags: int = 0, data: str = ""
    ) -> None:
        self.calls.append(("mount", source, target, fstype, flags, data))

    def umount(self, target: str, flags: int = 0) -> None:
        self.calls.append(("umount", target, flags))

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self.calls.append(("pivot_root", new_root, put_old))

    def chroot(self, path: str) -> None:
        self.calls.append(("chroot", path))

    def sethostname(self, name: str) -> None:
        self.calls.append(("sethostname", name))

    def prctl(self, option: int, arg: int, arg3: int = 0) -> None:
        # arg3 only when given, so two-argument calls read as before.
        self.calls.append(("prctl", option, arg, arg3) if arg3 else ("prctl", option, arg))

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self.calls.append(("capset", effective, permitted, inheritable))

    def seccomp(self, program: bytes, flags: int = 0) -> None:
        self.calls.append(("seccomp", program, flags))


def inet_dgram_socket() -> int:
    """socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC): a descriptor for interface ioctls.

    Through libc rather than the `socket` module, which `mctl-runtime run`
    would import for this one call (bench/README.md, "Import costs on the
    start path").
    """
    fd = int(load_libc().socket(2, 2 | os.O_CLOEXEC, 0))  # SOCK_CLOEXEC == O_CLOEXEC
    if fd < 0:
        err = ctypes.get_errno()
        raise SyscallError(err, f"socket(AF_INET, SOCK_DGRAM): {os.strerror(err)}")
    return fd


_libc: LibcSyscalls | None = None


def libc() -> LibcSyscalls:
    """The process-wide real implementation (loading libc once)."""
    global _libc
    if _libc is None:
        _libc = LibcSyscalls()
    return _libc
