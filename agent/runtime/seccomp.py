"""Seccomp: which system calls a container may make (man 2 seccomp).

config.json's `linux.seccomp` (runtime-spec config-linux.md, "Seccomp") is
a profile in libseccomp's terms: a default action, the architectures it
covers, filter flags, and rules `{names, action, errnoRet, args}`. runc and
crun hand it to libseccomp; here it is checked field by field (a bad one is
an oci.ConfigError naming it, `linux.seccomp.syscalls[3].action`) and
compiled to a classic BPF program by seccomp_bpf.py, with the numbers of
seccomp_tables.py. process.py (and nsexec.py, for `mctl exec`) load the
program through privileges.load_seccomp right before exec (or, without
no_new_privileges, before capabilities are dropped: loading a filter then
needs CAP_SYS_ADMIN), as runc does.

What the profile means, as runc 1.1 and crun 1.8 read it through libseccomp:
- A rule's args are ANDed; if one rule compares the same argument twice,
  each comparison becomes a rule of its own (ORed), as runc and crun do,
  because libseccomp allows one comparison per argument and rule.
- Rules for one call combine as libseccomp combines them: an unconditional
  rule wins (the first one, if several); otherwise argument rules are tried
  in the order given. A rule whose action equals the default is skipped,
  as both runtimes do (libseccomp refuses it).
- Names this machine's tables do not know are skipped (profiles list the
  calls of other architectures and kernels), as runc and crun do.
- The native architecture is always in the filter (libseccomp's filter
  starts with it); of the others, x86_64 and aarch64 get their rules and
  every other architecture, and x86_64's x32 ABI, is killed: a program of
  an architecture without rules must never reach another one's.
- With a default action that is not ALLOW, LOG or TRACE and no
  defaultErrnoRet of ENOSYS, calls numbered above every call the profile
  names return ENOSYS (runc's patch, so that libc falls back from calls
  newer than the profile).
- Not supported, refused: SCMP_ACT_NOTIFY, listenerPath and
  listenerMetadata (no seccomp agents), flags other than
  SECCOMP_FILTER_FLAG_LOG and SECCOMP_FILTER_FLAG_SPEC_ALLOW (loaded
  through seccomp(2)) and SECCOMP_FILTER_FLAG_TSYNC (a no-op here, as in
  runc: the container's process has one thread).

Compiling a Docker-size profile (~350 names) takes about half a
millisecond (bench/seccomp_cost.py), which the agent's in-process start
path need not pay per container: `parse` keeps the profiles it has built,
keyed by their JSON, and the zygote (which parses config.json before it
forks a container's monitor) warms that cache with the agent's default
profile, so a start costs a JSON dump and a dictionary lookup (~30 us).
"""

from __future__ import annotations

import os
import sys

from . import lightjson
from . import seccomp_bpf as bpf
from .oci import ConfigError
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# SCMP_ACT_* -> the kernel's return value; data (errno, trace message) is or-ed in.
ACTIONS = {
    "SCMP_ACT_KILL": bpf.RET_KILL_THREAD,         # libseccomp's KILL is the thread's
    "SCMP_ACT_KILL_THREAD": bpf.RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": bpf.RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": bpf.RET_TRAP,
    "SCMP_ACT_ERRNO": bpf.RET_ERRNO,
    "SCMP_ACT_TRACE": bpf.RET_TRACE,
    "SCMP_ACT_ALLOW": bpf.RET_ALLOW,
    "SCMP_ACT_LOG": bpf.RET_LOG,
}
# Actions whose errnoRet is their data; EPERM without one, as in runc and crun.
WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
EPERM = 1
ENOSYS = 38
# The kernel clamps an errno to MAX_ERRNO; a trace message is SECCOMP_RET_DATA's 16 bits.
MAX_ERRNO = 4095
MAX_TRACE_DATA = 0xFFFF
# Actions that let a call through: runc adds no ENOSYS patch for these defaults.
_PERMISSIVE = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")

