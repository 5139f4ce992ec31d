"""RuntimeDefault: the seccomp profile a workload gets unless it asks for Unconfined.

Written for mctl, not copied: it follows what Docker documents its default
profile to block ("Significant syscalls blocked by the default profile",
docs.docker.com/engine/security/seccomp), with the same idea of letting a
container that holds the capability the kernel checks anyway make the call:

- Every call libseccomp knows on this architecture is allowed (the names
  are written out in the profile, as for runc and crun), except those
  below, which fail with EPERM: kernel modules, kexec and reboot, mount
  and umount, pivot_root, the new mount API (fsopen, fsconfig, fsmount,
  fspick, move_mount, open_tree, mount_setattr), unshare and setns,
  bpf, perf_event_open, ptrace and the other ways into another process's
  memory (process_vm_readv/writev, kcmp), the kernel keyring (add_key,
  keyctl, request_key), swapon/swapoff, setting clocks and the time,
  iopl/ioperm, name_to_handle_at/open_by_handle_at (the "shocker" breakout),
  userfaultfd, io_uring_*, NUMA memory policy calls, quotactl, acct,
  syslog, sethostname/setdomainname and obsolete calls (sysfs, ustat, ...).
- clone with a CLONE_NEW* flag fails with EPERM; clone without one is
  allowed. clone3 fails with ENOSYS: its flags are behind a pointer that
  seccomp cannot read, and on ENOSYS glibc and musl fall back to clone,
  where the flags are checked.
- personality is allowed for the normal personas (Linux, PER_LINUX32,
  UNAME26 and the query 0xffffffff) only.
- Anything else, which includes every call newer than the installed
  libseccomp, fails with ENOSYS (defaultErrnoRet), so libc falls back as
  it does on an older kernel, instead of a new call (a new mount call,
  say) slipping through.
- Only the native architecture is listed: a 32-bit call (int 0x80 on
  x86_64) or an x32 one kills the process.

A group is allowed when the container holds one of its capabilities, as in
Docker (a workload here has Docker's default set, which holds none of
them, but config.json may say otherwise for runc, crun or mctl-runtime).
"""

from __future__ import annotations

from . import libseccomp

# (capabilities any one of which lets the group through, or () for never; names).
DENIED: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("CAP_SYS_MODULE",), ("init_module", "finit_module", "delete_module", "create_module",
                           "query_module", "get_kernel_syms")),
    (("CAP_SYS_BOOT",), ("reboot", "kexec_load", "kexec_file_load")),
    (("CAP_SYS_ADMIN",), ("mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig",
                          "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
                          "unshare", "setns", "swapon", "swapoff", "quotactl", "quotactl_fd",
                          "lookup_dcookie", "fanotify_init", "sethostname", "setdomainname",
                          "name_to_handle_at", "vm86", "vm86old")),
    (("CAP_SYS_ADMIN", "CAP_BPF"), ("bpf",)),
    (("CAP_SYS_ADMIN", "CAP_PERFMON"), ("perf_event_open",)),
    (("CAP_SYS_ADMIN", "CAP_SYSLOG"), ("syslog",)),
    (("CAP_SYS_PTRACE",), ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                           "pidfd_getfd", "process_madvise")),
    (("CAP_SYS_TIME",), ("settimeofday", "stime", "clock_settime", "clock_adjtime")),
    (("CAP_SYS_RAWIO",), ("iopl", "ioperm")),
    (("CAP_SYS_NICE",), ("mbind", "set_mempolicy", "get_mempolicy", "move_pages",
                         "migrate_pages", "set_mempolicy_home_node")),
    (("CAP_DAC_READ_SEARCH",), ("open_by_handle_at",)),
    (("CAP_SYS_PACCT",), ("acct",)),
    (("CAP_SYS_TTY_CONFIG",), ("vhangup",)),
    # Never, whatever the capabilities: not namespaced (the keyring), a
    # large attack surface (io_uring, userfaultfd) or obsolete.
    ((), ("add_key", "keyctl", "request_key", "userfaultfd", "io_uring_setup",
          "io_uring_enter", "io_uring_register", "nfsservctl", "sysfs", "_sysctl", "uselib",
          "ustat")),
)

# Namespace flags of clone(2) (linux/sched.h): NEWNS, NEWCGROUP, NEWUTS,
# NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                         0x20000000, 0x40000000)
# personality(2) values a program uses: PER_LINUX, PER_LINUX32, UNAME26,
# PER_LINUX32|UNAME26, and 0xffffffff, which only asks for the current one.
PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# Decided by rules below, not by the allow-list.
_SPECIAL = ("clone", "clone3", "personality")

SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
EPERM = 1
ENOSYS = 38

# arch -> every call libseccomp knows there, name -> number (a scan of ~1000 numbers).
_names: dict[str, dict[str, int]] = {}


def syscall_names(arch: str) -> dict[str, int]:
    """The calls of `arch` ("x86_64", "aarch64") by name, as the installed libseccomp knows them.

    Raises libseccomp.LibseccompError without the library.
    """
    table = _names.get(arch)
    if table is None:
        table = _names[arch] = libseccomp.syscall_names(libseccomp.arch_token(arch))
    return table


def runtime_default(capabilities: tuple[str, ...] | list[str], arch: str) -> dict[str, object]:
    """The profile (config.json's linux.seccomp) for a container with `capabilities`."""
    table = syscall_names(arch)
    held = set(capabilities)
    denied: list[str] = []
    for caps, names in DENIED:
        if not held.intersection(caps):
            denied.extend(n for n in names if n in table)
    blocked = set(denied)
    # In number order, which is how libseccomp-based runtimes and readers list them.
    allowed = [n for n in sorted(table, key=table.__getitem__)
               if n not in blocked and n not in _SPECIAL]
    syscalls: list[dict[str, object]] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    for value in PERSONAS:
        syscalls.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]})
    if "CAP_SYS_ADMIN" in held:
        syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW"})
    else:
        mask = 0
        for flag in CLONE_NAMESPACE_FLAGS:
            mask |= flag
        syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": mask, "valueTwo": 0,
                                   "op": "SCMP_CMP_MASKED_EQ"}]})
        for flag in CLONE_NAMESPACE_FLAGS:
            syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                             "args": [{"index": 0, "value": flag, "valueTwo": flag,
                                       "op": "SCMP_CMP_MASKED_EQ"}]})
    if denied:
        syscalls.append({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM})
    # The same as the default action, so runtimes skip it; listed so that a
    # reader of config.json sees that clone3 is meant to fail with ENOSYS.
    syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ENOSYS,
        "architectures": [SCMP_ARCH[arch]],
        "syscalls": syscalls,
    }
