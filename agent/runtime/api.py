"""The runtime's face to the agent: the `Runtime` protocol, and choosing one by name.

A runtime realizes an OCI bundle (a directory with config.json and a root
file system, oci/config.py) as a running container, and later stops and
removes it. Two kinds satisfy the protocol:

- `NativeRuntime` (native.py): mctl's own, in-process through the zygote;
- `OciCommandRuntime` (oci/command.py): an OCI runtime command line, runc,
  crun or mctl-runtime (oci/cli.py), driven the way containerd's shim does.

Both start a container through a per-container monitor that outlives the
agent, so starting is one call that creates and starts (OCI's `run`), and
what a container did is read back from the files its monitor keeps
(state.py). The agent (containers.py) holds a `Runtime` and nothing else
of this package's runtimes; choose.py makes the one `--runtime` names.
"""

from __future__ import annotations

from typing import Protocol

from .containerlog_writer import LogLimits
from .state import Exit, StartResult, State


class StartError(Exception):
    """The runtime could not start a container; the message says which step failed."""


class Runtime(Protocol):
    """What the agent needs of a runtime; every method is safe to call from any thread."""

    # How `--runtime` named it (native, runc, crun, mctl-runtime) and the
    # size limits of the container logs its monitors write.
    name: str
    log_limits: LogLimits

    def warm_up(self) -> None:
        """Readies the start path now, so the first container does not pay for it."""

    def start(self, container_id: str, bundle: str) -> StartResult:
        """Creates and starts the container of `bundle`; raises StartError.

        Returns once the container's own program runs (or failed to), with
        its monitor's and init's pids.
        """

    def kill(self, container_id: str, bundle: str, pid: int, sig: int) -> None:
        """Sends `sig` to the container's init, `pid` (checked alive by the caller)."""

    def state(self, bundle: str) -> State | None:
        """The running container's processes; None before it runs."""

    def exit(self, bundle: str) -> Exit | None:
        """How the container ended; None while it runs or before it started."""

    def delete(self, container_id: str, bundle: str, cgroup: str) -> None:
        """Removes what the runtime keeps of a stopped container beyond bundle and cgroup."""

    def close(self) -> None:
        """Stops the runtime's helpers (the zygote); containers keep running."""
