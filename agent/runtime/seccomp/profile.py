"""The checked `linux.seccomp` of config.json: what a profile says, before any program.

config.json's `linux.seccomp` (runtime-spec config-linux.md, "Seccomp") is
a profile in libseccomp's terms: a default action, the architectures it
covers, filter flags, and rules `{names, action, errnoRet, args}`. It is
checked here field by field; a bad one is a ProfileError naming it
(`linux.seccomp.syscalls[3].action`), which the OCI config parser reports
as its own ProfileError. Building the BPF program is program.py's job.

Not supported, refused here: SCMP_ACT_NOTIFY, listenerPath and
listenerMetadata (no seccomp agents), flags other than
SECCOMP_FILTER_FLAG_LOG and SECCOMP_FILTER_FLAG_SPEC_ALLOW (loaded through
seccomp(2)) and SECCOMP_FILTER_FLAG_TSYNC (a no-op here, as in runc: the
container's process has one thread).
"""

from __future__ import annotations

import os

from ..record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# SCMP_ACT_* -> the kernel's return value (linux/seccomp.h), which is also
# libseccomp's value of the action; data (errno, trace message) is or-ed in.
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
ACTIONS = {
    "SCMP_ACT_KILL": RET_KILL_THREAD,         # libseccomp's KILL is the thread's
    "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": RET_TRAP,
    "SCMP_ACT_ERRNO": RET_ERRNO,
    "SCMP_ACT_TRACE": RET_TRACE,
    "SCMP_ACT_ALLOW": RET_ALLOW,
    "SCMP_ACT_LOG": RET_LOG,
}
# Actions whose errnoRet is their data; EPERM without one, as in runc and crun.
WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
EPERM = 1
ENOSYS = 38
# The kernel clamps an errno to MAX_ERRNO; a trace message is SECCOMP_RET_DATA's 16 bits.
MAX_ERRNO = 4095
MAX_TRACE_DATA = 0xFFFF
# Actions that let a call through: runc adds no ENOSYS patch for these defaults.
PERMISSIVE = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")

# SCMP_CMP_* -> libseccomp's enum scmp_compare (unsigned, 64-bit comparisons).
OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# SCMP_ARCH_* of the spec -> the architecture that gets rules (libseccomp's name), or
# None: such calls are killed (see program.py).
ARCHITECTURES = {
    "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_AARCH64": "aarch64",
    **{f"SCMP_ARCH_{name}": None for name in (
        "X86", "X32", "ARM", "MIPS", "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64",
        "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC", "PARISC64",
        "RISCV64", "LOONGARCH64", "M68K", "SH", "SHEB")},
}
# os.uname().machine -> the architecture's name.
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


class ProfileError(ValueError):
    """linux.seccomp has a bad field, or cannot become a program; names the field."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field_path = field_path
        self.problem = problem


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
    """This machine's architecture, if filters are built for it (else "")."""
    return _MACHINES.get(os.uname().machine, "")


def parse_uncached(doc: object, where: str = "linux.seccomp") -> Profile:
    """The profile in `doc`, checked, without its program; raises ProfileError."""
    if not isinstance(doc, dict):
        raise ProfileError(where, "must be object")
    default_action = _action(doc, "defaultAction", f"{where}.", required=True)
    default_errno = _errno_ret(doc, "defaultErrnoRet", f"{where}.", default_action)
    architectures = _strings(doc, "architectures", where)
    for i, name in enumerate(architectures):
        if name not in ARCHITECTURES:
            raise ProfileError(f"{where}.architectures[{i}]", f"unknown architecture {name!r}")
    flag_names = _strings(doc, "flags", where)
    for i, name in enumerate(flag_names):
        if name in _REFUSED_FLAGS:
            raise ProfileError(f"{where}.flags[{i}]", f"{name} {_REFUSED_FLAGS[name]}")
        if name not in FLAGS:
            raise ProfileError(f"{where}.flags[{i}]", f"unknown flag {name!r}")
    for key in ("listenerPath", "listenerMetadata"):
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            raise ProfileError(f"{where}.{key}", "must be string")
        if value:
            raise ProfileError(f"{where}.{key}", "seccomp agents (SCMP_ACT_NOTIFY) are not "
                                               "supported")
    items = doc.get("syscalls", [])
    if not isinstance(items, list):
        raise ProfileError(f"{where}.syscalls", "must be array")
    syscalls = tuple(_syscall(item, f"{where}.syscalls[{i}]") for i, item in enumerate(items))
    return Profile(default_action, default_errno, architectures, flag_names, syscalls, doc)


