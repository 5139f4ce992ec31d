"""The command line of `mctl-runtime`: runc's and crun's grammar, parsed by hand.

    mctl-runtime [global options] COMMAND [options] ID [ARGS]

Global options come before the command, as containerd and podman put them
(`--root DIR --log FILE --log-format json create --bundle B --pid-file F ID`);
`--opt value` and `--opt=value` are both accepted. Hand-written rather than
argparse because `run` pays for every module it imports (argparse pulls in
re and gettext) and the grammar is small. Pure: unit tests check it directly.
"""

from __future__ import annotations

VERSION = "0.1.0"

USAGE = """usage: mctl-runtime [--root DIR] [--log FILE] [--log-format text|json] [--debug]
                    COMMAND [options] ID

An OCI runtime (runtime-spec 1.0) built on mctl's native container code.

commands:
  create [--bundle DIR] [--pid-file FILE] ID   set the container up; its process waits for start
  start ID                                     run the process of a created container
  state ID                                     print the OCI state JSON
  kill [--all] ID [SIGNAL]                     signal the init (default SIGTERM), or every process
  delete [--force] ID                          remove a stopped (or created) container
  run [--bundle DIR] [--pid-file FILE] [--detach] ID
                                               create and start; wait and exit with its status
  list [--format table|json] [--quiet]         the containers under --root
  spec [--bundle DIR]                          write a config.json template
  ps [--format table|json] ID [-- PS ARGS]     the container's processes (ps -ef by default)
  exec [--process FILE] [--tty] [--console-socket PATH] [--detach] [--pid-file FILE]
       [--cwd DIR] [--env K=V]... [--user UID[:GID]] [--additional-gids GID]...
       [--cap CAP]... [--no-new-privs] ID [--] [COMMAND ARGS...]
                                               run another process in the container
  pause ID / resume ID                         freeze / thaw every process of the container
  update [-r FILE] [--memory N] [--memory-reservation N] [--kernel-memory-tcp N]
         [--cpu-quota N] [--cpu-period N] [--cpuset-cpus L] [--cpuset-mems L]
         [--pids-limit N] [--blkio-weight N] ID
                                               change a running container's resources
  events [--stats] [--interval 5s] ID          resource stats as JSON (once with --stats,
                                               else every interval, and OOM events)
  features                                     the runtime-spec features document (JSON)
  --version                                    print the version
"""

# Every option of a command: name -> (takes a value, destination).
_GLOBAL = {
    "--root": (True, "root"), "--log": (True, "log"), "--log-format": (True, "log_format"),
    "--debug": (False, "debug"), "--systemd-cgroup": (False, "systemd_cgroup"),
    "--rootless": (True, "rootless"),
}
_CREATE = {
    "--bundle": (True, "bundle"), "-b": (True, "bundle"),
    "--pid-file": (True, "pid_file"), "--console-socket": (True, "console_socket"),
    "--no-pivot": (False, "no_pivot"), "--no-new-keyring": (False, "no_new_keyring"),
    "--preserve-fds": (True, "preserve_fds"),
}
_EXEC = {
    "--process": (True, "process"), "-p": (True, "process"),
    "--tty": (False, "tty"), "-t": (False, "tty"),
    "--console-socket": (True, "console_socket"),
    "--detach": (False, "detach"), "-d": (False, "detach"),
    "--pid-file": (True, "pid_file"), "--cwd": (True, "cwd"),
    "--env": (True, "env"), "-e": (True, "env"),
    "--user": (True, "user"), "-u": (True, "user"),
    "--additional-gids": (True, "additional_gids"), "-g": (True, "additional_gids"),
    "--cap": (True, "cap"), "-c": (True, "cap"),
    "--no-new-privs": (False, "no_new_privs"),
    # Taken and ignored, as process.apparmorProfile/selinuxLabel are for exec (docs/runtime.md).
    "--apparmor": (True, "apparmor"), "--process-label": (True, "process_label"),
    "--preserve-fds": (True, "preserve_fds"), "--ignore-paused": (False, "ignore_paused"),
}
# Options given once per value (exec --env A=1 --env B=2), and how many in all.
_REPEATED = ("env", "additional_gids", "cap")
MAX_REPEATED = 4096
# exec's command: the id, then at most this many arguments.
MAX_EXEC_ARGS = 4096

