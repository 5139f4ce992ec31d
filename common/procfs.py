"""Reading /proc: telling a process from a later one that reuses its pid (man 5 proc)."""

from __future__ import annotations


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (start time in clock ticks); 0 if there is no such process.

    A pid plus its start time names one process for good, so code that
    signals a recorded pid checks both and never hits a stranger.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces or ")": split after the last ")".
        return int(stat.rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def children(parent: int) -> list[tuple[int, str, int]]:
    """(pid, state letter, session id) of each process whose parent is `parent`, zombies too.

    From every /proc/PID/stat (fields 3, 4 and 6); for leak checks and
    benchmarks that look for a process's children.
    """
    import os

    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append((int(entry), fields[0].decode(), int(fields[3])))
    return out


def comm(pid: int) -> str:
    """/proc/PID/comm, the name a process gave itself (zygote.py names its
    spares and monitors); "" if there is no such process."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """(pid, command line) of every other process whose command line contains `needle`.

    What leak checks (tests, bench, `cluster down`) look for: a process that
    still names a directory or cluster that should be gone.
    """
    import os

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append((int(entry), cmdline))
    return found


def mounts_mentioning(needle: str) -> list[str]:
    """Lines of this process's /proc/self/mountinfo that contain `needle`."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if needle in line]
