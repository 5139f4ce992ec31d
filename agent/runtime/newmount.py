"""Overlay mounts through the new mount API, for images with many layers.

mount(2) takes its options as one page (4096 bytes, NUL included), so
`lowerdir=` with one long layer path per layer stops at about 35 layers
under /var/lib/mctl. The file-system context API of Linux 5.2 (fsopen,
fsconfig, fsmount, move_mount; man 2 fsopen) passes each option on its
own, and overlayfs takes one lower layer per `lowerdir+` since Linux 6.8
(Documentation/filesystems/overlayfs.rst, "Multiple lower layers"), up to
its limit of 500. Only the agent calls this, on the host, before a
container starts; the calls go by number, which these four syscalls share
on every architecture (include/uapi/asm-generic/unistd.h).
"""

from __future__ import annotations

import ctypes
import os

from .syscalls import SyscallError, load_libc

MOVE_MOUNT, FSOPEN, FSCONFIG, FSMOUNT = 429, 430, 431, 432
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100


def syscall(name: str, number: int, *args: object) -> int:
    """syscall(2) by number; an OSError naming `name` if it fails."""
    libc = load_libc()
    ret = int(libc.syscall(ctypes.c_long(number), *args))
    if ret < 0:
        err = ctypes.get_errno()
        raise SyscallError(err, f"{name}: {os.strerror(err)}")
    return ret


def _context_message(fs: int) -> str:
    """What the file system said about a failed fsconfig (man 2 fsopen, "Message
    retrieval interface"): lines "e overlayfs: ...", read until EAGAIN/ENODATA."""
    lines = []
    while True:
        try:
            line = os.read(fs, 1024).decode(errors="replace").strip()
        except OSError:
            break
        if not line:
            break
        lines.append(line.split(" ", 1)[-1])
    return "; ".join(lines)


def mount_overlay(lower: list[str], upper: str, work: str, target: str) -> None:
    """overlay of `lower` (top layer first) + `upper` at `target`, one option at a time."""
    fs = syscall("fsopen(overlay)", FSOPEN, ctypes.c_char_p(b"overlay"),
               ctypes.c_uint(FSOPEN_CLOEXEC))
    try:
        options = [("lowerdir+", layer) for layer in lower]
        options += [("upperdir", upper), ("workdir", work)]
        for key, value in options:
            try:
                syscall(f"fsconfig({key}={value})", FSCONFIG, ctypes.c_int(fs),
                      ctypes.c_uint(FSCONFIG_SET_STRING), ctypes.c_char_p(key.encode()),
                      ctypes.c_char_p(value.encode()), ctypes.c_int(0))
            except SyscallError as e:
                raise SyscallError(e.errno, f"{e.strerror} {_context_message(fs)}".strip()) \
                    from None
        try:
            syscall("fsconfig(create)", FSCONFIG, ctypes.c_int(fs),
                  ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0))
        except SyscallError as e:
            raise SyscallError(e.errno, f"{e.strerror} {_context_message(fs)}".strip()) \
                from None
        mnt = syscall("fsmount(overlay)", FSMOUNT, ctypes.c_int(fs),
                    ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(0))
        try:
            syscall(f"move_mount(overlay, {target})", MOVE_MOUNT, ctypes.c_int(mnt),
                  ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                  ctypes.c_char_p(target.encode()), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        finally:
            os.close(mnt)
    finally:
        os.close(fs)