# update's flags (runc's names); each is None unless given (cli_update.py).
_UPDATE = {
    "--resources": (True, "resources"), "-r": (True, "resources"),
    # No --memory-swap: swap is always held to the memory limit (cgroups/v1.py).
    "--memory": (True, "memory"),
    "--memory-reservation": (True, "memory_reservation"),
    "--kernel-memory-tcp": (True, "kernel_memory_tcp"),
    "--cpu-quota": (True, "cpu_quota"), "--cpu-period": (True, "cpu_period"),
    "--cpuset-cpus": (True, "cpuset_cpus"), "--cpuset-mems": (True, "cpuset_mems"),
    "--pids-limit": (True, "pids_limit"), "--blkio-weight": (True, "blkio_weight"),
}
UPDATE_FLAGS = tuple(sorted({dest for _, dest in _UPDATE.values()} - {"resources"}))

_COMMANDS: dict[str, tuple[dict[str, tuple[bool, str]], int, int]] = {
    # command: (options, least positionals, most positionals)
    "create": (_CREATE, 1, 1),
    "run": ({**_CREATE, "--detach": (False, "detach"), "-d": (False, "detach")}, 1, 1),
    "start": ({}, 1, 1),
    "state": ({}, 1, 1),
    "kill": ({"--all": (False, "all"), "-a": (False, "all")}, 1, 2),
    "delete": ({"--force": (False, "force"), "-f": (False, "force")}, 1, 1),
    "list": ({"--format": (True, "format"), "-f": (True, "format"),
              "--quiet": (False, "quiet"), "-q": (False, "quiet")}, 0, 0),
    "spec": ({"--bundle": (True, "bundle"), "-b": (True, "bundle")}, 0, 0),
    # ps ID [-- PS ARGS]: at most 32 arguments for ps(1).
    "ps": ({"--format": (True, "format"), "-f": (True, "format")}, 1, 33),
    "features": ({}, 0, 0),
    "pause": ({}, 1, 1),
    "resume": ({}, 1, 1),
    "update": (_UPDATE, 1, 1),
    "events": ({"--stats": (False, "stats"), "--interval": (True, "interval")}, 1, 1),
    # exec ID [--] [COMMAND ARGS]: options end at the id, the rest is the command's.
    "exec": (_EXEC, 1, 1 + MAX_EXEC_ARGS),
    "version": ({}, 0, 0),
    "help": ({}, 0, 0),
}


class UsageError(Exception):
    """The command line is wrong; the message says where.

    `log`/`log_format` are the global --log options read before the error, if
    any: the error goes to that file too, as runc's does, since containerd's
    shim reports the last error line of it (a stale one otherwise).
    """

    log = ""
    log_format = "text"


class Invocation:
    """A parsed command line: global options, the command, its options and positionals."""

    def __init__(self) -> None:
        self.root = "/run/mctl-runtime"
        self.log = ""
        self.log_format = "text"
        self.debug = False
        self.systemd_cgroup = False
        self.rootless = ""
        self.command = ""
        self.bundle = ""
        self.pid_file = ""
        self.console_socket = ""
        self.no_pivot = False
        self.no_new_keyring = False
        self.preserve_fds = "0"
        self.detach = False
        self.all = False
        self.force = False
        self.format = "table"
        self.quiet = False
        self.args: list[str] = []
        # update's (strings as given; cli_update.py checks them) and events'
        self.resources = ""
        for flag in UPDATE_FLAGS:
            setattr(self, flag, None)
        self.stats = False
        self.interval = "5s"
        # exec's
        self.process = ""
        self.tty: bool | None = None    # None: not given (the container's process.terminal)
        self.cwd = ""
        self.env: list[str] = []
        self.user = ""
        self.additional_gids: list[str] = []
        self.cap: list[str] = []
        self.no_new_privs = False
        self.apparmor = ""
        self.process_label = ""
        self.ignore_paused = False

    @property
    def id(self) -> str:
        return self.args[0]


