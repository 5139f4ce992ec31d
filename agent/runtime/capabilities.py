"""Linux capabilities: what root inside a container may still do (man 7 capabilities).

A container keeps only the capabilities its config.json lists (Docker's
default set unless told otherwise). The bounding set is cut first, so no
later execve of a setuid or file-capability binary can regain the rest; then
capset(2) sets config.json's effective, permitted and inheritable sets, and
the ambient ones are raised (PR_CAP_AMBIENT_RAISE) last, as runc does.

Ambient capabilities are what a non-root process keeps across execve of a
plain binary: without them setuid to a non-root user and exec leave it
nothing (the kernel recomputes permitted as (inheritable & file
inheritable) | (file permitted & bounding) | ambient). A capability may be
raised into the ambient set only while it is permitted and inheritable, so
the ambient ones are added to the inheritable set (runc users list them
in both; the spec asks nothing else).
"""

from __future__ import annotations

from . import syscalls as sc

# Numbers from linux/capability.h.
CAPABILITIES = {
    name: number for number, name in enumerate([
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
        "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ])
}


def last_cap() -> int:
    """The highest capability this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def mask_of(names: tuple[str, ...] | list[str]) -> int:
    """The bit mask of `names`; an unknown name is an error, never ignored."""
    mask = 0
    for name in names:
        number = CAPABILITIES.get(name)
        if number is None:
            raise ValueError(f"unknown capability {name!r}")
        mask |= 1 << number
    return mask


def drop_bounding(sys: sc.Syscalls, keep: int, top: int) -> None:
    """Drops every capability not in `keep` from the bounding set, for good."""
    for number in range(top + 1):
        if not keep & (1 << number):
            sys.prctl(sc.PR_CAPBSET_DROP, number)


def set_capabilities(sys: sc.Syscalls, effective: int, permitted: int, inheritable: int,
                     ambient: int = 0, top: int = 63) -> None:
    """capset(2) of the three sets, then each ambient capability raised (man 2 prctl)."""
    sys.capset(effective, permitted, inheritable | ambient)
    for number in range(top + 1):
        if ambient & (1 << number):
            sys.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, number)
