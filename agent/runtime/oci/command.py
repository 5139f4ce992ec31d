"""An OCI runtime command (runc, crun, mctl-runtime) behind the agent's `Runtime` protocol.

`mctl-agent --runtime runc` builds an `OciCommandRuntime`: the same zygote
and per-container monitor as the native runtime, but each monitor realizes
the bundle through the runtime's command line (client.py explains how and
why). The agent stops containers with `<runtime> kill` and, at teardown,
makes sure nothing is left with `<runtime> delete --force` plus a sweep of
the empty cgroup directories runc and crun leave in the hierarchies the
agent's own cgroup driver does not use.
"""

from __future__ import annotations

import logging
import os
import signal

from ..containerlog_writer import LogLimits
from ..native import Zygote
from ..state import Exit, StartResult, State, read_exit, read_state
from . import client

log = logging.getLogger(__name__)


class OciCommandRuntime:
    """The `Runtime` protocol (api.py) over an OCI runtime's command line."""

    def __init__(self, binary: str, root: str, cgroup_root: str = "/sys/fs/cgroup",
                 log_limits: LogLimits | None = None) -> None:
        self.binary = binary
        self.name = os.path.basename(binary)
        self.log_limits = log_limits or LogLimits()
        self.zygote = Zygote(cgroup_root)
        os.makedirs(root, mode=0o700, exist_ok=True)
        # The argv prefix of every call, passed to each monitor too.
        self.argv = client.base_argv(binary, root)
        log.info("runtime %s: %s", self.name, " ".join(self.argv))

    def warm_up(self) -> None:
        self.zygote.warm_up()

    def start(self, container_id: str, bundle: str) -> StartResult:
        return self.zygote.start(container_id, bundle, self.log_limits, self.argv)

    def kill(self, container_id: str, bundle: str, pid: int, sig: int) -> None:
        error = client.kill(self.argv, bundle, container_id, signal.Signals(sig).name)
        if error:
            # The init may have exited meanwhile; a stop goes on to the cgroup anyway.
            log.info("container=%s %s", container_id, error)

    def state(self, bundle: str) -> State | None:
        return read_state(bundle)

    def exit(self, bundle: str) -> Exit | None:
        return read_exit(bundle)

    def delete(self, container_id: str, bundle: str, cgroup: str) -> None:
        error = client.delete(self.argv, bundle, container_id)
        if error and "not exist" not in error:
            log.warning("container=%s %s", container_id, error)
        client.remove_empty_cgroups(cgroup)

    def close(self) -> None:
        self.zygote.close()
