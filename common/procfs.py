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