def _take(inv: Invocation, options: dict[str, tuple[bool, str]], argv: list[str], i: int,
          where: str) -> int:
    """Parses the option at argv[i] into `inv`; returns the index after it."""
    name, eq, value = argv[i].partition("=")
    if name not in options:
        raise UsageError(f"{where}: unknown option {name}")
    takes_value, dest = options[name]
    if takes_value:
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"{where}: {name} needs a value")
            value = argv[i + 1]
            i += 1
        if dest in _REPEATED:
            values = getattr(inv, dest)
            if sum(len(getattr(inv, d)) for d in _REPEATED) >= MAX_REPEATED:
                raise UsageError(f"{where}: more than {MAX_REPEATED} --env, --cap and "
                                 "--additional-gids values")
            values.append(value)
        else:
            setattr(inv, dest, value)
    elif eq:
        if value not in ("true", "false"):
            raise UsageError(f"{where}: {name} takes no value")
        setattr(inv, dest, value == "true")
    else:
        setattr(inv, dest, True)
    return i + 1


def parse(argv: list[str]) -> Invocation:
    """Parses the arguments after the program name; UsageError on anything unknown."""
    inv = Invocation()
    try:
        return _parse(inv, argv)
    except UsageError as e:
        if inv.log_format in ("text", "json"):
            e.log, e.log_format = inv.log, inv.log_format
        raise


def _parse(inv: Invocation, argv: list[str]) -> Invocation:
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("--version", "-v"):
            inv.command = "version"
            return inv
        if argv[i] in ("--help", "-h"):
            inv.command = "help"
            return inv
        i = _take(inv, _GLOBAL, argv, i, "global options")
    if i == len(argv):
        raise UsageError("no command given")
    inv.command = argv[i]
    if inv.command not in _COMMANDS:
        raise UsageError(f"unknown command {inv.command!r}")
    options, least, most = _COMMANDS[inv.command]
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            inv.args.extend(argv[i + 1:])
            break
        if inv.command == "exec" and inv.args:
            # As runc: after the id, `-l` in `exec ID ls -l` is the command's.
            inv.args.extend(argv[i:])
            break
        # A lone "-N" after the id is a signal number (kill ID -9 is not runc's
        # grammar, but a negative number is never an option here).
        if arg.startswith("-") and len(arg) > 1 and not arg[1:].isdigit():
            if arg in ("--help", "-h"):
                inv.command = "help"
                return inv
            i = _take(inv, options, argv, i, inv.command)
        else:
            inv.args.append(arg)
            i += 1
    if not least <= len(inv.args) <= most:
        want = "an ID" if least == most == 1 else f"{least} to {most} arguments"
        if most == 0:
            want = "no arguments"
        raise UsageError(f"{inv.command}: takes {want}, got {len(inv.args)}")
    if inv.log_format not in ("text", "json"):
        raise UsageError(f"--log-format: {inv.log_format!r} is not text or json")
    if inv.format not in ("table", "json"):
        raise UsageError(f"{inv.command} --format: {inv.format!r} is not table or json")
    if not inv.preserve_fds.isdigit():
        raise UsageError(f"--preserve-fds: {inv.preserve_fds!r} is not a number")
    return inv


def parse_signal(text: str) -> int:
    """A signal as kill(1) spells it: 9, KILL, SIGKILL, sigkill; ValueError otherwise."""
    import signal

    if text.isdigit():
        number = int(text)
        if not 0 < number < signal.NSIG:
            raise ValueError(f"signal {text} is out of range")
        return number
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if not isinstance(sig, signal.Signals):
        raise ValueError(f"unknown signal {text!r}")
    return int(sig)