OPERATORS = {
    "SCMP_CMP_NE": bpf.CMP_NE, "SCMP_CMP_LT": bpf.CMP_LT, "SCMP_CMP_LE": bpf.CMP_LE,
    "SCMP_CMP_EQ": bpf.CMP_EQ, "SCMP_CMP_GE": bpf.CMP_GE, "SCMP_CMP_GT": bpf.CMP_GT,
    "SCMP_CMP_MASKED_EQ": bpf.CMP_MASKED_EQ,
}

# SCMP_ARCH_* of the spec -> the architecture whose tables this module has, or None.
ARCHITECTURES = {
    "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_AARCH64": "aarch64",
    **{f"SCMP_ARCH_{name}": None for name in (
        "X86", "X32", "ARM", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64",
        "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC", "PARISC64",
        "RISCV64", "LOONGARCH64", "M68K", "SH", "SHEB")},
}
AUDIT_ARCH = {"x86_64": bpf.AUDIT_ARCH_X86_64, "aarch64": bpf.AUDIT_ARCH_AARCH64}
# os.uname().machine -> the table's name.
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# SECCOMP_FILTER_FLAG_* (linux/seccomp.h) that a container may ask for.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 0,        # one thread: nothing to synchronize
    "SECCOMP_FILTER_FLAG_LOG": 1 << 1,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 1 << 2,
}
_REFUSED_FLAGS = {
    "SECCOMP_FILTER_FLAG_NEW_LISTENER": "needs a seccomp agent, which is not supported",
    "SECCOMP_FILTER_FLAG_TSYNC_ESRCH": "is not supported",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": "needs a seccomp agent, which is not supported",
}

_U64_MAX = (1 << 64) - 1
# Distinct profiles kept compiled; a node sees a handful (the default, per capability set).
CACHE_SIZE = 32
_cache: dict[str, Profile] = {}


class Arg(Record):
    """One argument comparison: args[index] <op> value (MASKED_EQ: & value == valueTwo)."""

    __slots__ = ("index", "value", "value_two", "op")

    def __init__(self, index: int, value: int, value_two: int, op: str) -> None:
        self.index = index
        self.value = value
        self.value_two = value_two
        self.op = op


class Syscall(Record):
    """One entry of linux.seccomp.syscalls."""

    __slots__ = ("names", "action", "errno_ret", "args")

    def __init__(self, names: tuple[str, ...], action: str, errno_ret: int | None = None,
                 args: tuple[Arg, ...] = ()) -> None:
        self.names = names
        self.action = action
        self.errno_ret = errno_ret
        self.args = args


class Profile(Record):
    """A checked linux.seccomp and its program for this machine.

    `doc` is the JSON object it came from (what to_json writes back),
    `program` the packed struct sock_filter array and `flags` the
    SECCOMP_FILTER_FLAG_* bits to load it with.
    """

    __slots__ = ("default_action", "default_errno_ret", "architectures", "flag_names",
                 "syscalls", "doc", "program", "flags")

    def __init__(self, default_action: str, default_errno_ret: int | None,
                 architectures: tuple[str, ...], flag_names: tuple[str, ...],
                 syscalls: tuple[Syscall, ...], doc: dict[str, Any], program: bytes = b"",
                 flags: int = 0) -> None:
        self.default_action = default_action
        self.default_errno_ret = default_errno_ret
        self.architectures = architectures
        self.flag_names = flag_names
        self.syscalls = syscalls
        self.doc = doc
        self.program = program
        self.flags = flags


def native_arch() -> str:
    """This machine's architecture as the tables name it ("" if they have none)."""
    return _MACHINES.get(os.uname().machine, "")


