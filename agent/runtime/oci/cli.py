"""`mctl-runtime`: the native runtime behind the OCI runtime command line.

containerd, CRI-O and podman drive runc and crun through one command line
(runtime-spec runtime.md, "Operations"; runc's man pages for the flags):
`create` sets a container up from a bundle and leaves its process waiting,
`start` lets it exec the user's program, `state` prints the state JSON,
`kill` signals it, `delete` removes what create made. This command speaks
that interface over the same code the agent's in-process runtime uses:
config.json through config.py, the cgroup through cgroups/, the fork into the
pid namespace through spawn.py and everything from namespaces to exec
through process.py. State lives under --root (cli_state.py).

How `create` holds the process before exec is runc's design: the init opens
an O_PATH descriptor to `<root>/<id>/exec.fifo` before it pivots, sets up
everything, looks the program up, tells `create` it is ready (by closing the
sync pipe), then opens /proc/self/fd/N for writing, which blocks until
`start` opens the fifo for reading (man 7 fifo). `start` reads one byte and
removes the fifo: from then on the state is "running". The init keeps the
fifo open in the sync pipe's place until exec closes it, so `start` reads on
to end-of-file: it returns once the program was exec'd (then the poststart
hooks run), and whatever comes after the byte is an error from after
`start` (a startContainer hook's), which fails `start` and destroys the
container. Hooks (hooks.py) run at the points runtime-spec's "Lifecycle"
names; `create` records them in state.json for `start` and `delete`.

Errors are one line on stderr (and in --log), exit status 1; usage errors
exit 2. No traceback reaches the user.

Imports are deliberately lazy: `run` is measured against `runc run` as a
whole process, and Python's start-up is most of its cost.
"""

from __future__ import annotations

import os
import sys

from . import cli_state
from .cli_args import USAGE, VERSION, Invocation, UsageError, parse, parse_signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..cgroups.base import CgroupDriver
    from ..hooks import Lifecycle
    from .config import Config
    from .console import Proxy

PROG = "mctl-runtime"
# Under --root; "@" is not allowed in a container id, so it names no container.
SECCOMP_CACHE = "seccomp@cache"


class RuntimeFailure(Exception):
    """A command could not do its work; the message is the one line the user sees."""


# -- logging to --log, as runc does (containerd reads the last error from it) -------------


