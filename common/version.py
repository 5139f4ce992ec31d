"""mctl's version: the installed package's, one number for the CLI and the daemons.

Read from the package metadata (pyproject.toml's `version`), so a release
bumps it in one place. Imported only where a version is shown or sent:
importlib.metadata costs a few milliseconds the other commands need not pay.
"""

from __future__ import annotations

import functools
from importlib import metadata

PACKAGE = "mctl"


@functools.cache
def version() -> str:
    """"0.1.0", or "unknown" when running from a tree that was never installed."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"
