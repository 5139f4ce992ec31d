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

The spare does ahead what needs no request: its session, its container's
stdout/stderr pipes, and the container's init itself (spawn.InitAhead),
forked into a new pid namespace and waiting for the request on a pipe of
its own that the zygote writes right after the spare's; both parse a
config.json shaped like the agent's once before they wait, so the real one
is read with warm code paths and allocator (`serve`'s `warm`). An init
ahead dies with its spare until it has its request.

Several starts are in flight at once (the agent starts independent
replicas concurrently, node.py): the zygote hands a request to its spare,
goes back to its socket, and polls the monitors' report pipes alongside
it. Replies go out as monitors report, in any order, so each request
carries a tag that its reply repeats. The next spare is forked at once
during a burst, otherwise once the zygote is idle (`hand_off` says why).

Protocol: one request per message, `TAG\nJSON` where TAG is the agent's
(ASCII digits, no newline) and JSON is `{"bundle": DIR, "id": ID}` plus
`"runtime": [argv...]` when an OCI runtime command realizes the bundle
(oci/client.py) and `"log": {"max_size": N, "max_files": M}` for the
container log's rotation (containerlog_writer.py); one reply per request,
`TAG\n` and the monitor's StartResult as JSON.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import sys

from . import cjson, monitor
from . import syscalls as sc
from .capabilities import last_cap
from .cgroups import detect
from .containerlog_writer import LogLimits
from .oci.config import ConfigError, load_config, parse_config
from .state import StartResult, State

# The zygote runs without `site` (native.zygote_argv) and imports only the
# start path, kept free of typing, dataclasses, socket, selectors, logging and
# the like: every fork copies the page tables of what it holds, and every
# container's exec tears that memory down again (bench/README.md, "Runtime
# start, second pass", has the zygote's RSS).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .seccomp import Profile as SeccompProfile


class Spare:
    """A monitor forked before its request arrives, waiting to be told its bundle.

    With `ahead` it also forks its container's init and warms up before it
    waits (monitor.Prepared, spawn.InitAhead); without, for a request that
    is already waiting, it only sets up what it must.

    fork(2) of this process (its page tables, then the child's first page
    faults) was a sixth of a native start while the request waited
    (bench/README.md, "Runtime start, second pass"). The zygote forks the
    next spare as soon as it has handed this one its request, while that
    start runs. It reads one request from a pipe, to end-of-file;
    end-of-file without a request means the zygote is gone, and it exits.
    `close`: the zygote's descriptors the monitor must not keep (the
    socket, other monitors' report pipes).
    """

    def __init__(self, close: tuple[int, ...],
                 start: Callable[[bytes, int, monitor.Prepared], None],
                 prepare: Callable[[tuple[int, ...], int, bool], monitor.Prepared],
                 ahead: bool = True) -> None:
        request_r, self.request_w = os.pipe2(os.O_CLOEXEC)
        self.report_r, report_w = os.pipe2(os.O_CLOEXEC)
        # The request again, for the container's init the spare forks ahead
        # (spawn.InitAhead): written by the zygote, so both wake at once.
        go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
        zygote = os.getpid()
        # What exists now is left out of the spare's garbage collections
        # (and its init's): a collection writes to every object it visits,
        # and each write to a page shared with the zygote copies the page.
        gc.freeze()
        self.pid = os.fork()
        if self.pid == 0:
            # Dies with the zygote until the monitor has reported (it clears
            # this then: monitor.py), so no start outlives the agent
            # half-done; see the module docstring.
            sc.libc().prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != zygote:     # the zygote died before the prctl took effect
                os._exit(0)
            _name_self(b"mctl-spare")
            for fd in close:
                os.close(fd)
            os.close(self.request_w)
            os.close(self.report_r)
            os.close(self.go_w)
            # The monitor's set-up and its container's init, ahead of the request.
            prepared = prepare((request_r, report_w), go_r, ahead)
            msg = monitor.read_all(request_r)
            if msg:
                start(msg, report_w, prepared)  # does not return
            os._exit(0)
        os.close(request_r)
        os.close(report_w)
        os.close(go_r)

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
            os.close(self.go_w)    # its init, if still there, reads end-of-file and exits
            return False
        # Only now, with the monitor known to have it: an init never starts
        # for a monitor that is gone (it would also find no cgroup made).
        try:
            os.write(self.go_w, msg)
        except BrokenPipeError:
            pass  # no init ahead: the monitor forks one
        finally:
            os.close(self.go_w)
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
    seccomp_profile = warm_seccomp()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    warm_doc = _representative_config(seccomp_profile)

    def warm() -> None:
        # Run in each spare and its init before they wait: the first parse in
        # a freshly forked process pays for copy-on-write faults and cold
        # allocator arenas (0.74 ms against 0.21 ms warm, measured at f9a9ba2).
        try:
            parse_config(cjson.loads(warm_doc))
        except (ConfigError, ValueError):
            pass  # only a warm-up; a real config's errors are reported by its start

    def prepare(close_in_child: tuple[int, ...], go_r: int, ahead: bool) -> monitor.Prepared:
        if not ahead:
            # Forked for a request already waiting: what is done ahead would
            # only come before it.
            return monitor.Prepared(libc, cap_top, close_in_child, None, go_r)
        prepared = monitor.Prepared(libc, cap_top, close_in_child, warm, go_r)
        warm()
        # And what the monitor encodes between the exec and its report.
        json.dumps(State("warm", 1, 1, 0, 0, 0).to_json())
        StartResult(1, 1).to_bytes()
        return prepared

    def start(msg: bytes, report_w: int, prepared: monitor.Prepared) -> None:
        # In the spare: from here on it is the container's monitor.
        request = json.loads(msg)
        bundle = request.get("bundle")
        if prepared.init is not None and (request.get("runtime") or not isinstance(bundle, str)):
            prepared.init.cancel()   # it has seen the same and exits; reaped here
            prepared.init = None
        # Seen in ps and by tests: which of the zygote's children have a start.
        _name_self(b"mctl-monitor")
        try:
            config = load_config(request["bundle"])
            log_limits = LogLimits(**request.get("log", {}))
        except (ConfigError, ValueError, TypeError) as e:
            if prepared.init is not None:
                prepared.init.cancel()
            os.write(report_w, StartResult(0, 0, str(e)).to_bytes())
            os._exit(0)
        # `runtime`: an OCI runtime command's argv, or None for native.
        monitor.run(libc, cgroups, request["bundle"], request["id"], config, report_w,
                    cap_top, request.get("runtime"), log_limits, prepared)

    pending: dict[int, Pending] = {}   # report pipe -> its start

    def fork_spare(ahead: bool = True) -> Spare:
        return Spare((sock, *pending), start, prepare, ahead)

    def hand_off(tag: bytes, body: bytes, spare: Spare) -> Spare | None:
        """Gives `body` to `spare` (or a fresh one if it died); returns the next spare, if any.

        The next spare is forked at once only while other starts are in
        flight (a burst, which it keeps fed); a lone start is left the CPUs:
        the fork, the spare's set-up, its init's fork and their warm-up
        (spawn.InitAhead) took a core for ~2.5 ms, which on two cores
        slowed the start they ran beside by more than the fork they save,
        and forked right at the report they delayed the agent's wake-up
        for the reply (bench/start.py's trace). The next spare is forked
        when the zygote is idle (`serve`'s loop), or at the request.
        """
        if not spare.hand(body):
            # Killed while it waited (the OOM killer, a stray signal),
            # before it had the request: nothing was started, so once more.
            spare = fork_spare(ahead=False)
            if not spare.hand(body):
                os.write(sock, Pending(tag, spare.pid).reply())
                return fork_spare()
        burst = bool(pending)
        pending[spare.report_r] = Pending(tag, spare.pid)
        poller.register(spare.report_r, select.POLLIN)
        return fork_spare() if burst else None

    poller = select.poll()
    poller.register(sock, select.POLLIN)
    spare: Spare | None = fork_spare()
    while True:
        # Without a spare: one once the zygote has been idle a moment with no
        # start in flight (see `hand_off` for why not sooner), or once a start
        # in flight is a slow one.
        events = poller.poll(None if spare is not None else
                             SPARE_AFTER_SLOW_MS if pending else SPARE_AFTER_IDLE_MS)
        if not events:
            spare = fork_spare()
        for fd, _events in events:
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
            spare = hand_off(tag, body, spare or fork_spare(ahead=False))


# How long the zygote waits without a spare: idle with no start in flight
# (long enough for the agent to read its reply before the fork takes a core),
# and with starts in flight that take long (an OCI runtime command, a slow
# mount), so a request that comes meanwhile still finds a spare.
SPARE_AFTER_IDLE_MS = 3
SPARE_AFTER_SLOW_MS = 50


def _name_self(name: bytes) -> None:
    """Sets this process's name (/proc/self/comm, what ps shows; man 5 proc)."""
    fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, name)
    finally:
        os.close(fd)