def parse(doc: object, where: str = "linux.seccomp") -> Profile:
    """Checks linux.seccomp and compiles it for this machine; raises ConfigError.

    The same document (same JSON) returns the same Profile without work.
    """
    try:
        key = lightjson.dumps(doc)
    except (TypeError, ValueError):
        key = ""
    profile = _cache.get(key) if key else None
    if profile is not None:
        return profile
    profile = parse_uncached(doc, where)
    arch = native_arch()
    if not arch:
        raise ConfigError(where, f"seccomp filters are built for x86_64 and aarch64, "
                                 f"not {os.uname().machine}")
    try:
        program = compile_profile(profile, arch)
    except bpf.CompileError as e:
        raise ConfigError(where, str(e)) from None
    profile = profile.replace(program=program, flags=filter_flags(profile))
    if key:
        while len(_cache) >= CACHE_SIZE:
            del _cache[next(iter(_cache))]  # the oldest
        _cache[key] = profile
    return profile


def parse_uncached(doc: object, where: str = "linux.seccomp") -> Profile:
    """The profile in `doc`, checked, not compiled."""
    if not isinstance(doc, dict):
        raise ConfigError(where, "must be object")
    default_action = _action(doc, "defaultAction", f"{where}.", required=True)
    default_errno = _errno_ret(doc, "defaultErrnoRet", f"{where}.", default_action)
    architectures = _strings(doc, "architectures", where)
    for i, name in enumerate(architectures):
        if name not in ARCHITECTURES:
            raise ConfigError(f"{where}.architectures[{i}]", f"unknown architecture {name!r}")
    flag_names = _strings(doc, "flags", where)
    for i, name in enumerate(flag_names):
        if name in _REFUSED_FLAGS:
            raise ConfigError(f"{where}.flags[{i}]", f"{name} {_REFUSED_FLAGS[name]}")
        if name not in FLAGS:
            raise ConfigError(f"{where}.flags[{i}]", f"unknown flag {name!r}")
    for key in ("listenerPath", "listenerMetadata"):
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.{key}", "must be string")
        if value:
            raise ConfigError(f"{where}.{key}", "seccomp agents (SCMP_ACT_NOTIFY) are not "
                                               "supported")
    items = doc.get("syscalls", [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}.syscalls", "must be array")
    syscalls = tuple(_syscall(item, f"{where}.syscalls[{i}]") for i, item in enumerate(items))
    return Profile(default_action, default_errno, architectures, flag_names, syscalls, doc)


def _action(doc: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    if key not in doc:
        if required:
            raise ConfigError(f"{where}{key}", "required")
        return ""
    action = doc[key]
    if not isinstance(action, str):
        raise ConfigError(f"{where}{key}", "must be string")
    if action == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{where}{key}", "SCMP_ACT_NOTIFY needs a seccomp agent, "
                                           "which is not supported")
    if action not in ACTIONS:
        raise ConfigError(f"{where}{key}", f"unknown action {action!r}")
    return action


def _errno_ret(doc: dict[str, Any], key: str, where: str, action: str) -> int | None:
    if key not in doc:
        return None
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key}", "must be int")
    if action not in WITH_ERRNO:
        # crun refuses it too; runc would silently drop it.
        raise ConfigError(f"{where}{key}", f"is only for SCMP_ACT_ERRNO and SCMP_ACT_TRACE, "
                                           f"not {action}")
    top = MAX_ERRNO if action == "SCMP_ACT_ERRNO" else MAX_TRACE_DATA
    if not 0 <= value <= top:
        raise ConfigError(f"{where}{key}", f"must be between 0 and {top}")
    return value


def _strings(doc: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = doc.get(key, [])
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError(f"{where}.{key}", "must be array")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"{where}.{key}[{i}]", "must be string")
    return tuple(items)


