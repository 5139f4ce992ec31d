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
    "version": ({}, 0, 0),
    "help": ({}, 0, 0),
}


class UsageError(Exception):
    """The command line is wrong; the message says where."""


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
