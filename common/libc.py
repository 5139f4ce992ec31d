"""Loading the C library through ctypes, for the calls Python 3.11's os lacks."""

from __future__ import annotations

import ctypes


def load() -> ctypes.CDLL:
    """A new handle on libc with errno kept (each caller sets its own argtypes on it).

    glibc's soname first: find_library runs `ldconfig -p` in a subprocess,
    milliseconds that `mctl-runtime run` and every agent and CLI start would pay.
    """
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or "libc.so", use_errno=True)
