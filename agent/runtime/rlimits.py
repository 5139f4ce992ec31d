"""Resource limits of the container's processes: config.json's process.rlimits.

setrlimit(2) (man 2 getrlimit) caps what one process may use (open files,
core size, locked memory, ...); the limits are inherited across fork and
execve, so setting them on the container's first process, before exec,
limits everything it starts. Raising a hard limit needs CAP_SYS_RESOURCE in
the initial user namespace, so this runs while the process is still the
host's root: before a user namespace is entered and before capabilities are
dropped. `mctl exec` applies the same limits to the processes it starts.

Runs between fork and exec: no logging, no imports at call time.
"""

from __future__ import annotations

import resource

from .oci.config import RLIMITS, Rlimit

# Values from 2**63 up do not fit Python's resource module (it takes a C
# long long); the kernel treats them as unlimited anyway.
_INFINITE_FROM = 1 << 63


def _value(limit: int) -> int:
    return resource.RLIM_INFINITY if limit >= _INFINITE_FROM else limit


def apply(limits: tuple[Rlimit, ...]) -> None:
    """Sets each limit (soft and hard at once); the error names the limit."""
    for limit in limits:
        try:
            resource.setrlimit(RLIMITS[limit.type], (_value(limit.soft), _value(limit.hard)))
        except (OSError, ValueError) as e:
            raise OSError(f"{limit.type} soft={limit.soft} hard={limit.hard}: {e}") from None
