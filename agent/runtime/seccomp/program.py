"""From a checked profile to the BPF program the kernel runs on every system call.

libseccomp builds the program (libseccomp.py); this module decides what it
is asked for, which is what runc 1.1 and crun 1.8 ask of it:

- Rules for one call combine as libseccomp combines them (the first of
  two rules with the same conditions decides). A rule's args
  are ANDed; if one rule compares the same argument twice, each comparison
  becomes a rule of its own (ORed), as runc and crun do, because libseccomp
  allows one comparison per argument and rule. A rule whose action equals
  the default is skipped, as both runtimes do (libseccomp refuses it).
- Names libseccomp does not know are skipped (profiles list the calls of
  other architectures and kernels), as runc and crun do; a call that does
  not exist on one of the filter's architectures gets no rule there.
- The native architecture is always in the filter; of the others, x86_64
  and aarch64 get their rules, and every other architecture, and x86_64's
  x32 ABI, is killed (libseccomp's bad-architecture action, set to
  KILL_PROCESS): a program of an architecture without rules must never
  reach another one's numbers.
- With a default action that is not ALLOW, LOG or TRACE and no
  defaultErrnoRet of ENOSYS, calls numbered above every call the profile
  names return ENOSYS (runc's patch, so that libc falls back from calls
  newer than the profile). libseccomp has no such rule, so, as runc does,
  a short stub is put in front of libseccomp's program: per architecture,
  "number above N: ENOSYS", else on into libseccomp's program.
- The program is built for the filter flags' sake only; libseccomp never
  loads it (no_new_privs and TSYNC are set off: the runtime sets
  no_new_privs itself, and the container's process has one thread).

`parse` keeps the profiles it has built, keyed by their JSON: a node sees a
handful of profiles (the default, per capability set), and the zygote
warms the cache with the agent's default profile before it forks any
container (bench/seccomp_cost.py measures both). `mctl-runtime` is a new
process per call, so it also keeps built programs on disk under its
--root (`disk_cache`): building costs milliseconds a call, reading a file
a few microseconds. A file is keyed by the profile's JSON, the
architecture, libseccomp's version and this module's own file (a changed
builder never reads an old program), and is only ever written by root
into a directory of mode 0700.
"""

from __future__ import annotations

import errno
import os
import struct

from .. import cjson
from . import libseccomp
from .profile import (
    ARCHITECTURES,
    ENOSYS,
    OPERATORS,
    PERMISSIVE,
    RET_ERRNO,
    RET_KILL_PROCESS,
    Profile,
    ProfileError,
    filter_flags,
    native_arch,
    parse_uncached,
    ret_value,
)

# The kernel refuses longer programs (BPF_MAXINSNS).
MAX_INSNS = 4096
# Distinct profiles kept built; a node sees a handful (the default, per capability set).
CACHE_SIZE = 32
_cache: dict[str, Profile] = {}
# Programs kept on disk (mctl-runtime's --root); older ones go past this many.
DISK_CACHE_FILES = 64

# x86_64 marks an x32 call by this bit of nr (asm/unistd.h __X32_SYSCALL_BIT).
X32_SYSCALL_BIT = 0x40000000
# Classic BPF (linux/bpf_common.h) for the ENOSYS stub; struct seccomp_data offsets.
_LD_W_ABS, _JA, _JEQ_K, _JGT_K, _JGE_K, _RET_K = 0x20, 0x05, 0x15, 0x25, 0x35, 0x06
_OFF_NR, _OFF_ARCH = 0, 4
_SOCK_FILTER = struct.Struct("=HBBI")
# SCMP_FLTATR_CTL_OPTIMIZE level 2: a binary tree of the call numbers, so
# a call is judged in ~log2(n) comparisons, not one per rule.
_OPTIMIZE_BINARY_TREE = 2


