"""Compiling a seccomp policy to classic BPF, the program the kernel runs on every system call.

A seccomp filter (man 2 seccomp; Documentation/userspace-api/seccomp_filter.rst)
is a classic BPF program (struct sock_filter: a 16-bit opcode, two 8-bit jump
offsets and a 32-bit constant) that reads `struct seccomp_data`:

    offset  0  int   nr                   the system call number
    offset  4  u32   arch                 AUDIT_ARCH_* of the calling convention
    offset  8  u64   instruction_pointer
    offset 16  u64   args[6]              each 64 bits, in the CPU's byte order

and returns SECCOMP_RET_<action> | data. The program this module builds:

    load arch; one branch per architecture of the policy; anything else gets
    the bad-architecture action (a 32-bit binary's int 0x80 on x86_64, say:
    it has its own numbers, so it must never reach the 64-bit rules)
    per architecture: load nr; on x86_64 the x32 ABI (nr | 0x40000000, but
    not nr -1) gets the bad-architecture action too, as libseccomp does
    when x32 is not in the filter; optionally numbers above the highest one
    the policy knows return ENOSYS (runc's patch for calls newer than the
    profile); then a binary search over number ranges: consecutive numbers
    with the same unconditional action share a range, so an allow-list of
    350 calls is a search over a few dozen ranges, at most ~8 comparisons
    deep, not 350; a call with argument rules gets a block that tries its
    rules in order.

Classic BPF compares only 32-bit words, so each 64-bit argument comparison
is done on its high half first, then its low half. Jumps only go forward,
and a conditional jump's offsets are 8 bits: a target further than 255
instructions is reached through an unconditional `ja` (32-bit offset)
placed right after the jump, added by the assembler until every offset fits.

Nothing here knows OCI or names: seccomp.py turns a profile into `Section`s.
"""

from __future__ import annotations

import struct

# Return values (linux/seccomp.h); the low 16 bits are the action's data.
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

# AUDIT_ARCH_* (linux/audit.h): the ELF machine | 64-bit | little-endian.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
# x86_64 marks an x32 call by this bit of nr (asm/unistd.h __X32_SYSCALL_BIT).
X32_SYSCALL_BIT = 0x40000000

# Classic BPF opcodes (linux/bpf_common.h): class | size | mode, or class | op | source.
LD_W_ABS = 0x20      # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word at offset k
ALU_AND_K = 0x54     # BPF_ALU | BPF_AND | BPF_K: A &= k
JA = 0x05            # BPF_JMP | BPF_JA: pc += k
JEQ_K = 0x15         # BPF_JMP | BPF_JEQ | BPF_K: pc += (A == k) ? jt : jf
JGT_K = 0x25
JGE_K = 0x35
RET_K = 0x06         # BPF_RET | BPF_K: return k

# The kernel refuses longer programs (BPF_MAXINSNS).
MAX_INSNS = 4096

# Argument comparisons, as libseccomp's SCMP_CMP_* (unsigned, 64-bit).
CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ = range(1, 8)

_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16
_SOCK_FILTER = struct.Struct("=HBBI")


class CompileError(ValueError):
    """The policy cannot become a program the kernel accepts (too long, say)."""


def arg_offsets(index: int, little_endian: bool = True) -> tuple[int, int]:
    """(offset of the low 32 bits, offset of the high 32 bits) of args[index]."""
    base = _OFF_ARGS + 8 * index
    return (base, base + 4) if little_endian else (base + 4, base)


# A condition: (arg index, CMP_*, value, value_two); a rule: (conditions, action).
Condition = tuple[int, int, int, int]
Rule = tuple[tuple[Condition, ...], int]


class Section:
    """The rules of one architecture: system call number -> action or argument rules.

    Rules combine as libseccomp combines them: the first unconditional rule
    for a number wins over everything else for it; otherwise its argument
    rules are tried in the order they were added and the first that matches
    decides; none matching means the default action.
    """

    __slots__ = ("audit_arch", "deny_x32", "enosys_above", "_always", "_rules")

    def __init__(self, audit_arch: int, deny_x32: bool = False,
                 enosys_above: int | None = None) -> None:
        self.audit_arch = audit_arch
        self.deny_x32 = deny_x32
        # Numbers above this return ENOSYS (None: no such check).
        self.enosys_above = enosys_above
        self._always: dict[int, int] = {}
        self._rules: dict[int, list[Rule]] = {}

    def add(self, nr: int, action: int, conditions: tuple[Condition, ...] = ()) -> None:
        if nr in self._always:
            return
        if not conditions:
            self._always[nr] = action
            self._rules.pop(nr, None)
        else:
            self._rules.setdefault(nr, []).append((conditions, action))

    def outcomes(self) -> dict[int, int | tuple[Rule, ...]]:
        """nr -> an action, or the argument rules to try."""
        out: dict[int, int | tuple[Rule, ...]] = dict(self._always)
        for nr, rules in self._rules.items():
            out[nr] = tuple(rules)
        return out


