"""An OCI runtime command (runc, crun, mctl-runtime) behind the agent's runtime interface.

`mctl-agent --runtime runc` builds an `ExternalRuntime`: the same zygote and
per-container monitor as the native runtime, but each monitor realizes the
bundle through the runtime's command line (ociclient.py explains how and
why). The agent stops containers with `<runtime> kill` and, at teardown,
makes sure nothing is left with `<runtime> delete --force` plus a sweep of
the empty cgroup directories runc and crun leave in the hierarchies the
agent's own cgroup driver does not use.
"""

from __future__ import annotations

import logging
import os
import signal

from . import ociclient
from .crilog import LogLimits
from .native import NativeRuntime

log = logging.getLogger(__name__)


def make_runtime(name: str, state_dir: str, cgroup_root: str = "/sys/fs/cgroup",
                 log_limits: LogLimits | None = None) -> NativeRuntime:
    """The runtime `--runtime NAME` asks for; RuntimeNotFound if there is no such command."""
    if name == "native":
        return NativeRuntime(cgroup_root, log_limits)
    binary = ociclient.resolve(name)
    return ExternalRuntime(binary, os.path.join(state_dir, "oci-runtime"), cgroup_root,
                           log_limits)


class ExternalRuntime(NativeRuntime):
    def __init__(self, binary: str, root: str, cgroup_root: str = "/sys/fs/cgroup",
                 log_limits: LogLimits | None = None) -> None:
        super().__init__(cgroup_root, log_limits)
        self.binary = binary
        self.name = os.path.basename(binary)
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.argv = ociclient.base_argv(binary, root)
        log.info("runtime %s: %s", self.name, " ".join(self.argv))

    def _request(self, container_id: str, bundle: str) -> dict[str, object]:
        return {**super()._request(container_id, bundle), "runtime": self.argv}

    def kill(self, container_id: str, bundle: str, pid: int, sig: int) -> None:
        error = ociclient.kill(self.argv, bundle, container_id, signal.Signals(sig).name)
        if error:
            # The init may have exited meanwhile; a stop goes on to the cgroup anyway.
            log.info("container=%s %s", container_id, error)

    def remove(self, container_id: str, bundle: str, cgroup: str) -> None:
        error = ociclient.delete(self.argv, bundle, container_id)
        if error and "not exist" not in error:
            log.warning("container=%s %s", container_id, error)
        ociclient.remove_empty_cgroups(cgroup)
