"""Signal numbers and signal(2) for the runtime's start path, without the `signal` module.

The `signal` module wraps CPython's `_signal` to turn numbers into enums,
and importing it costs `enum`, `functools` and `collections`: about 3 ms of
`mctl-runtime run`, timed against `runc run`. Handlers set through here get
the signal number as an int. Elsewhere (the agent), use `signal`.
"""

try:
    import _signal as _source
except ImportError:  # not CPython
    import signal as _source  # type: ignore[no-redef]

NSIG: int = _source.NSIG
SIG_DFL: int = _source.SIG_DFL
SIG_IGN: int = _source.SIG_IGN
SIGCHLD: int = _source.SIGCHLD
SIGHUP: int = _source.SIGHUP
SIGINT: int = _source.SIGINT
SIGKILL: int = _source.SIGKILL
SIGPIPE: int = _source.SIGPIPE
SIGQUIT: int = _source.SIGQUIT
SIGTERM: int = _source.SIGTERM
SIGUSR1: int = _source.SIGUSR1
SIGUSR2: int = _source.SIGUSR2
SIGWINCH: int = _source.SIGWINCH
SIGXFSZ: int = _source.SIGXFSZ
signal = _source.signal