class _Asm:
    """Instructions with symbolic jump targets, laid out and resolved at the end.

    An instruction is [code, k, jt, jf]: for conditional jumps jt/jf are
    label ids, for `ja` k is one. A label is an int that `place` binds to the
    position of the next instruction emitted.
    """

    __slots__ = ("code", "labels", "_next")

    def __init__(self) -> None:
        self.code: list[list[int]] = []
        self.labels: dict[int, int] = {}
        self._next = 0

    def label(self) -> int:
        self._next += 1
        return self._next

    def place(self, label: int) -> None:
        self.labels[label] = len(self.code)

    def here(self) -> int:
        """A new label bound to the next instruction."""
        label = self.label()
        self.place(label)
        return label

    def ld(self, offset: int) -> None:
        self.code.append([LD_W_ABS, offset, 0, 0])

    def and_(self, k: int) -> None:
        self.code.append([ALU_AND_K, k, 0, 0])

    def jump(self, code: int, k: int, jt: int, jf: int) -> None:
        self.code.append([code, k, jt, jf])

    def ret(self, k: int) -> None:
        self.code.append([RET_K, k, 0, 0])

    def assemble(self) -> bytes:
        code, labels = self.code, self.labels
        while True:
            far = self._far_jumps()
            if not far:
                break
            # Insert a `ja` right after each jump whose target is out of reach
            # and point the jump at it; inserting moves later instructions, so
            # recompute and repeat until every offset fits in 8 bits.
            new: list[list[int]] = []
            moved: dict[int, int] = {}
            positions = _positions_by_index(labels)
            for i, insn in enumerate(code):
                for label in positions.get(i, ()):
                    moved[label] = len(new)
                new.append(insn)
                for which in far.get(i, ()):
                    trampoline = self.label()
                    moved[trampoline] = len(new)
                    new.append([JA, insn[which], 0, 0])
                    insn[which] = trampoline
            for label in positions.get(len(code), ()):
                moved[label] = len(new)
            code = self.code = new
            labels = self.labels = moved
        if len(code) > MAX_INSNS:
            raise CompileError(f"the filter needs {len(code)} BPF instructions; "
                               f"the kernel takes at most {MAX_INSNS}")
        out = bytearray(_SOCK_FILTER.size * len(code))
        pack = _SOCK_FILTER.pack_into
        for i, (op, k, jt, jf) in enumerate(code):
            if op == JA:
                pack(out, i * 8, op, 0, 0, labels[k] - i - 1)
            elif op & 0x07 == 0x05:  # BPF_JMP
                pack(out, i * 8, op, labels[jt] - i - 1, labels[jf] - i - 1, k)
            else:
                pack(out, i * 8, op, 0, 0, k)
        return bytes(out)

    def _far_jumps(self) -> dict[int, list[int]]:
        """index -> which fields (2 = jt, 3 = jf) of conditional jumps reach too far."""
        far: dict[int, list[int]] = {}
        labels = self.labels
        for i, insn in enumerate(self.code):
            op = insn[0]
            if op & 0x07 != 0x05 or op == JA:
                continue
            for which in (2, 3):
                offset = labels[insn[which]] - i - 1
                if offset < 0:
                    raise CompileError("internal: a backward jump")  # never built that way
                if offset > 255:
                    far.setdefault(i, []).append(which)
        return far