def parse(doc: object, where: str = "linux.seccomp", disk_cache: str | None = None) -> Profile:
    """Checks linux.seccomp and builds its program for this machine; raises ProfileError.

    The same document (same JSON) returns the same Profile without work;
    with `disk_cache` (a directory) also in another process.
    """
    try:
        key = cjson.dumps(doc)
    except (TypeError, ValueError):
        key = ""
    profile = _cache.get(key) if key else None
    if profile is not None:
        return profile
    profile = parse_uncached(doc, where)
    arch = native_arch()
    if not arch:
        raise ProfileError(where, f"seccomp filters are built for x86_64 and aarch64, "
                                  f"not {os.uname().machine}")
    try:
        disk_key = _disk_key(key, arch) if key and disk_cache else ""
        program = _disk_read(disk_cache, disk_key) if disk_key else None
        if program is None:
            program = build(profile, arch)
            if disk_key:
                _disk_write(disk_cache, disk_key, program)
    except libseccomp.LibseccompError as e:
        raise ProfileError(where, str(e)) from None
    profile = profile.replace(program=program, flags=filter_flags(profile))
    if key:
        while len(_cache) >= CACHE_SIZE:
            del _cache[next(iter(_cache))]  # the oldest
        _cache[key] = profile
    return profile


def _disk_key(doc_json: str, arch: str) -> str:
    # Imported here: hashlib maps OpenSSL's libcrypto (~3.4 MiB), which the
    # zygote, which keeps no programs on disk, should not carry.
    import hashlib

    me = os.stat(__file__)
    text = "\0".join((doc_json, arch, libseccomp.version(), str(me.st_mtime_ns), str(me.st_size)))
    return hashlib.sha256(text.encode()).hexdigest()


def _disk_read(directory: str | None, key: str) -> bytes | None:
    """A program kept on disk, if there is one that could be a program."""
    if not directory:
        return None
    try:
        with open(os.path.join(directory, key + ".bpf"), "rb") as f:
            program = f.read(MAX_INSNS * _SOCK_FILTER.size + 1)
    except OSError:
        return None
    if not program or len(program) % _SOCK_FILTER.size or len(program) > MAX_INSNS * 8:
        return None  # torn or foreign: built again and rewritten
    return program


