"""Runs a command inside a running container: what `mctl exec` ends in.

    python -m mctl.agent.runtime.nsexec --pid INIT_PID --bundle DIR [--tty] -- CMD...

The agent starts this as a plain child process (fork+exec, safe from its
threads) with the command's stdio already wired (pipes, or a pty's slave
side). It
1. joins the container's cgroups (so limits and accounting include it) and
   takes on its process.rlimits (rlimits.py), while still the host's root,
2. setns(2) into the container's namespaces, read from /proc/INIT_PID/ns
   and opened before any is joined (after joining the mount namespace the
   host's /proc is out of reach); its user namespace, if it has one, last:
   as the host's root this process may join the others (those the
   container's user namespace owns, and the network namespace the agent
   made, which the host's owns and the container's root could not join),
   and joining the user namespace makes it root in there with all
   capabilities, from which privileges.py drops to the container's,
3. forks, because joining a pid namespace only applies to children; the
   child takes the terminal (setsid, TIOCSCTTY) if there is one, becomes the
   container's user with the container's capabilities and no_new_privs
   (privileges.py), loads the container's seccomp filter where the
   container's own process did, and execs the command with config.json's
   env and cwd;
4. waits, and exits with the command's status (128+N for signal N).

Errors print one line to stderr and exit 126 (cannot set up) or 127
(command not found), as shells and `docker exec` do.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import termios
from typing import NoReturn

from . import rlimits
from . import syscalls as sc
from .capabilities import last_cap
from .cgroups import detect
from .oci.config import Config, ConfigError, load_config
from .privileges import drop_to, load_seccomp
from .process import env_dict
from .spawn import cgroup_path

# setns order: the user namespace last (see above); every fd is opened
# first, since entering the mount namespace hides the host's /proc.
ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt", "user")
FLAGS = {"cgroup": sc.CLONE_NEWCGROUP, "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS,
         "net": sc.CLONE_NEWNET, "pid": sc.CLONE_NEWPID, "mnt": sc.CLONE_NEWNS,
         "user": sc.CLONE_NEWUSER}


def fail(message: str, code: int = 126) -> NoReturn:
    print(f"mctl exec: {message}", file=sys.stderr, flush=True)
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    p = argparse.ArgumentParser(prog="nsexec")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--tty", action="store_true")
    p.add_argument("command", nargs="+")
    args = p.parse_args(argv)
    try:
        config = load_config(args.bundle)
    except (OSError, ConfigError) as e:
        fail(f"cannot read the container's config: {e}")
    libc = sc.libc()
    step = "cgroup"
    try:
        if config.cgroups_path:
            for path in detect().procs_files(cgroup_path(config)):
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
        step = "rlimits"
        rlimits.apply(config.rlimits)
        step = "namespaces"
        mine = {name: os.stat(f"/proc/self/ns/{name}").st_ino for name in ORDER}
        fds = []
        for name in ORDER:
            path = f"/proc/{args.pid}/ns/{name}"
            if os.stat(path).st_ino != mine[name]:    # only those the container has its own of
                fds.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        for name, fd in fds:
            step = f"setns {name}"
            libc.setns(fd, FLAGS[name])
            os.close(fd)
    except OSError as e:
        fail(f"{step}: {e} (has the container stopped?)")
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        fail(f"{step}: {e}")
    try:
        pid = os.fork()
    except BlockingIOError:
        # EAGAIN from fork(2) in the container's cgroup: pids.max is reached
        # (joining did not count against it; a new process does).
        limit = config.resources.pids_limit if config.resources is not None else None
        fail("the container is at its pids limit"
             + (f" ({limit})" if limit is not None else "")
             + ": no process can be started in it until one exits")
    except OSError as e:
        fail(f"cannot start a process: {e}")
    if pid == 0:
        child(libc, config, args.command, args.tty)
    # Signals for the command (the agent kills us when the caller hangs up).
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
             else 128 + os.WTERMSIG(status))


def child(libc: sc.LibcSyscalls, config: Config, command: list[str], tty: bool) -> NoReturn:
    step = "start"
    try:
        if tty:
            step = "terminal"
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        step = "seccomp"
        load_seccomp(libc, config, right_before_exec=False)
        step = "privileges"
        drop_to(libc, config, last_cap())
        step = "cwd"
        os.chdir(config.cwd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                    signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        env = env_dict(config.env)
        if tty:
            env.setdefault("TERM", os.environ.get("TERM", "xterm"))
        step = "seccomp"
        load_seccomp(libc, config, right_before_exec=True)
        step = "exec"
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        fail(f"{command[0]}: not found in the container", 127)
    except BaseException as e:  # noqa: BLE001 - report any failure in one line
        fail(f"{step}: {e}")


if __name__ == "__main__":
    main()
