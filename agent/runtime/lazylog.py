"""A logger for modules on `mctl-runtime`'s path that imports `logging` only when needed.

`mctl-runtime run` is timed as a whole process against `runc run`, and
importing `logging` is among its largest costs (bench/README.md, "Import
costs on the start path"). While no module has imported `logging`,
no handler can have been configured, so a DEBUG or INFO record would only
reach logging's last-resort handler, which drops everything below WARNING:
such calls return at once. Once `logging` is loaded (the agent, pytest),
and for WARNING and above always, every call goes to the real logger.
"""

from __future__ import annotations

import sys

# typing.TYPE_CHECKING without importing typing, which `mctl-runtime run` would
# pay for at every call (bench/README.md, "Import costs on the start path");
# type checkers treat a module-level TYPE_CHECKING = False the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging


class LazyLogger:
    """Stands in for `logging.getLogger(name)`; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name

    def real(self) -> logging.Logger:
        import logging

        return logging.getLogger(self.name)

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        if "logging" in sys.modules:
            self.real().debug(msg, *args, **kwargs)  # type: ignore[arg-type]

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        if "logging" in sys.modules:
            self.real().info(msg, *args, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, attr: str) -> object:
        # warning, error, exception, isEnabledFor, ...: the real logger's. Not
        # dunders: ABCMeta probes class attributes for __isabstractmethod__.
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.real(), attr)