def _disk_write(directory: str | None, key: str, program: bytes) -> None:
    """Keeps `program` on disk; a failure only costs the next call a build."""
    if not directory:
        return
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        names = [n for n in os.listdir(directory) if n.endswith(".bpf")]
        if len(names) >= DISK_CACHE_FILES:
            paths = [os.path.join(directory, n) for n in names]
            paths.sort(key=lambda p: os.stat(p).st_mtime_ns)
            for old in paths[:len(paths) - DISK_CACHE_FILES + 1]:
                os.unlink(old)
        tmp = os.path.join(directory, f".{key}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, program)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(directory, key + ".bpf"))
    except OSError:
        pass


def arches_of(profile: Profile, native: str) -> list[str]:
    """The architectures that get rules: the native one first, then the profile's others."""
    out = [native]
    for name in profile.architectures:
        arch = ARCHITECTURES[name]
        if arch is not None and arch not in out:
            out.append(arch)
    return out


def build(profile: Profile, native: str) -> bytes:
    """The program of `profile` on a machine whose architecture is `native` (packed BPF).

    Raises LibseccompError, or ProfileError when the program is too long for the kernel.
    """
    default = ret_value(profile.default_action, profile.default_errno_ret)
    arches = [(arch, libseccomp.arch_token(arch)) for arch in arches_of(profile, native)]
    with libseccomp.Filter(default) as f:
        f.set_attr(libseccomp.ATTR_ACT_BADARCH, RET_KILL_PROCESS)
        f.set_attr(libseccomp.ATTR_CTL_NNP, 0)
        f.set_attr(libseccomp.ATTR_CTL_TSYNC, 0)
        f.set_attr(libseccomp.ATTR_CTL_OPTIMIZE, _OPTIMIZE_BINARY_TREE)
        # A new filter holds the machine's architecture; `native` differs only
        # when a test builds another machine's program.
        host = libseccomp.native_token()
        if arches[0][1] != host:
            f.add_arch(arches[0][1])
            f.remove_arch(host)
        for _, token in arches[1:]:
            f.add_arch(token)
        for i, call in enumerate(profile.syscalls):
            action = ret_value(call.action, call.errno_ret)
            if action == default:
                continue
            conditions = tuple((a.index, OPERATORS[a.op], a.value, a.value_two)
                               for a in call.args)
            indexes = [c[0] for c in conditions]
            condition_sets: list[tuple[tuple[int, int, int, int], ...]]
            if len(set(indexes)) < len(indexes):
                # One comparison per argument and rule in libseccomp: runc and
                # crun then make each comparison a rule of its own.
                condition_sets = [(c,) for c in conditions]
            else:
                condition_sets = [conditions]
            for name in call.names:
                # libseccomp takes the number of the machine it runs on (or its
                # negative stand-in for another architecture's call), maps it
                # per architecture and adds nothing where the call does not exist.
                nr = libseccomp.resolve(host, name)
                if nr == libseccomp.NR_ERROR:
                    continue  # unknown to libseccomp: skipped, as runc does
                for condition_set in condition_sets:
                    ret = f.add_rule(action, nr, condition_set)
                    if ret == -errno.EEXIST:
                        # The same conditions with another action: the earlier
                        # rule decides (runc would refuse the profile).
                        continue
                    if ret < 0:
                        raise ProfileError(f"linux.seccomp.syscalls[{i}]",
                                           f"libseccomp refused the rule for {name}: "
                                           f"{os.strerror(-ret)}")
        program = f.export_bpf()
    if (profile.default_action not in PERMISSIVE and default != RET_ERRNO | ENOSYS):
        program = _enosys_stub(profile, arches) + program
    count = len(program) // _SOCK_FILTER.size
    if count > MAX_INSNS:
        raise ProfileError("linux.seccomp", f"the filter needs {count} BPF instructions; "
                                            f"the kernel takes at most {MAX_INSNS}")
    return program


def _enosys_stub(profile: Profile, arches: list[tuple[str, int]]) -> bytes:
    """BPF that returns ENOSYS for numbers above the profile's highest, per architecture.

    It ends where libseccomp's program begins, which starts over from
    seccomp_data, so every path that is not ENOSYS simply jumps there.
    On x86_64, x32 calls (the x32 bit, but not nr -1, a tracer's skip) go
    on to libseccomp's program, which kills them.
    """
    blocks: list[tuple[int, int, bool]] = []  # (audit arch, highest nr, x86_64)
    for arch, token in arches:
        known = [libseccomp.resolve(token, n) for call in profile.syscalls for n in call.names]
        known = [nr for nr in known if nr >= 0]
        if known:
            blocks.append((token, max(known), arch == "x86_64"))
    if not blocks:
        return b""
    # Instructions (code, jt, jf, k) whose jump targets are labels, bound by
    # `place` to the next instruction: "lib" is libseccomp's program.
    insns: list[tuple[int, object, object, int]] = []
    labels: dict[object, int] = {}

    def place(label: object) -> None:
        labels[label] = len(insns)

    insns.append((_LD_W_ABS, 0, 0, _OFF_ARCH))
    for i, (token, _, _) in enumerate(blocks):
        insns.append((_JEQ_K, ("block", i), ("next", i), token))
        place(("next", i))
    insns.append((_JA, 0, 0, 0))  # no block's architecture: on to libseccomp's
    for i, (_, highest, x86_64) in enumerate(blocks):
        place(("block", i))
        insns.append((_LD_W_ABS, 0, 0, _OFF_NR))
        if x86_64:
            insns.append((_JGE_K, ("x32", i), ("nr", i), X32_SYSCALL_BIT))
            place(("x32", i))
            insns.append((_JEQ_K, "enosys", "lib", 0xFFFFFFFF))
            place(("nr", i))
        insns.append((_JGT_K, "enosys", "lib", highest))
    place("enosys")
    insns.append((_RET_K, 0, 0, RET_ERRNO | ENOSYS))
    place("lib")
    out = bytearray()
    for at, (op, jt, jf, k) in enumerate(insns):
        if op == _JA:
            out += _SOCK_FILTER.pack(op, 0, 0, labels["lib"] - at - 1)
        elif op in (_JEQ_K, _JGT_K, _JGE_K):
            # A handful of instructions: every offset fits the 8 bits of jt/jf.
            out += _SOCK_FILTER.pack(op, labels[jt] - at - 1, labels[jf] - at - 1, k)
        else:
            out += _SOCK_FILTER.pack(op, 0, 0, k)
    return bytes(out)
