"""`mctl-runtime exec`: another process in a running container, started as `runc exec` does.

    mctl-runtime exec [--process FILE] [--tty] [--console-socket PATH] [--detach]
                      [--pid-file FILE] [--cwd DIR] [--env K=V]... [--user UID[:GID]]
                      [--additional-gids GID]... [--cap CAP]... [--no-new-privs] ID [--] CMD...

What the process is: with `--process FILE` (podman's conmon and containerd's
shim write one), that runtime-spec `process` object and nothing else (a
command given too is refused; runc ignores it). Otherwise the container's
own config.json process with runc's overrides: the command replaces args,
--env values are appended, --cwd and --user (numbers) replace, --tty sets
`terminal` (without it the container's own setting stays, as in runc),
--additional-gids are appended, each --cap is added to the bounding,
effective, permitted and ambient sets, --no-new-privs sets noNewPrivileges.
It is checked as config.json is (config.py), together with the rest of the
container's config.json, whose seccomp filter the process gets.

How it gets in, in runc's order (runc's nsexec), through two forks:

1. the runtime opens /proc/INIT/ns/* of the container's init for each
   namespace that differs from its own (joining one's own user namespace
   is EINVAL), and connects to --console-socket, while the host's /proc
   and filesystem are in reach;
2. a first child joins the init's cgroup in every hierarchy (as the host's
   root, with the host's cgroupfs; init_cgroup_files), takes
   process.rlimits and process.oomScoreAdj, then setns(2) in runc's
   order: user, ipc, uts, net, pid, mnt, cgroup.
   The user namespace first gives the rest its capabilities; a namespace
   the container's user namespace does not own (a network namespace made
   by the host and joined by path) is joined before it, while still the
   host's root, since after it the kernel would refuse it (crun does the
   same). A container without a mount namespace of its own is
   chrooted into (/proc/INIT/root). Joining a pid namespace applies to
   children, so it forks;
3. the second child, pid N in the container's pid namespace, takes the
   terminal (../terminal.py: a pty of the container's devpts, its master
   sent over the console socket; setsid, TIOCSCTTY), loads the seccomp
   filter, drops to the process's capabilities, user and no_new_privs
   (privileges.py, as for the init), changes to cwd and execs;
4. the first child has told the runtime the second's pid and exited; the
   second's setup error, if any, comes back over a close-on-exec pipe (its
   end-of-file is the exec). With --detach the runtime writes --pid-file
   and exits 0 at once: the process is reparented to the caller's child
   subreaper (conmon). Otherwise the runtime is a child subreaper itself,
   forwards signals, proxies the terminal if there is one without a
   console socket (console.py), and exits with the process's status
   (128+N for signal N).

AppArmor and SELinux labels of the process are ignored, as everywhere else
with this runtime (docs/runtime.md).
"""

from __future__ import annotations

import os

from .. import cjson, signals
from . import cli_state, console
from .cli_args import Invocation
from .config_fields import JSONFileError, read_json_object

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from .. import syscalls as sc_types
    from .config import Config

# runc's configs.NamespaceTypes(): the order setns(2) is called in.
JOIN_ORDER = ("user", "ipc", "uts", "net", "pid", "mnt", "cgroup")
# linux/nsfs.h: the user namespace that owns a namespace, as a new descriptor.
NS_GET_USERNS = 0xB701
# A --process file is one process object; more than this is not one.
MAX_PROCESS_FILE = 1 << 20


def describe_failure(step: str, e: BaseException) -> str:
    """A child's setup error as the one line the caller reports: `exec: '/x': No such file
    or directory`, not Python's `[Errno 2] ...` (containerd's shim shows it to the user)."""
    text = str(e)
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename!r}: {e.strerror}" if e.filename is not None else e.strerror
    return f"{step}: {text}" if step else text


class ExecError(Exception):
    """exec cannot start the process; the message is the one line the user sees."""


def _flags() -> dict[str, int]:
    from .. import syscalls as sc

    return {"user": sc.CLONE_NEWUSER, "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS,
            "net": sc.CLONE_NEWNET, "pid": sc.CLONE_NEWPID, "mnt": sc.CLONE_NEWNS,
            "cgroup": sc.CLONE_NEWCGROUP}


# -- what process -------------------------------------------------------------------------


