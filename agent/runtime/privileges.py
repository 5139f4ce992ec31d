"""Becoming the container's user: capabilities, uid/gid, no_new_privs.

Shared by a container's first process (process.py) and by every process
`mctl exec` starts in it (nsexec.py), so an exec'd shell is exactly as
confined as the container itself.
"""

from __future__ import annotations

import os

from . import capabilities
from . import syscalls as sc
from .oci.config import Config


def drop_to(sys: sc.Syscalls, config: Config, cap_top: int) -> None:
    """Cuts the bounding set, switches uid/gid, keeps only the config's capabilities."""
    keep = capabilities.mask_of(config.capabilities)
    mask = capabilities.mask_of
    capabilities.drop_bounding(sys, keep, cap_top)
    if config.uid != 0:
        # setuid would clear the permitted set; keep it, capset trims it below.
        sys.prctl(sc.PR_SET_KEEPCAPS, 1)
    os.setgroups(list(config.additional_gids))
    os.setgid(config.gid)
    os.setuid(config.uid)
    capabilities.set_capabilities(sys, mask(config.effective()), mask(config.permitted()),
                                  mask(config.cap_inheritable), mask(config.cap_ambient),
                                  cap_top)
    if config.no_new_privileges:
        sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def load_seccomp(sys: sc.Syscalls, config: Config, right_before_exec: bool) -> None:
    """Loads config.json's seccomp filter (seccomp/) at runc's point in the sequence.

    Called twice: before drop_to, and as the last step before exec. Without
    no_new_privileges the kernel lets only CAP_SYS_ADMIN load a filter, which
    drop_to takes away, so the first call loads it; with no_new_privileges
    the second does, so the filter sees as few of the runtime's own calls
    (setuid, capset, the fifo of `create`) as possible and a profile need
    not allow them.
    """
    if config.seccomp is not None and config.no_new_privileges == right_before_exec:
        sys.seccomp(config.seccomp.program, config.seccomp.flags)
