"""Signal dispositions for the start path, without the `signal` module's enums.

`signal` wraps the C module `_signal` in enums (Signals, Handlers, Sigmasks),
and importing `enum` with functools, collections and the rest costs
`mctl-runtime run` ~3 ms once `json` is no longer loaded (cjson.py;
bench/README.md, "The start path, third pass"). The start path needs only to
set a few dispositions, which `_signal` does with plain ints. Where `_signal`
is missing (not CPython), `signal` is used: only speed depends on it.
"""

from __future__ import annotations

try:
    import _signal as _impl  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - CPython always has it
    import signal as _impl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SIG_DFL: int = int(_impl.SIG_DFL)
SIG_IGN: int = int(_impl.SIG_IGN)
SIGHUP: int = int(_impl.SIGHUP)
SIGINT: int = int(_impl.SIGINT)
SIGQUIT: int = int(_impl.SIGQUIT)
SIGKILL: int = int(_impl.SIGKILL)
SIGUSR1: int = int(_impl.SIGUSR1)
SIGUSR2: int = int(_impl.SIGUSR2)
SIGPIPE: int = int(_impl.SIGPIPE)
SIGTERM: int = int(_impl.SIGTERM)
SIGCHLD: int = int(_impl.SIGCHLD)
SIGXFSZ: int = int(_impl.SIGXFSZ)
SIGWINCH: int = int(_impl.SIGWINCH)


def set_handler(sig: int, handler: Callable[[int, object], None] | int) -> None:
    """signal.signal(sig, handler): a Python function, SIG_DFL or SIG_IGN."""
    _impl.signal(sig, handler)
