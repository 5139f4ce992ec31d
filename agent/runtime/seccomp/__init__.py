"""Seccomp: which system calls a container may make (man 2 seccomp).

A container's `linux.seccomp` (config.json) is checked field by field
(profile.py), turned into a classic BPF program by libseccomp through
ctypes (libseccomp.py, program.py), as runc and crun do, and the program's
bytes are kept per profile. process.py (and nsexec.py, for `mctl exec`)
load them through privileges.load_seccomp right before exec (or, without
no_new_privileges, before capabilities are dropped: loading a filter then
needs CAP_SYS_ADMIN), as runc does; the container's process needs no
libseccomp. default.py writes the agent's RuntimeDefault profile.

This package takes plain data and imports nothing of the OCI code: the
config parser calls `parse` and reports a ProfileError as its own error.
"""

from __future__ import annotations

from .default import runtime_default, syscall_names
from .libseccomp import LibseccompError
from .profile import Arg, Profile, ProfileError, Syscall, native_arch, parse_uncached
from .program import build, parse

__all__ = ["Arg", "LibseccompError", "Profile", "ProfileError", "Syscall", "build",
           "native_arch", "parse", "parse_uncached", "runtime_default", "syscall_names"]
