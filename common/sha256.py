"""SHA-256 of small inputs without loading OpenSSL.

hashlib hands SHA-256 to OpenSSL: the first `import hashlib` maps and
initialises libcrypto, 3.8 MiB of a process's RSS. The agent hashes small
things at start and per container (the busybox image it builds at start,
names of veth links), for which CPython's own implementation is fast
enough: 2 MB in 7 ms against OpenSSL's 1.2 ms on this machine. Bulk data
(image layers and blobs, hashed as they are pulled) keeps hashlib, imported
where that happens, so OpenSSL loads with the first pull, not at idle.

`sha256` has hashlib's interface (update, digest, hexdigest, copy).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import hashlib


def _builtin() -> Callable[..., hashlib._Hash]:
    # CPython's own module: _sha256 up to 3.11, _sha2 from 3.12.
    for name in ("_sha256", "_sha2"):
        try:
            constructor: Callable[..., hashlib._Hash] = importlib.import_module(name).sha256
            return constructor
        except (ImportError, AttributeError):
            continue
    # Another interpreter: OpenSSL's after all.
    import hashlib
    return hashlib.sha256


sha256 = _builtin()
