"""Device rules on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, as runc loads one.

cgroup v2 has no devices.allow file. Instead the kernel runs an eBPF
program attached to the cgroup (and to its ancestors) at every open and
mknod of a device node; it returns 1 to allow, 0 to deny (EPERM). Its
context (struct bpf_cgroup_dev_ctx, include/uapi/linux/bpf.h) is three u32:
access_type = (access << 16) | type, major, minor, with type 1 block / 2
char and access bits 1 mknod, 2 read, 4 write.

`assemble` turns the effective rules (devices.py: deny all, the config's,
runc's defaults) into instructions the way runc's devicefilter does: the
rules are tested last one first, since a later rule overrides an earlier
one, and the first that matches returns its verdict; nothing matching
denies. `install` loads the program with bpf(BPF_PROG_LOAD) and attaches it
to the container's cgroup with bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE,
BPF_F_ALLOW_MULTI), the flags runc uses (a container may nest its own).
The attachment keeps the program alive after its descriptor is closed,
until the cgroup is removed. A program also applies on a hybrid machine's
v2 hierarchy, which is how the kernel tests check it here.

Python's standard library has no bpf(2): it is called through libc's
syscall() with ctypes, behind `BpfOps` so unit tests record the calls.
"""

from __future__ import annotations

import ctypes
import os
import struct

from .extras import ANY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import CgroupDriver
    from .extras import DeviceRule

_BPF_NR = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
MAX_INSNS = 4096  # the kernel's limit for an unprivileged-size program; rules are bounded

# eBPF opcodes (include/uapi/linux/bpf.h, bpf_common.h): class | op | source.
_LDX_MEM_W = 0x61       # dst = *(u32 *)(src + off)
_ALU64_AND_K = 0x57     # dst &= imm
_ALU64_RSH_K = 0x77     # dst >>= imm
_ALU64_MOV_K = 0xb7     # dst = imm
_ALU64_MOV_X = 0xbf     # dst = src
_JMP_JNE_K = 0x55       # if dst != imm: pc += off
_JMP_JNE_X = 0x5d       # if dst != src: pc += off
_JMP_EXIT = 0x95


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn: u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm.
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _rule_block(rule: DeviceRule) -> list[tuple[int, int, int, int, int]]:
    """The instructions of one rule; jump offsets of -1 mean "to the next rule"."""
    out: list[tuple[int, int, int, int, int]] = []
    if rule.type != "a":
        out.append((_JMP_JNE_K, 2, 0, -1, DEV_BLOCK if rule.type == "b" else DEV_CHAR))
    bits = sum(_ACCESS_BITS[c] for c in rule.access)
    if rule.type != "a" and bits != ACC_MKNOD | ACC_READ | ACC_WRITE:
        # Matches when the access asked (r3) is within the rule's: r3 & bits == r3.
        out.append((_ALU64_MOV_X, 1, 3, 0, 0))
        out.append((_ALU64_AND_K, 1, 0, 0, bits))
        out.append((_JMP_JNE_X, 1, 3, -1, 0))
    if rule.type != "a" and rule.major != ANY:
        out.append((_JMP_JNE_K, 4, 0, -1, rule.major))
    if rule.type != "a" and rule.minor != ANY:
        out.append((_JMP_JNE_K, 5, 0, -1, rule.minor))
    out.append((_ALU64_MOV_K, 0, 0, 0, 1 if rule.allow else 0))
    out.append((_JMP_EXIT, 0, 0, 0, 0))
    return out


