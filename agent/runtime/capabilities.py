"""Linux capabilities: what root inside a container may still do (man 7 capabilities).

A container keeps only the capabilities its config.json lists (Docker's
default set unless told otherwise). The bounding set is cut first, so no
later execve of a setuid or file-capability binary can regain the rest; then
capset(2) leaves the same set effective, permitted and inheritable.
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


def set_capabilities(sys: sc.Syscalls, keep: int) -> None:
    """Leaves exactly `keep` effective, permitted and inheritable."""
    sys.capset(keep, keep, keep)
