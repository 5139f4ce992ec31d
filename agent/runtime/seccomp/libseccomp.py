"""libseccomp through ctypes: the library runc, crun, podman and systemd build filters with.

`libseccomp.so.2` is on every node (runc and crun link it; Debian's
libseccomp2). It knows every architecture's system call numbers, their
quirks (x32, multiplexed calls) and the calls of new kernels, so mctl
keeps no tables of its own. Only the part of the API that turns a profile
into a classic BPF program is bound here: a filter context, its
architectures and attributes, rules with argument comparisons, name and
number resolution, and the export of the program (man 3 seccomp_init,
seccomp_rule_add, seccomp_arch_add, seccomp_attr_set, seccomp_export_bpf).
The program is exported, never loaded by libseccomp: the container's
process loads the bytes itself with seccomp(2) right before exec, after
fork and pivot_root, where the library is no longer at hand.

The library is opened on first use; a node without it gets a
LibseccompError naming the package to install.
"""

from __future__ import annotations

import ctypes
import os

# enum scmp_filter_attr (seccomp.h, libseccomp 2.5).
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_TSYNC = 4
ATTR_CTL_OPTIMIZE = 8
# __NR_SCMP_ERROR: what name resolution returns for a name it does not know.
NR_ERROR = -1
# The numbers scanned for an architecture's call names: every architecture
# libseccomp knows numbers its calls below this (x86_64 and aarch64 stop near 460).
MAX_NR = 1024

_SONAME = "libseccomp.so.2"


class LibseccompError(OSError):
    """libseccomp is missing or refused a call; says which."""


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: args[arg] <op> datum_a (MASKED_EQ: & datum_a == datum_b)."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_lib: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib, _libc
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(_SONAME)
    except OSError as e:
        raise LibseccompError(f"seccomp filters need {_SONAME} (Debian's libseccomp2): "
                              f"{e}") from None
    ctx, u32, i32 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    signatures: dict[str, tuple[object, list[object]]] = {
        "seccomp_init": (ctx, [u32]),
        "seccomp_release": (None, [ctx]),
        "seccomp_arch_native": (u32, []),
        "seccomp_arch_resolve_name": (u32, [ctypes.c_char_p]),
        "seccomp_arch_add": (i32, [ctx, u32]),
        "seccomp_arch_remove": (i32, [ctx, u32]),
        "seccomp_attr_set": (i32, [ctx, i32, u32]),
        "seccomp_syscall_resolve_name_arch": (i32, [u32, ctypes.c_char_p]),
        # Returns a malloc'ed string (libseccomp >= 2.2), freed with libc's free.
        "seccomp_syscall_resolve_num_arch": (ctypes.c_void_p, [u32, i32]),
        "seccomp_rule_add_array": (i32, [ctx, u32, i32, ctypes.c_uint,
                                         ctypes.POINTER(_ArgCmp)]),
        "seccomp_export_bpf": (i32, [ctx, i32]),
        "seccomp_version": (ctypes.c_void_p, []),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free.restype = None
    _lib, _libc = lib, libc
    return lib


def _check(ret: int, what: str) -> None:
    if ret < 0:
        raise LibseccompError(-ret, f"libseccomp {what}: {os.strerror(-ret)}")


def arch_token(name: str) -> int:
    """libseccomp's token (the AUDIT_ARCH_* value) of an architecture named as it names them."""
    token = _load().seccomp_arch_resolve_name(name.encode())
    if not token:
        raise LibseccompError(f"libseccomp does not know the architecture {name!r}")
    return int(token)


class _Version(ctypes.Structure):
    """struct scmp_version (libseccomp >= 2.3)."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def version() -> str:
    """The loaded library's version, "2.5.4": what it builds can differ between versions."""
    ptr = _load().seccomp_version()
    if not ptr:
        return "unknown"
    v = _Version.from_address(ptr)
    return f"{v.major}.{v.minor}.{v.micro}"


def native_token() -> int:
    return int(_load().seccomp_arch_native())


def resolve(arch: int, name: str) -> int:
    """The number of call `name` on `arch`: NR_ERROR if unknown, negative if not on `arch`."""
    return int(_load().seccomp_syscall_resolve_name_arch(arch, name.encode()))


def syscall_names(arch: int) -> dict[str, int]:
    """Every call libseccomp knows on `arch`, name -> number, in number order."""
    lib = _load()
    assert _libc is not None
    out: dict[str, int] = {}
    for nr in range(MAX_NR):
        ptr = lib.seccomp_syscall_resolve_num_arch(arch, nr)
        if ptr:
            try:
                name = ctypes.string_at(ptr).decode()
            finally:
                _libc.free(ptr)
            out.setdefault(name, nr)
    return out


class Filter:
    """One libseccomp filter context; release it with close() (or use `with`)."""

    __slots__ = ("_ctx",)

    def __init__(self, default_action: int) -> None:
        lib = _load()
        ctx = lib.seccomp_init(default_action)
        if not ctx:
            raise LibseccompError(f"libseccomp seccomp_init({default_action:#x}) failed")
        self._ctx = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ctx:
            _load().seccomp_release(self._ctx)
            self._ctx = None

    def set_attr(self, attr: int, value: int) -> None:
        _check(_load().seccomp_attr_set(self._ctx, attr, value), f"seccomp_attr_set({attr})")

    def add_arch(self, token: int) -> None:
        _check(_load().seccomp_arch_add(self._ctx, token), f"seccomp_arch_add({token:#x})")

    def remove_arch(self, token: int) -> None:
        _check(_load().seccomp_arch_remove(self._ctx, token),
               f"seccomp_arch_remove({token:#x})")

    def add_rule(self, action: int, nr: int,
                 conditions: tuple[tuple[int, int, int, int], ...]) -> int:
        """Adds a rule; 0 or libseccomp's negative errno (the caller decides what is fatal).

        `conditions` are (arg index, SCMP_CMP_* value, datum_a, datum_b), ANDed.
        """
        array = (_ArgCmp * max(1, len(conditions)))(*(_ArgCmp(*c) for c in conditions))
        return int(_load().seccomp_rule_add_array(self._ctx, action, nr, len(conditions),
                                                  array))

    def export_bpf(self) -> bytes:
        """The program as packed struct sock_filter (libseccomp 2.5 writes it to a file)."""
        fd = os.memfd_create("mctl-seccomp", os.MFD_CLOEXEC)
        try:
            _check(_load().seccomp_export_bpf(self._ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