def assemble(rules: tuple[DeviceRule, ...]) -> bytes:
    """The program for `rules` (later rules win; no match denies)."""
    prologue = [
        (_LDX_MEM_W, 2, 1, 0, 0), (_ALU64_AND_K, 2, 0, 0, 0xFFFF),   # r2 = type
        (_LDX_MEM_W, 3, 1, 0, 0), (_ALU64_RSH_K, 3, 0, 0, 16),       # r3 = access
        (_LDX_MEM_W, 4, 1, 4, 0),                                    # r4 = major
        (_LDX_MEM_W, 5, 1, 8, 0),                                    # r5 = minor
    ]
    code = b"".join(_insn(*i) for i in prologue)
    for rule in reversed(rules):
        block = _rule_block(rule)
        for n, (op, dst, src, off, imm) in enumerate(block):
            if off == -1:
                off = len(block) - n - 1  # past the rest of this block
            code += _insn(op, dst, src, off, imm)
        if rule.type == "a":
            break  # matches everything: nothing after it is reached
    else:
        code += _insn(_ALU64_MOV_K, 0, 0, 0, 0) + _insn(_JMP_EXIT)
    if len(code) // 8 > MAX_INSNS:
        raise OSError(f"linux.resources.devices: {len(rules)} rules make a device program "
                      f"longer than {MAX_INSNS} instructions")
    return code


class BpfOps:
    """bpf(2) through libc; unit tests substitute a recording fake."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._nr = _BPF_NR.get(os.uname().machine, 321)

    def _bpf(self, cmd: int, attr: bytes) -> int:
        buf = ctypes.create_string_buffer(attr, len(attr))
        ret = self._syscall(ctypes.c_long(self._nr), ctypes.c_long(cmd),
                            ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_long(len(attr)))
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(ret)

    def load(self, program: bytes) -> int:
        """BPF_PROG_LOAD of a cgroup device program; returns its descriptor."""
        insns = ctypes.create_string_buffer(program, len(program))
        license = ctypes.create_string_buffer(b"Apache-2.0")

        def attr(log_level: int, log: ctypes.Array[ctypes.c_char] | None) -> bytes:
            # union bpf_attr, the BPF_PROG_LOAD part: prog_type, insn_cnt, insns,
            # license, log_level, log_size, log_buf, kern_version, prog_flags,
            # prog_name[16], prog_ifindex, expected_attach_type.
            return struct.pack(
                "<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                ctypes.addressof(insns), ctypes.addressof(license), log_level,
                len(log) if log is not None else 0,
                ctypes.addressof(log) if log is not None else 0, 0, 0, b"mctl_devices", 0,
                BPF_CGROUP_DEVICE).ljust(128, b"\0")

        try:
            return self._bpf(BPF_PROG_LOAD, attr(0, None))
        except OSError as e:
            first = e
        # Refused: once more with the verifier's log, for the reason in one line.
        log = ctypes.create_string_buffer(1 << 20)
        try:
            return self._bpf(BPF_PROG_LOAD, attr(1, log))
        except OSError:
            detail = log.value.decode(errors="replace").strip().splitlines()
            raise OSError(first.errno, f"{first.strerror}"
                                       f"{': ' + detail[-1] if detail else ''}") from None

    def attach(self, cgroup_fd: int, program_fd: int) -> None:
        """BPF_PROG_ATTACH to the cgroup as BPF_CGROUP_DEVICE, alongside others."""
        attr = struct.pack("<IIII", cgroup_fd, program_fd, BPF_CGROUP_DEVICE,
                           BPF_F_ALLOW_MULTI).ljust(128, b"\0")
        self._bpf(BPF_PROG_ATTACH, attr)


def install(driver: CgroupDriver, path: str, rules: tuple[DeviceRule, ...],
            ops: BpfOps | None = None) -> None:
    """Loads the program for `rules` and attaches it to the cgroup at `path` (v2)."""
    program = assemble(rules)
    ops = ops or BpfOps()
    cgroup_dir = os.path.dirname(driver.file("", path, "cgroup.procs"))
    try:
        fd = ops.load(program)
    except OSError as e:
        raise OSError(f"linux.resources.devices: loading the device program: "
                      f"{e.strerror or e}") from None
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            ops.attach(dir_fd, fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise OSError(f"linux.resources.devices: attaching the device program to "
                      f"{cgroup_dir}: {e.strerror or e}") from None
    finally:
        os.close(fd)
