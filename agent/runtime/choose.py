"""`--runtime NAME` to a runtime: the native one, or an OCI runtime command."""

from __future__ import annotations

import os

from .api import Runtime
from .containerlog_writer import LogLimits
from .native import NativeRuntime
from .oci.client import resolve
from .oci.command import OciCommandRuntime


def make_runtime(name: str, state_dir: str, cgroup_root: str = "/sys/fs/cgroup",
                 log_limits: LogLimits | None = None) -> Runtime:
    """The runtime `--runtime NAME` asks for; RuntimeNotFound if there is no such command.

    An OCI runtime command keeps its own state (its --root) under `state_dir`.
    """
    if name == "native":
        return NativeRuntime(cgroup_root, log_limits)
    return OciCommandRuntime(resolve(name), os.path.join(state_dir, "oci-runtime"), cgroup_root,
                             log_limits)