def _parse_user(text: str) -> tuple[int, int | None]:
    uid, colon, gid = text.partition(":")
    if not uid.isdigit() or (colon and not gid.isdigit()):
        raise ExecError(f"--user: {text!r} is not UID[:GID] (numbers)")
    return int(uid), int(gid) if colon else None


def process_from_flags(inv: Invocation, base: dict[str, Any]) -> dict[str, Any]:
    """The container's process object with runc's exec flags applied (see the docstring)."""
    from .config import DEFAULT_CAPABILITIES

    command = inv.args[1:]
    if not command:
        raise ExecError("exec: no command given (ID [--] COMMAND..., or --process FILE)")
    process = cjson.loads(cjson.dumps(base))   # a deep copy of plain JSON
    process["args"] = command
    if inv.env:
        process["env"] = [*process.get("env", []), *inv.env]
    if inv.cwd:
        process["cwd"] = inv.cwd
    if inv.tty is not None:
        process["terminal"] = inv.tty
    user = process.setdefault("user", {})
    if inv.user:
        uid, gid = _parse_user(inv.user)
        user["uid"] = uid
        if gid is not None:
            user["gid"] = gid
    for text in inv.additional_gids:
        if not text.isdigit():
            raise ExecError(f"--additional-gids: {text!r} is not a number")
        user["additionalGids"] = [*user.get("additionalGids", []), int(text)]
    if inv.cap:
        default = list(DEFAULT_CAPABILITIES)
        caps = process.setdefault("capabilities", {"bounding": default, "effective": default,
                                                   "permitted": default})
        for name in inv.cap:
            name = name.upper() if name.upper().startswith("CAP_") else f"CAP_{name.upper()}"
            for key in ("bounding", "effective", "permitted", "ambient"):
                have = caps.setdefault(key, [])
                if name not in have:
                    caps[key] = [*have, name]
    if inv.no_new_privs:
        process["noNewPrivileges"] = True
    return process


def _read_process_file(path: str) -> dict[str, Any]:
    try:
        return read_json_object(path, MAX_PROCESS_FILE, "a process")
    except JSONFileError as e:
        raise ExecError(f"--process {path}: {e}") from None