def _positions_by_index(labels: dict[int, int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for label, index in labels.items():
        out.setdefault(index, []).append(label)
    return out


def compile_program(sections: list[Section], default: int, bad_arch: int,
                    little_endian: bool = True) -> bytes:
    """The filter as packed struct sock_filter, ready for seccomp(2)."""
    asm = _Asm()
    asm.ld(_OFF_ARCH)
    entries = [asm.label() for _ in sections]
    for section, entry in zip(sections, entries, strict=True):
        other = asm.label()
        asm.jump(JEQ_K, section.audit_arch, entry, other)
        asm.place(other)
    asm.ret(bad_arch)
    for section, entry in zip(sections, entries, strict=True):
        asm.place(entry)
        _section(asm, section, default, bad_arch, little_endian)
    return asm.assemble()


def _section(asm: _Asm, section: Section, default: int, bad_arch: int,
             little_endian: bool) -> None:
    asm.ld(_OFF_NR)
    if section.deny_x32:
        # nr -1 is not x32: it is what a tracer sets to skip a call (and
        # libseccomp lets it through to the rules too).
        high, deny, go_on = asm.label(), asm.label(), asm.label()
        asm.jump(JGE_K, X32_SYSCALL_BIT, high, go_on)
        asm.place(high)
        asm.jump(JEQ_K, 0xFFFFFFFF, go_on, deny)
        asm.place(deny)
        asm.ret(bad_arch)
        asm.place(go_on)
    if section.enosys_above is not None:
        enosys, go_on = asm.label(), asm.label()
        asm.jump(JGT_K, section.enosys_above, enosys, go_on)
        asm.place(enosys)
        asm.ret(RET_ERRNO | 38)  # ENOSYS
        asm.place(go_on)
    _search(asm, _ranges(section.outcomes(), default), default, little_endian)


# A range of numbers [low, high] and what they get: an action, or argument rules.
_Range = tuple[int, int, "int | tuple[Rule, ...]"]


def _ranges(outcomes: dict[int, int | tuple[Rule, ...]], default: int) -> list[_Range]:
    """Numbers 0..2^32-1 cut into ranges of one outcome each, neighbours merged."""
    out: list[list[object]] = []
    for nr in sorted(outcomes):
        outcome = outcomes[nr]
        if outcome == default:  # an unconditional rule with the default action adds nothing
            continue
        last_high = out[-1][1] if out else -1
        if nr > last_high + 1:
            _append(out, last_high + 1, nr - 1, default)
        _append(out, nr, nr, outcome)
    last_high = out[-1][1] if out else -1
    if last_high < 0xFFFFFFFF:
        _append(out, last_high + 1, 0xFFFFFFFF, default)
    return [(int(lo), int(hi), what) for lo, hi, what in out]  # type: ignore[misc]


def _append(out: list[list[object]], low: int, high: int, what: object) -> None:
    # Only unconditional actions merge: argument rules are per number.
    if out and isinstance(what, int) and out[-1][2] == what and out[-1][1] == low - 1:
        out[-1][1] = high
    else:
        out.append([low, high, what])


def _search(asm: _Asm, ranges: list[_Range], default: int, little_endian: bool) -> None:
    """A binary search over `ranges` on A (the number), each leaf its outcome."""
    if len(ranges) == 1:
        what = ranges[0][2]
        if isinstance(what, int):
            asm.ret(what)
        else:
            _rules(asm, what, default, little_endian)
        return
    middle = len(ranges) // 2
    upper, lower = asm.label(), asm.label()
    asm.jump(JGE_K, ranges[middle][0], upper, lower)
    asm.place(lower)
    _search(asm, ranges[:middle], default, little_endian)
    asm.place(upper)
    _search(asm, ranges[middle:], default, little_endian)


def _rules(asm: _Asm, rules: tuple[Rule, ...], default: int, little_endian: bool) -> None:
    """One call's argument rules, in order; the first whose conditions all hold decides."""
    for conditions, action in rules:
        fail = asm.label()
        for condition in conditions:
            _condition(asm, condition, fail, little_endian)
        asm.ret(action)
        asm.place(fail)
    asm.ret(default)


def _condition(asm: _Asm, condition: Condition, fail: int, little_endian: bool) -> None:
    """Code that falls through when `condition` holds and jumps to `fail` when not.

    The 64-bit comparison is decided by the high halves unless they are
    equal, then by the low halves (all comparisons are unsigned).
    """
    index, op, value, value_two = condition
    lo_off, hi_off = arg_offsets(index, little_endian)
    if op == CMP_MASKED_EQ:
        mask, datum = value, value_two & value  # libseccomp compares the masked datum
        for off, m, d in ((hi_off, mask >> 32, datum >> 32), (lo_off, mask & 0xFFFFFFFF,
                                                            datum & 0xFFFFFFFF)):
            if m == 0:
                continue  # (x & 0) == 0 always holds
            asm.ld(off)
            if m != 0xFFFFFFFF:
                asm.and_(m)
            step = asm.label()
            asm.jump(JEQ_K, d, step, fail)
            asm.place(step)
        return
    hi, lo = value >> 32, value & 0xFFFFFFFF
    ok = asm.label()
    if op == CMP_EQ:
        asm.ld(hi_off)
        step = asm.label()
        asm.jump(JEQ_K, hi, step, fail)
        asm.place(step)
        asm.ld(lo_off)
        asm.jump(JEQ_K, lo, ok, fail)
    elif op == CMP_NE:
        asm.ld(hi_off)
        step = asm.label()
        asm.jump(JEQ_K, hi, step, ok)
        asm.place(step)
        asm.ld(lo_off)
        asm.jump(JEQ_K, lo, fail, ok)
    else:
        # GT/GE hold when the high half is above; LT/LE when it is below.
        above_ok = op in (CMP_GT, CMP_GE)
        asm.ld(hi_off)
        not_above, equal = asm.label(), asm.label()
        asm.jump(JGT_K, hi, ok if above_ok else fail, not_above)
        asm.place(not_above)
        asm.jump(JEQ_K, hi, equal, fail if above_ok else ok)
        asm.place(equal)
        asm.ld(lo_off)
        if op == CMP_GT:
            asm.jump(JGT_K, lo, ok, fail)
        elif op == CMP_GE:
            asm.jump(JGE_K, lo, ok, fail)
        elif op == CMP_LT:
            asm.jump(JGE_K, lo, fail, ok)
        elif op == CMP_LE:
            asm.jump(JGT_K, lo, fail, ok)
        else:
            raise CompileError(f"unknown comparison {op}")
    asm.place(ok)