def _representative_config(seccomp_profile: SeccompProfile | None) -> bytes:
    """A config.json shaped like the agent's: all namespaces, /proc, /dev, /sys, limits,
    and the default seccomp profile (its cache lookup encodes the profile again)."""
    from .oci.config import Config, Resources, default_mounts, to_json

    return cjson.dumps(to_json(Config(
        ("/bin/true",), env=("PATH=/usr/bin:/bin", "HOSTNAME=warm"), hostname="warm",
        mounts=tuple(default_mounts()), cgroups_path="/mctl/warm",
        namespace_paths={"network": "/run/netns/warm"}, seccomp=seccomp_profile,
        resources=Resources(memory_limit=64 << 20, pids_limit=1024)))).encode()


def warm_seccomp() -> SeccompProfile | None:
    """Compiles the agent's default seccomp profile before any request; returns it.

    load_config parses config.json here, before the monitor is forked, and
    seccomp.parse keeps what it compiled: with the default profile warm, a
    start with it costs a lookup, not a compile (seccomp/).
    """
    from . import seccomp
    from .oci.config import DEFAULT_CAPABILITIES

    arch = seccomp.native_arch()
    if not arch:
        return None
    profile = None
    try:
        profile = seccomp.parse(seccomp.runtime_default(DEFAULT_CAPABILITIES, arch))
    except (ValueError, OSError):
        # A bad profile or no libseccomp: a start with the profile reports
        # it (ConfigError, BundleError); the zygote stays up.
        pass
    # libseccomp's working memory is freed but kept by malloc; hand it back,
    # or every monitor forked from the zygote carries it (~0.5 MiB).
    sc.load_libc().malloc_trim(0)
    return profile


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