def exec_config(inv: Invocation, bundle: str, seccomp_cache: str | None) -> Config:
    """The container's config.json with its process replaced by the one to exec."""
    from .config import ConfigError, parse_config

    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            doc = cjson.loads(f.read())
    except (OSError, ValueError) as e:
        raise ExecError(f"{path}: cannot be read: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("process", {}), dict):
        raise ExecError(f"{path}: not a config.json")
    if inv.process:
        if len(inv.args) > 1:
            raise ExecError("exec: give either --process FILE or a command, not both")
        doc["process"] = _read_process_file(inv.process)
    else:
        doc["process"] = process_from_flags(inv, doc.get("process", {}))
    try:
        return parse_config(doc, seccomp_cache)
    except ConfigError as e:
        where = f"--process {inv.process}: " if inv.process else ""
        raise ExecError(f"{where}{e}") from None


# -- how it gets in -----------------------------------------------------------------------


def join_order(names: list[str] | tuple[str, ...], not_owned: set[str]) -> list[str]:
    """runc's order over `names`, except that those the container's user namespace does
    not own come before it (see the docstring)."""
    ordered = [n for n in JOIN_ORDER if n in names]
    if "user" not in ordered:
        return ordered
    early = [n for n in ordered if n in not_owned and n != "user"]
    return early + [n for n in ordered if n not in early]


def _owner_inode(fd: int) -> int:
    """The inode of the user namespace that owns namespace `fd`, 0 if the kernel cannot say."""
    import fcntl

    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    except OSError:
        return 0
    try:
        return os.fstat(owner).st_ino
    finally:
        os.close(owner)


def open_namespaces(init_pid: int) -> list[tuple[str, int]]:
    """(name, descriptor) of each namespace of `init_pid` that is not ours, in join order."""
    opened: dict[str, int] = {}
    try:
        for name in JOIN_ORDER:
            path = f"/proc/{init_pid}/ns/{name}"
            if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                opened[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        for fd in opened.values():
            os.close(fd)
        raise
    not_owned: set[str] = set()
    if "user" in opened:
        user = os.fstat(opened["user"]).st_ino
        not_owned = {n for n, fd in opened.items()
                     if n != "user" and _owner_inode(fd) not in (user, 0)}
    return [(name, opened[name]) for name in join_order(list(opened), not_owned)]


def join(sys: sc_types.Syscalls, opened: list[tuple[str, int]]) -> None:
    """setns(2) into each, in the order given; closes each descriptor once joined."""
    flags = _flags()
    for name, fd in opened:
        try:
            sys.setns(fd, flags[name])
        except OSError as e:
            raise OSError(f"setns {name}: {e.strerror or e}") from None
        os.close(fd)


def init_cgroup_files(init_pid: int, mountinfo: str = "/proc/self/mountinfo",
                      proc: str = "/proc") -> list[str]:
    """The file in each mounted hierarchy that moves a thread into the init's cgroup there.

    Every hierarchy the init is in, as runc joins all of a container's cgroup
    paths: the driver's own four and those `create` added (freezer, blkio,
    devices, ...). From /proc/INIT/cgroup (`id:controllers:path`) and this
    process's cgroup mounts (mountinfo's super options name the controllers).
    v1's `tasks`, where writing 0 moves only the writing thread (the whole
    of a single-threaded process, without cgroup.procs' global lock: see
    cgroups/v1.py); v2's cgroup.procs.
    """
    mounts: list[tuple[set[str], str, str]] = []   # (controllers, mount root, mount point)
    with open(mountinfo) as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
                continue
            controllers = {""} if rest[0] == "cgroup2" else set(rest[2].split(","))
            mounts.append((controllers, fields[3], fields[4]))
    files = []
    with open(f"{proc}/{init_pid}/cgroup") as f:
        for line in f:
            _, key, path = line.rstrip("\n").split(":", 2)
            wanted = set(key.split(",")) if key else {""}
            for controllers, root, point in mounts:
                if not wanted <= controllers:
                    continue
                if root != "/" and not (path == root or path.startswith(root + "/")):
                    continue
                rel = path[len(root):] if root != "/" else path
                name = "cgroup.procs" if key == "" else "tasks"
                files.append(os.path.join(point, rel.lstrip("/"), name))
                break
    return files


def _first_child(sys: sc_types.Syscalls, config: Config, join_files: list[str],
                 opened: list[tuple[str, int]], root_fd: int, console_fd: int,
                 pid_w: int, sync_w: int, cap_top: int) -> NoReturn:
    # Every module the children use is imported by cmd_exec before the fork:
    # after the mount namespace is joined the host's files are out of reach.
    from .. import rlimits
    from ..process import join_cgroup, set_oom_score_adj

    step = "cgroup"
    try:
        join_cgroup(join_files)
        step = "process.rlimits"
        rlimits.apply(config.rlimits)
        if config.oom_score_adj is not None:
            step = "process.oomScoreAdj"
            set_oom_score_adj(config.oom_score_adj)
        step = ""
        join(sys, opened)
        if root_fd >= 0:
            # The container has no mount namespace of its own: it was chrooted.
            step = "chroot"
            os.fchdir(root_fd)
            sys.chroot(".")
            os.close(root_fd)
        step = "fork"
        try:
            pid = os.fork()
        except BlockingIOError:
            limit = config.resources.pids_limit
            raise OSError("the container is at its pids limit"
                          + (f" ({limit})" if limit is not None else "")) from None
        if pid == 0:
            os.close(pid_w)
            _second_child(sys, config, console_fd, sync_w, cap_top)
        os.write(pid_w, str(pid).encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - everything must reach the runtime
        try:
            os.write(sync_w, describe_failure(step, e).encode()[:4000])
        finally:
            os._exit(1)


def _second_child(sys: sc_types.Syscalls, config: Config, console_fd: int,
                  sync_w: int, cap_top: int) -> NoReturn:
    from .. import privileges
    from ..process import env_dict, exec_program

    step = "start"
    try:
        if console_fd >= 0:
            from .. import terminal

            step = "process.terminal"
            terminal.attach(sys, console_fd, config.console_size, bind_console=False)
        step = "linux.seccomp"
        privileges.load_seccomp(sys, config, right_before_exec=False)
        step = "capabilities, user, no_new_privs"
        privileges.drop_to(sys, config, cap_top)
        step = "process.cwd"
        os.chdir(config.cwd)
        for sig in (signals.SIGPIPE, signals.SIGXFSZ, signals.SIGCHLD, signals.SIGINT,
                    signals.SIGTERM, signals.SIGHUP, signals.SIGQUIT, signals.SIGUSR1,
                    signals.SIGUSR2, signals.SIGWINCH):
            signals.set_handler(sig, signals.SIG_DFL)
        os.closerange(3, sync_w)
        os.closerange(sync_w + 1, 1 << 16)
        step = "linux.seccomp"
        privileges.load_seccomp(sys, config, right_before_exec=True)
        step = "exec"
        exec_program(list(config.args), env_dict(config.env))
    except BaseException as e:  # noqa: BLE001 - everything must reach the runtime
        try:
            os.write(sync_w, describe_failure(step, e).encode()[:4000])
        finally:
            os._exit(127)


def run(inv: Invocation, seccomp_cache: str, write_pid_file: Callable[[str, int], None]) -> int:
    """The exec command; returns its exit status. `write_pid_file` is the CLI's (atomic)."""
    from .. import privileges, process, rlimits  # noqa: F401 - for the children (above)
    from .. import syscalls as sc
    from ..capabilities import last_cap
    from ..spawn import read_all

    c = cli_state.load(inv.root, inv.id)
    status = c.status()
    # A frozen process would not run; runc refuses too unless --ignore-paused.
    allowed = (cli_state.CREATED, cli_state.RUNNING) + \
        ((cli_state.PAUSED,) if inv.ignore_paused else ())
    if status not in allowed:
        raise ExecError(f"cannot exec in container {inv.id}: it is {status}")
    if inv.preserve_fds != "0":
        raise ExecError("--preserve-fds: passing extra descriptors is not supported")
    config = exec_config(inv, c.bundle, seccomp_cache)
    sys_ = sc.libc()
    try:
        join_files = init_cgroup_files(c.pid)
    except (OSError, ValueError) as e:
        raise ExecError(f"cannot exec in container {inv.id}: its cgroups: {e} "
                        "(has it stopped?)") from None
    try:
        console_fd, proxy = console.open_for(config.terminal, inv.detach, inv.console_socket)
    except OSError as e:
        raise ExecError(str(e)) from None
    opened: list[tuple[str, int]] = []
    root_fd = -1
    try:
        if console_fd >= 0:
            import socket  # noqa: F401 - terminal.send_fd's, loaded before the joins

            from .. import terminal  # noqa: F401 - likewise
        try:
            opened = open_namespaces(c.pid)
            if "mnt" not in dict(opened):
                root_fd = os.open(f"/proc/{c.pid}/root", os.O_PATH | os.O_DIRECTORY
                                  | os.O_CLOEXEC)
        except OSError as e:
            raise ExecError(f"cannot exec in container {inv.id}: its namespaces: "
                            f"{e.strerror or e} (has it stopped?)") from None
        if not inv.detach:
            # The process's parent exits at once; as a subreaper we inherit it.
            sys_.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        first = os.fork()
        if first == 0:
            os.close(pid_r)
            os.close(sync_r)
            _first_child(sys_, config, join_files, opened, root_fd, console_fd, pid_w, sync_w,
                         last_cap())
        os.close(pid_w)
        os.close(sync_w)
        for _, fd in opened:
            os.close(fd)
        opened = []
        if root_fd >= 0:
            os.close(root_fd)
            root_fd = -1
        console.close_child_side(console_fd, proxy)
        console_fd = -1
        pid_text = read_all(pid_r)
        os.close(pid_r)
        os.waitpid(first, 0)
        error = read_all(sync_r).decode(errors="replace")
        os.close(sync_r)
        pid = int(pid_text) if pid_text.isdigit() else 0
        if error:
            if pid and not inv.detach:
                _reap(pid)
            raise ExecError(f"exec in container {inv.id}: {error}")
        if proxy is not None:
            proxy.receive(size_given=config.console_size is not None)
        if inv.pid_file:
            write_pid_file(inv.pid_file, pid)
    except BaseException:
        for _, fd in opened:
            os.close(fd)
        if root_fd >= 0:
            os.close(root_fd)
        console.close_child_side(console_fd, proxy)
        if proxy is not None:
            proxy.close()
        raise
    if inv.detach:
        return 0

    def forward(sig: int, _frame: object) -> None:
        if sig == signals.SIGWINCH and proxy is not None:
            proxy.resize()
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT,
                signals.SIGUSR1, signals.SIGUSR2, signals.SIGWINCH):
        signals.set_handler(sig, forward)
    if proxy is not None:
        wstatus = proxy.pump(pid)
    else:
        wstatus = _reap(pid)
    code = os.waitstatus_to_exitcode(wstatus)
    return code if code >= 0 else 128 - code


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0
