"""The zygote: a small single-threaded process that forks container monitors.

The agent is a gRPC server with many threads, and fork(2) in a threaded
process copies locks that other threads may hold, so the agent never forks
containers itself. At start-up it spawns this zygote, which imports only what
container start needs, and asks it over a SOCK_SEQPACKET socket pair to start
a bundle. The zygote forks a monitor (monitor.py) per container ahead of
need (a spare that waits for its request: `Spare`), hands it the request,
waits for the monitor's start report and passes it back. Warm imports and a small
address space keep each fork cheap, which is what makes in-agent start fast.

The zygote dies with the agent (PR_SET_PDEATHSIG), and so does a monitor
until it has recorded its container (state.json) and reported the start:
after that, monitors belong to no agent and are adopted by the next one.
So once an agent is gone, no start of its is still going on: a bundle
without state.json is one that no monitor will ever finish, which is how
the next agent tells a half-made container (containers.py, adopt_all;
docs/parallel-starts.md). SIGCHLD is ignored here, so the kernel reaps
monitors that exit while the zygote lives.

Several starts are in flight at once (the agent starts independent
replicas concurrently, node.py): the zygote hands a request to its spare,
forks the next spare at once and goes back to its socket, and polls the
monitors' report pipes alongside it. Replies go out as monitors report, in
any order, so each request carries a tag that its reply repeats.

Protocol: one request per message, `TAG\nJSON` where TAG is the agent's
(ASCII digits, no newline) and JSON is `{"bundle": DIR, "id": ID}` plus
`"runtime": [argv...]` when an OCI runtime command realizes the bundle
(oci/client.py) and `"log": {"max_size": N, "max_files": M}` for the
container log's rotation (containerlog_writer.py); one reply per request,
`TAG\n` and the monitor's StartResult as JSON.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from . import monitor
from . import syscalls as sc
from .capabilities import last_cap
from .cgroups import detect
from .containerlog_writer import LogLimits
from .oci.config import ConfigError, load_config
from .state import StartResult

# The zygote runs without `site` (native.zygote_argv) and imports only the
# start path, kept free of typing, dataclasses, socket, selectors, logging and
# the like: every fork copies the page tables of what it holds, and every
# container's exec tears that memory down again (bench/README.md, "Runtime
# start, second pass", has the zygote's RSS).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Spare:
    """A monitor forked before its request arrives, waiting to be told its bundle.

    fork(2) of this process (its page tables, then the child's first page
    faults) was a sixth of a native start while the request waited
    (bench/README.md, "Runtime start, second pass"). The zygote forks the
    next spare as soon as it has handed this one its request, while that
    start runs. It reads one request from a pipe, to end-of-file;
    end-of-file without a request means the zygote is gone, and it exits.
    `close`: the zygote's descriptors the monitor must not keep (the
    socket, other monitors' report pipes).
    """

    def __init__(self, close: tuple[int, ...], start: Callable[[bytes, int], None]) -> None:
        request_r, self.request_w = os.pipe2(os.O_CLOEXEC)
        self.report_r, report_w = os.pipe2(os.O_CLOEXEC)
        zygote = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            # Dies with the zygote until the monitor has reported (it clears
            # this then: monitor.py), so no start outlives the agent
            # half-done; see the module docstring.
            sc.libc().prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != zygote:     # the zygote died before the prctl took effect
                os._exit(0)
            for fd in close:
                os.close(fd)
            os.close(self.request_w)
            os.close(self.report_r)
            msg = monitor.read_all(request_r)
            if msg:
                start(msg, report_w)  # does not return
            os._exit(0)
        os.close(request_r)
        os.close(report_w)

    def hand(self, msg: bytes) -> bool:
        """Gives the spare its request; False if it was already gone (nothing started).

        Its report then arrives on `report_r`, to end-of-file.
        """
        try:
            try:
                os.write(self.request_w, msg)
            finally:
                os.close(self.request_w)
        except BrokenPipeError:
            os.close(self.report_r)
            return False
        return True


class Pending:
    """A start handed to a monitor, until its report pipe reaches end-of-file."""

    def __init__(self, tag: bytes, pid: int) -> None:
        self.tag = tag
        self.pid = pid
        self.chunks: list[bytes] = []

    def reply(self) -> bytes:
        report = b"".join(self.chunks) or StartResult(
            self.pid, 0, "monitor exited before reporting").to_bytes()
        return self.tag + b"\n" + report


def serve(sock: int, cgroup_root: str) -> None:
    """Serves start requests from the agent on `sock`, a SOCK_SEQPACKET descriptor.

    Plain read(2) and write(2) keep a seqpacket socket's message boundaries,
    so the `socket` module (which imports selectors and enum) is not needed;
    `select.poll` (a C module the monitor loads anyway) waits on the socket
    and the report pipes of the starts in flight.
    """
    libc = sc.libc()
    cgroups = detect(cgroup_root)
    cap_top = last_cap()
    warm_seccomp()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def start(msg: bytes, report_w: int) -> None:
        # In the spare: from here on it is the container's monitor.
        request = json.loads(msg)
        try:
            config = load_config(request["bundle"])
            log_limits = LogLimits(**request.get("log", {}))
        except (ConfigError, ValueError, TypeError) as e:
            os.write(report_w, StartResult(0, 0, str(e)).to_bytes())
            os._exit(0)
        # `runtime`: an OCI runtime command's argv, or None for native.
        monitor.run(libc, cgroups, request["bundle"], request["id"], config, report_w,
                    cap_top, request.get("runtime"), log_limits)

    pending: dict[int, Pending] = {}   # report pipe -> its start

    def fork_spare() -> Spare:
        return Spare((sock, *pending), start)

    poller = select.poll()
    poller.register(sock, select.POLLIN)
    spare = fork_spare()
    while True:
        for fd, _events in poller.poll():
            if fd != sock:
                chunk = os.read(fd, 65536)
                if chunk:
                    pending[fd].chunks.append(chunk)
                    continue
                poller.unregister(fd)
                os.close(fd)
                os.write(sock, pending.pop(fd).reply())
                continue
            msg = os.read(sock, 65536)
            if not msg:
                return
            tag, _, body = msg.partition(b"\n")
            if not spare.hand(body):
                # Killed while it waited (the OOM killer, a stray signal),
                # before it had the request: nothing was started, so once more.
                spare = fork_spare()
                if not spare.hand(body):
                    os.write(sock, Pending(tag, spare.pid).reply())
                    spare = fork_spare()
                    continue
            pending[spare.report_r] = Pending(tag, spare.pid)
            poller.register(spare.report_r, select.POLLIN)
            # Forked now, while that start runs: the next request finds it waiting.
            spare = fork_spare()


def warm_seccomp() -> None:
    """Compiles the agent's default seccomp profile before any request.

    load_config parses config.json here, before the monitor is forked, and
    seccomp.parse keeps what it compiled: with the default profile warm, a
    start with it costs a lookup, not a compile (seccomp/).
    """
    from . import seccomp
    from .oci.config import DEFAULT_CAPABILITIES

    arch = seccomp.native_arch()
    if not arch:
        return
    try:
        seccomp.parse(seccomp.runtime_default(DEFAULT_CAPABILITIES, arch))
    except (ValueError, OSError):
        # A bad profile or no libseccomp: a start with the profile reports
        # it (ConfigError, BundleError); the zygote stays up.
        pass
    # libseccomp's working memory is freed but kept by malloc; hand it back,
    # or every monitor forked from the zygote carries it (~0.5 MiB).
    sc.load_libc().malloc_trim(0)


def main() -> None:
    fd = int(sys.argv[1])
    cgroup_root = sys.argv[2] if len(sys.argv) > 2 else "/sys/fs/cgroup"
    parent = os.getppid()
    sc.libc().prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the agent died before the prctl took effect
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(fd, cgroup_root)


if __name__ == "__main__":
    main()