def _syscall(item: object, where: str) -> Syscall:
    if not isinstance(item, dict):
        raise ConfigError(where, "must be object")
    if "names" not in item:
        raise ConfigError(f"{where}.names", "required")
    names = _strings(item, "names", where)
    if not names:
        raise ConfigError(f"{where}.names", "must name at least one system call")
    for i, name in enumerate(names):
        if not name:
            raise ConfigError(f"{where}.names[{i}]", "must not be empty")
    action = _action(item, "action", f"{where}.", required=True)
    errno_ret = _errno_ret(item, "errnoRet", f"{where}.", action)
    raw_args = item.get("args", [])
    if raw_args is None:
        raw_args = []
    if not isinstance(raw_args, list):
        raise ConfigError(f"{where}.args", "must be array")
    args = []
    for i, raw in enumerate(raw_args):
        at = f"{where}.args[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(at, "must be object")
        index = _uint(raw, "index", at, 5, required=True)
        value = _uint(raw, "value", at, _U64_MAX, required=True)
        value_two = _uint(raw, "valueTwo", at, _U64_MAX)
        op = raw.get("op")
        if op is None:
            raise ConfigError(f"{at}.op", "required")
        if op not in OPERATORS:
            raise ConfigError(f"{at}.op", f"unknown operator {op!r}")
        args.append(Arg(index, value, value_two, op))
    return Syscall(names, action, errno_ret, tuple(args))


def _uint(doc: dict[str, Any], key: str, where: str, top: int, required: bool = False) -> int:
    if key not in doc:
        if required:
            raise ConfigError(f"{where}.{key}", "required")
        return 0
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}", "must be int")
    if not 0 <= value <= top:
        raise ConfigError(f"{where}.{key}", f"must be between 0 and {top}")
    return value


def ret_value(action: str, errno_ret: int | None) -> int:
    """The kernel's return value for an SCMP_ACT_* and its errnoRet."""
    if action in WITH_ERRNO:
        return ACTIONS[action] | (EPERM if errno_ret is None else errno_ret)
    return ACTIONS[action]


def filter_flags(profile: Profile) -> int:
    flags = 0
    for name in profile.flag_names:
        flags |= FLAGS[name]
    return flags


def arches_of(profile: Profile, native: str) -> list[str]:
    """The architectures that get rules: the native one first, then the profile's others."""
    out = [native]
    for name in profile.architectures:
        arch = ARCHITECTURES[name]
        if arch is not None and arch not in out:
            out.append(arch)
    return out


def compile_profile(profile: Profile, native: str) -> bytes:
    """The BPF program of `profile` on a machine whose architecture is `native`."""
    from .seccomp_tables import TABLES

    default = ret_value(profile.default_action, profile.default_errno_ret)
    patch_enosys = (profile.default_action not in _PERMISSIVE
                    and default != bpf.RET_ERRNO | ENOSYS)
    rules = []
    for call in profile.syscalls:
        action = ret_value(call.action, call.errno_ret)
        if action == default:
            continue
        conditions = tuple((a.index, OPERATORS[a.op], a.value, a.value_two) for a in call.args)
        indexes = [c[0] for c in conditions]
        if len(set(indexes)) < len(indexes):
            # One comparison per argument and rule in libseccomp: runc and
            # crun then make each comparison a rule of its own.
            rules.append((call.names, action, [(c,) for c in conditions]))
        else:
            rules.append((call.names, action, [conditions]))
    sections = []
    for arch in arches_of(profile, native):
        table = TABLES[arch]
        enosys_above = None
        if patch_enosys:
            known = [table[n] for call in profile.syscalls for n in call.names if n in table]
            enosys_above = max(known) if known else None
        section = bpf.Section(AUDIT_ARCH[arch], deny_x32=arch == "x86_64",
                              enosys_above=enosys_above)
        for names, action, condition_sets in rules:
            for name in names:
                nr = table.get(name)
                if nr is None:
                    continue  # another architecture's or a newer kernel's call
                for conditions in condition_sets:
                    section.add(nr, action, conditions)
        sections.append(section)
    return bpf.compile_program(sections, default, bpf.RET_KILL_PROCESS,
                               little_endian=sys.byteorder == "little")
