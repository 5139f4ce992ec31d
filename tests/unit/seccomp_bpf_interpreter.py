"""A classic-BPF interpreter that runs a seccomp filter as the kernel does.

Written from the kernel's description of the instruction set
(Documentation/networking/filter.rst, the subset seccomp accepts) and of
struct seccomp_data, not from any compiler, so the unit tests can judge a
program by its verdict: for an (arch, nr, args), the return value the
kernel would act on. libseccomp emits loads, ALU on A, jumps, returns and
the scratch-memory/X moves of its argument code; all of those are here.
"""

from __future__ import annotations

import struct

# AUDIT_ARCH_* (linux/audit.h): what seccomp_data.arch holds for each calling convention.
AUDIT_X86_64 = 0xC000003E
AUDIT_I386 = 0x40000003
AUDIT_AARCH64 = 0xC00000B7
# x86_64 marks an x32 call by this bit of nr (asm/unistd.h __X32_SYSCALL_BIT).
X32_BIT = 0x40000000

# Return values (linux/seccomp.h); the low 16 bits are the action's data.
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

_MASK32 = 0xFFFFFFFF
_MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs


def decode(program: bytes) -> list[tuple[int, int, int, int]]:
    """The packed struct sock_filter array as (code, jt, jf, k) tuples, checked for shape."""
    assert len(program) % 8 == 0, "not a whole number of sock_filter"
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    assert 0 < len(insns) <= _MAX_INSNS
    return insns


def run_bpf(program: bytes | list[tuple[int, int, int, int]], nr: int,
            arch: int = AUDIT_X86_64, args: tuple[int, ...] = ()) -> int:
    """The filter's return value for one call (struct seccomp_data, little-endian).

    `program` is the packed bytes or what `decode` made of them (faster when
    one program judges many calls).
    """
    return trace(program, nr, arch, args)[0]


def trace(program: bytes | list[tuple[int, int, int, int]], nr: int,
          arch: int = AUDIT_X86_64, args: tuple[int, ...] = ()) -> tuple[int, int]:
    """(the filter's return value, how many instructions the kernel ran to get it)."""
    insns = decode(program) if isinstance(program, bytes) else program
    full = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("<IIQ6Q", nr & _MASK32, arch, 0x1000, *full)
    a = x = 0
    mem = [0] * 16
    pc = steps = 0
    while True:
        assert pc < len(insns), "ran off the end of the program"
        code, jt, jf, k = insns[pc]
        pc += 1
        steps += 1
        if code == 0x20:                        # ld [k]
            assert k % 4 == 0 and k + 4 <= len(data), f"load at {k}"
            a = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:                      # ret #k
            return k, steps
        elif code == 0x16:                      # ret a
            return a, steps
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: a & k != 0}[code]
            pc += jt if taken else jf
        elif code in (0x1D, 0x2D, 0x3D, 0x4D):  # jeq, jgt, jge, jset x
            taken = {0x1D: a == x, 0x2D: a > x, 0x3D: a >= x, 0x4D: a & x != 0}[code]
            pc += jt if taken else jf
        elif code == 0x05:                      # ja
            pc += k
        elif code == 0x54:                      # and #k
            a &= k
        elif code == 0x5C:                      # and x
            a &= x
        elif code == 0x00:                      # ld #k
            a = k
        elif code == 0x01:                      # ldx #k
            x = k
        elif code == 0x60:                      # ld M[k]
            a = mem[k]
        elif code == 0x61:                      # ldx M[k]
            x = mem[k]
        elif code == 0x02:                      # st M[k]
            mem[k] = a
        elif code == 0x03:                      # stx M[k]
            mem[k] = x
        elif code == 0x07:                      # tax
            x = a
        elif code == 0x87:                      # txa
            a = x
        else:
            raise AssertionError(f"opcode {code:#x} at {pc - 1}")