def log_line(inv: Invocation, level: str, msg: str) -> None:
    if not inv.log:
        return
    stamp = cli_state.rfc3339_now()
    if inv.log_format == "json":
        from .. import cjson

        line = cjson.dumps({"level": level, "msg": msg, "time": stamp})
    else:
        line = f'time="{stamp}" level={level} msg="{msg}"'
    try:
        with open(inv.log, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        print(f"{PROG}: --log {inv.log}: {e.strerror}", file=sys.stderr)


def warn(inv: Invocation, msg: str) -> None:
    """A warning (a poststart or poststop hook failed): stderr and --log, the command succeeds."""
    log_line(inv, "warning", msg)
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


def debug(inv: Invocation, msg: str) -> None:
    if inv.debug:
        log_line(inv, "debug", msg)
        if not inv.log:
            print(f"{PROG}: {msg}", file=sys.stderr)


# -- create, start, run ---------------------------------------------------------------------


def _unsupported(inv: Invocation, config: object) -> None:
    """Refuses what this runtime does not implement, naming the flag or field."""
    if inv.systemd_cgroup:
        raise RuntimeFailure("--systemd-cgroup: systemd cgroup paths are not supported; "
                             "use cgroupfs paths")
    if inv.no_pivot:
        raise RuntimeFailure("--no-pivot: not supported; the rootfs is always pivoted into")
    if inv.preserve_fds != "0":
        raise RuntimeFailure("--preserve-fds: passing extra descriptors is not supported")


def _lookup(program: str, env: tuple[str, ...]) -> str:
    """The file execvpe will run, resolved inside the container (runc checks before start)."""
    if "/" in program:
        candidates = [program]
    else:
        path = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/bin:/bin")
        candidates = [os.path.join(d or ".", program) for d in path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{program!r}: executable file not found in $PATH")


def _create(inv: Invocation, started: bool) -> tuple[cli_state.Container, int, Proxy | None]:
    """Sets the container up; with `started` its process execs at once (run), else it
    waits on exec.fifo (create). Returns the record, the init's pid and, for a
    foreground `run` with a terminal, the terminal to proxy (console.py)."""
    from .. import spawn
    from .. import syscalls as sc
    from ..capabilities import last_cap
    from .config import ConfigError, load_config, resources_json

    bundle = os.path.abspath(inv.bundle or ".")
    try:
        # A new process per call: built seccomp programs are kept under --root.
        config = load_config(bundle, os.path.join(inv.root, SECCOMP_CACHE))
    except ConfigError as e:
        raise RuntimeFailure(str(e)) from None
    _unsupported(inv, config)
    console_fd, proxy = _console(inv, config.terminal, detach=not started or inv.detach)
    try:
        # Saved below, once (a state file written is an inode made).
        c = cli_state.new(inv.root, inv.id, bundle, save=False)
    except OSError as e:
        raise RuntimeFailure(f"--root {inv.root}: {e.strerror}") from None
    cgroup = spawn.cgroup_path(config) or f"mctl-runtime/{inv.id}"
    lifecycle = None
    try:
        c.doc.update(cgroup=cgroup, rootfs=config.rootfs(bundle), annotations=config.annotations)
        if config.hooks is not None:
            from ..hooks import Lifecycle
            from .config import hooks_json

            # Kept for start and delete: a later change to config.json must not
            # change the container (runtime.md, "Lifecycle" step 2).
            c.doc["hooks"] = hooks_json(config.hooks)
            lifecycle = Lifecycle(config.hooks, c.oci_state_as(cli_state.CREATING, 0))
        c.save()
    except BaseException:
        # No record yet: nothing `delete` could find, so the claim goes too
        # (with a half-written state file, if that is what failed).
        try:
            for name in os.listdir(c.dir):
                os.unlink(os.path.join(c.dir, name))
            os.rmdir(c.dir)
        except OSError:
            pass
        raise
    cgroups = None
    try:
        cgroups = _cgroup_driver()
        # What `update` merges into (cli_update.py).
        c.doc["resources"] = resources_json(config.resources)
        before_exec = None
        fifo_fd = -1
        if not started:
            os.mkfifo(c.fifo, 0o622)
            os.chmod(c.fifo, 0o622)     # as runc: whatever the umask, the init may open it
            if config.uid_mappings:     # ... also as a user namespace's root (userns.py)
                from ..userns import host_root

                os.chown(c.fifo, *host_root(config))
            fifo_fd = os.open(c.fifo, os.O_PATH | os.O_CLOEXEC)
            dir_fd = -1
            if "mount" not in config.namespaces or "mount" in config.namespace_paths:
                # A chroot without /proc (process.py): the fifo is reopened
                # through its directory instead of /proc/self/fd.
                dir_fd = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

            def before_exec(sync_fd: int) -> None:
                _lookup(config.args[0], config.env)
                # Putting stderr where the sync pipe was closes the pipe, which
                # tells `create` the container is ready; a later exec error
                # then goes to the container's stderr.
                os.dup2(2, sync_fd, inheritable=False)
                if dir_fd >= 0:
                    fd = os.open(os.path.basename(c.fifo), os.O_WRONLY | os.O_CLOEXEC,
                                 dir_fd=dir_fd)
                else:
                    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
                os.write(fd, b"0")
                # The fifo now takes the sync channel's place until exec closes
                # it: `start` reads to end-of-file, so it learns when the program
                # was exec'd (poststart waits for that) and what failed after
                # `start` (a startContainer hook, the exec).
                os.dup2(fd, sync_fd, inheritable=False)
                os.close(fd)

        debug(inv, f"creating container {inv.id} from {bundle} in cgroup {cgroup}")
        pid, sync_r = spawn.fork_init(sc.libc(), cgroups, cgroup, bundle, config, (0, 1, 2),
                                      last_cap(), before_exec, lifecycle=lifecycle,
                                      console_fd=console_fd,
                                      cgroup_extras=_cgroup_extras(inv, cgroups, cgroup, config))
        # The child has its copy; ours would keep the socket open for the
        # proxy's receive (or conmon's) after the child died.
        _close_console(console_fd, proxy)
        console_fd = -1
        if fifo_fd >= 0:
            os.close(fifo_fd)
            if dir_fd >= 0:
                os.close(dir_fd)
        error = spawn.wait_ready(pid, sync_r, lifecycle)
        if error:
            raise RuntimeFailure(error)
        if proxy is not None:
            proxy.receive(size_given=config.console_size is not None)
        c.doc.update(pid=pid, start_time=cli_state.proc_stat(pid)[1])
        c.save()
        if inv.pid_file:
            _write_pid_file(inv.pid_file, pid)
    except BaseException as e:
        _close_console(console_fd, proxy)
        if proxy is not None:
            proxy.close()
        try:
            _teardown(inv, c, cgroups)
        except RuntimeFailure as cleanup:
            log_line(inv, "warning", f"cleanup after a failed create: {cleanup}")
        if isinstance(e, RuntimeFailure | KeyboardInterrupt):
            raise
        raise RuntimeFailure(_error_text(e)) from None
    return c, pid, proxy


def _error_text(e: BaseException) -> str:
    """One line for an unexpected error: `'/proc/1/ns/pid': Permission denied`, not
    Python's `[Errno 13] ...` (containerd's shim shows the user this line)."""
    from .cli_exec import describe_failure  # only on failure: `run` does not pay for it

    return describe_failure("", e)


def _console(inv: Invocation, terminal: bool, detach: bool) -> tuple[int, Proxy | None]:
    """(the console socket descriptor for the process, or -1; the proxy, if the runtime
    holds the terminal itself), by runc's rules (console.py)."""
    if not terminal and not inv.console_socket:
        return -1, None
    from . import console

    try:
        return console.open_for(terminal, detach, inv.console_socket)
    except OSError as e:
        raise RuntimeFailure(_error_text(e)) from None


def _close_console(console_fd: int, proxy: Proxy | None) -> None:
    if console_fd >= 0 or proxy is not None:
        from . import console

        console.close_child_side(console_fd, proxy)


def _cgroup_extras(inv: Invocation, cgroups: CgroupDriver, cgroup: str,
                   config: Config) -> Callable[[], None]:
    """cpuset, devices, freezer and blkio (cgroups/container_setup.py), as runc sets them for
    every container: fork_init runs this once it made the cgroup and before the init joins,
    so the init joins them too. The agent's own start (spawn.fork_init alone) has none of it."""

    # Imported before the fork, not in setup(): the init waits for setup() to
    # finish, and an import after a fork runs into copy-on-write faults on
    # every page it touches: 1-3 ms there against under 1 ms here
    # (bench/README.md, "mctl-runtime run, fifth pass").
    from ..cgroups import container_setup

    def setup() -> None:
        for warning in container_setup.setup(cgroups, cgroup, config.resources.cgroup_extras,
                                             config.devices):
            warn(inv, warning)
    return setup


def _write_pid_file(path: str, pid: int) -> None:
    # Atomically, as runc does: a reader never sees an empty file.
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def cmd_create(inv: Invocation) -> int:
    _create(inv, started=False)
    return 0


def cmd_start(inv: Invocation) -> int:
    import select

    c = cli_state.load(inv.root, inv.id)
    status = c.status()
    if status != cli_state.CREATED:
        raise RuntimeFailure(f"cannot start container {inv.id}: it is {status}, not created")
    try:
        fd = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RuntimeFailure(f"cannot start container {inv.id}: already started") from None
    got = b""
    try:
        # Opening for reading releases the init's blocked open; it then writes
        # one byte, runs the startContainer hooks and execs, which closes its
        # end (close-on-exec): read to end-of-file, anything after the byte
        # is what failed. Poll in slices so an init that died before it
        # opened the fifo is noticed (no writer yet: no end-of-file either).
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(100):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                got += chunk
            elif not got and c.status() == cli_state.STOPPED:
                raise RuntimeFailure(f"cannot start container {inv.id}: its init exited")
    finally:
        os.close(fd)
    try:
        os.unlink(c.fifo)
    except FileNotFoundError:
        pass
    if not got:
        raise RuntimeFailure(f"cannot start container {inv.id}: its init exited")
    if len(got) > 1:
        # As a failed create: nothing is left but the error (runtime.md, step 7).
        _teardown(inv, c, None)
        raise RuntimeFailure(got[1:].decode(errors="replace"))
    debug(inv, f"started container {inv.id} pid {c.pid}")
    _poststart(inv, c)
    return 0


def _poststart(inv: Invocation, c: cli_state.Container) -> None:
    lifecycle = _lifecycle(c)
    if lifecycle is not None:
        for failure in lifecycle.run_all("poststart", cli_state.RUNNING, c.pid):
            warn(inv, failure)


def cmd_run(inv: Invocation) -> int:
    from .. import signals

    c, pid, proxy = _create(inv, started=True)
    if inv.detach:
        _poststart(inv, c)
        return 0

    def forward(sig: int, _frame: object) -> None:
        if sig == signals.SIGWINCH and proxy is not None:
            proxy.resize()      # the kernel signals the terminal's foreground group
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # As `runc run` does: signals to this process are the container's.
    for sig in (signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT,
                signals.SIGUSR1, signals.SIGUSR2, signals.SIGWINCH):
        signals.set_handler(sig, forward)
    # After the handlers: a signal while poststart hooks run is the container's too.
    _poststart(inv, c)
    if proxy is not None:
        status = proxy.pump(pid)
    else:
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    _teardown(inv, c, None)
    return code if code >= 0 else 128 - code


# -- state, kill, delete, list -----------------------------------------------------------------


def cmd_state(inv: Invocation) -> int:
    import json

    c = cli_state.load(inv.root, inv.id)
    print(json.dumps(c.oci_state(), indent=2))
    return 0


_driver: CgroupDriver | None = None


def _cgroup_driver() -> CgroupDriver:
    """The cgroup driver, probed once per command (`run` needs it to create and to delete)."""
    global _driver
    if _driver is None:
        from ..cgroups import detect

        _driver = detect()
    return _driver


def cmd_kill(inv: Invocation) -> int:
    sig_text = inv.args[1] if len(inv.args) > 1 else "SIGTERM"
    try:
        sig = parse_signal(sig_text.lstrip("-"))
    except ValueError as e:
        raise RuntimeFailure(str(e)) from None
    c = cli_state.load(inv.root, inv.id)
    status = c.status()
    if status not in (cli_state.CREATED, cli_state.RUNNING, cli_state.PAUSED):
        raise RuntimeFailure(f"cannot kill container {inv.id}: it is {status}")
    pids = [c.pid]
    if inv.all:
        driver = _cgroup_driver()
        pids = driver.pids(c.cgroup) or pids
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return 0


def _destroy(c: cli_state.Container, cgroups: CgroupDriver | None) -> None:
    """Kills what is left of the container, removes its cgroup and its state."""
    from ..cgroups import CgroupError

    if c.cgroup:
        try:
            driver = cgroups or _cgroup_driver()
            if c.frozen():
                _kill_frozen(c, driver)
            driver.destroy(c.cgroup, timeout=5.0)
        except (CgroupError, OSError) as e:
            raise RuntimeFailure(f"cgroup {c.cgroup}: {e}") from None
    cli_state.remove(c)


def _kill_frozen(c: cli_state.Container, driver: CgroupDriver) -> None:
    """A paused container's processes: SIGKILL, then thaw so it lands (a v1-frozen
    task acts on no signal), as runc's destroy does."""
    import signal

    from ..cgroups import freezer

    for pid in driver.pids(c.cgroup):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    freezer.thaw(driver, c.cgroup)


def _lifecycle(c: cli_state.Container) -> Lifecycle | None:
    """The container's hooks as `create` recorded them, or None."""
    if not c.doc.get("hooks"):
        return None
    from ..hooks import Lifecycle
    from .config import ConfigError, parse_hooks

    try:
        hooks = parse_hooks(c.doc["hooks"])
    except ConfigError as e:
        raise RuntimeFailure(f"{c.dir}/{cli_state.STATE_FILE}: {e}") from None
    return None if hooks is None else Lifecycle(hooks, c.oci_state_as(cli_state.CREATING, 0))


def _teardown(inv: Invocation, c: cli_state.Container, cgroups: CgroupDriver | None) -> None:
    """_destroy, then the poststop hooks, whose failures are warnings (runtime.md)."""
    _destroy(c, cgroups)
    lifecycle = _lifecycle(c)
    if lifecycle is not None:
        for failure in lifecycle.run_all("poststop", cli_state.STOPPED, 0):
            warn(inv, failure)


def cmd_delete(inv: Invocation) -> int:
    import signal

    try:
        c = cli_state.load(inv.root, inv.id)
    except cli_state.StateError:
        if not inv.force:
            raise
        # As runc: --force on a missing container succeeds, after removing a
        # directory that an aborted create may have left without state.json.
        leftover = os.path.join(inv.root, cli_state.check_id(inv.id))
        if os.path.isdir(leftover):
            cli_state.remove(cli_state.Container(inv.root, inv.id, {}))
        return 0
    status = c.status()
    if status in (cli_state.RUNNING, cli_state.CREATING, cli_state.PAUSED) and not inv.force:
        raise RuntimeFailure(f"cannot delete container {inv.id}: it is {status} "
                             "(stop it first, or use --force)")
    if status in (cli_state.CREATED, cli_state.RUNNING, cli_state.PAUSED):
        # A created container is deleted without --force, as runc does.
        try:
            os.kill(c.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _teardown(inv, c, None)
    return 0


def cmd_list(inv: Invocation) -> int:
    import json

    states = []
    for cid in cli_state.list_ids(inv.root):
        try:
            states.append(cli_state.load(inv.root, cid).oci_state())
        except cli_state.StateError:
            continue  # deleted while we listed
    if inv.quiet:
        print("\n".join(s["id"] for s in states))  # type: ignore[misc]
    elif inv.format == "json":
        print(json.dumps(states))
    else:
        print(f"{'ID':<24} {'PID':<8} {'STATUS':<9} {'BUNDLE':<40} CREATED")
        for s in states:
            print(f"{s['id']:<24} {s['pid']:<8} {s['status']:<9} {s['bundle']:<40} "
                  f"{s['created']}")
    return 0


def cmd_spec(inv: Invocation) -> int:
    """Writes a config.json template running `sh`, as `runc spec` does."""
    from . import config as oci

    path = os.path.join(inv.bundle or ".", "config.json")
    if os.path.exists(path):
        raise RuntimeFailure(f"{path} already exists")
    config = oci.Config(args=("sh",), env=(f"PATH={oci.DEFAULT_PATH}",), hostname="mctl",
                        mounts=tuple(oci.default_mounts()))
    oci.write_config(inv.bundle or ".", config)
    return 0


def cmd_ps(inv: Invocation) -> int:
    from . import cli_info  # ps and features only: run imports none of it

    sys.stdout.write(cli_info.ps(inv.root, inv.id, inv.format, inv.args[1:]))
    return 0


def cmd_exec(inv: Invocation) -> int:
    from . import cli_exec

    try:
        return cli_exec.run(inv, os.path.join(inv.root, SECCOMP_CACHE), _write_pid_file)
    except cli_exec.ExecError as e:
        raise RuntimeFailure(str(e)) from None


def cmd_features(inv: Invocation) -> int:
    from . import cli_info

    sys.stdout.write(cli_info.features_json())
    return 0


# -- pause, resume, update, events: the cgroup verbs (cli_pause.py, cli_update.py, cli_events.py)


def cmd_pause(inv: Invocation) -> int:
    from . import cli_pause

    try:
        cli_pause.pause(inv)
    except cli_pause.PauseError as e:
        raise RuntimeFailure(str(e)) from None
    return 0


def cmd_resume(inv: Invocation) -> int:
    from . import cli_pause

    try:
        cli_pause.resume(inv)
    except cli_pause.PauseError as e:
        raise RuntimeFailure(str(e)) from None
    return 0


def cmd_update(inv: Invocation) -> int:
    from . import cli_update

    try:
        warnings = cli_update.update(inv)
    except cli_update.UpdateError as e:
        raise RuntimeFailure(str(e)) from None
    for warning in warnings:
        warn(inv, warning)
    return 0


def cmd_events(inv: Invocation) -> int:
    from . import cli_events

    try:
        return cli_events.events(inv)
    except cli_events.EventsError as e:
        raise RuntimeFailure(str(e)) from None


COMMANDS = {
    "create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state,
    "kill": cmd_kill, "delete": cmd_delete, "list": cmd_list, "spec": cmd_spec,
    "ps": cmd_ps, "features": cmd_features, "exec": cmd_exec,
    "pause": cmd_pause, "resume": cmd_resume, "update": cmd_update, "events": cmd_events,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        inv = parse(args)
    except UsageError as e:
        if e.log:
            failed = Invocation()
            failed.log, failed.log_format = e.log, e.log_format
            log_line(failed, "error", str(e))
        print(f"{PROG}: {e} (see {PROG} --help)", file=sys.stderr)
        return 2
    if inv.command == "help":
        print(USAGE, end="")
        return 0
    if inv.command == "version":
        print(f"{PROG} version {VERSION}\nspec: {cli_state.OCI_VERSION}")
        return 0
    try:
        return COMMANDS[inv.command](inv)
    except (RuntimeFailure, cli_state.StateError) as e:
        message = str(e)
    except OSError as e:
        message = f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    except KeyboardInterrupt:
        message = "interrupted"
    log_line(inv, "error", message)
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def entry() -> None:
    """The console script: exits without the interpreter's tear-down (a few ms for `run`)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