def _action(doc: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    if key not in doc:
        if required:
            raise ProfileError(f"{where}{key}", "required")
        return ""
    action = doc[key]
    if not isinstance(action, str):
        raise ProfileError(f"{where}{key}", "must be string")
    if action == "SCMP_ACT_NOTIFY":
        raise ProfileError(f"{where}{key}", "SCMP_ACT_NOTIFY needs a seccomp agent, "
                                           "which is not supported")
    if action not in ACTIONS:
        raise ProfileError(f"{where}{key}", f"unknown action {action!r}")
    return action


def _errno_ret(doc: dict[str, Any], key: str, where: str, action: str) -> int | None:
    if key not in doc:
        return None
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}{key}", "must be int")
    if action not in WITH_ERRNO:
        # crun refuses it too; runc would silently drop it.
        raise ProfileError(f"{where}{key}", f"is only for SCMP_ACT_ERRNO and SCMP_ACT_TRACE, "
                                           f"not {action}")
    top = MAX_ERRNO if action == "SCMP_ACT_ERRNO" else MAX_TRACE_DATA
    if not 0 <= value <= top:
        raise ProfileError(f"{where}{key}", f"must be between 0 and {top}")
    return value


def _strings(doc: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = doc.get(key, [])
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ProfileError(f"{where}.{key}", "must be array")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ProfileError(f"{where}.{key}[{i}]", "must be string")
    return tuple(items)


def _syscall(item: object, where: str) -> Syscall:
    if not isinstance(item, dict):
        raise ProfileError(where, "must be object")
    if "names" not in item:
        raise ProfileError(f"{where}.names", "required")
    names = _strings(item, "names", where)
    if not names:
        raise ProfileError(f"{where}.names", "must name at least one system call")
    for i, name in enumerate(names):
        if not name:
            raise ProfileError(f"{where}.names[{i}]", "must not be empty")
    action = _action(item, "action", f"{where}.", required=True)
    errno_ret = _errno_ret(item, "errnoRet", f"{where}.", action)
    raw_args = item.get("args", [])
    if raw_args is None:
        raw_args = []
    if not isinstance(raw_args, list):
        raise ProfileError(f"{where}.args", "must be array")
    args = []
    for i, raw in enumerate(raw_args):
        at = f"{where}.args[{i}]"
        if not isinstance(raw, dict):
            raise ProfileError(at, "must be object")
        index = _uint(raw, "index", at, 5, required=True)
        value = _uint(raw, "value", at, _U64_MAX, required=True)
        value_two = _uint(raw, "valueTwo", at, _U64_MAX)
        op = raw.get("op")
        if op is None:
            raise ProfileError(f"{at}.op", "required")
        if op not in OPERATORS:
            raise ProfileError(f"{at}.op", f"unknown operator {op!r}")
        args.append(Arg(index, value, value_two, op))
    return Syscall(names, action, errno_ret, tuple(args))


def _uint(doc: dict[str, Any], key: str, where: str, top: int, required: bool = False) -> int:
    if key not in doc:
        if required:
            raise ProfileError(f"{where}.{key}", "required")
        return 0
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}.{key}", "must be int")
    if not 0 <= value <= top:
        raise ProfileError(f"{where}.{key}", f"must be between 0 and {top}")
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
