"""The CLI's TLS credentials, checked once per set of files instead of on every call.

Before it dials, the CLI checks its three files (common/tls.py: the key
belongs to the certificate, both are signed by the CA, valid now), so that a
wrong file is one line naming it rather than a failed handshake. That check
needs `cryptography`, whose import costs more than the call it guards
(bench/cli_latency.py). So its outcome is remembered: under
$MCTL_HOME/cache, keyed by a SHA-256 of the three files' bytes, with the
identity the certificate names and the window in which the certificate and
the CA are both valid. A later call with the same bytes, inside that window,
trusts the earlier check; any change to a file, or the window's end, means a
new check. The TLS handshake verifies the same things again anyway: the
cache only decides whether a failure gets the precise words up front.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from mctl.common.sha256 import sha256

if TYPE_CHECKING:
    from mctl.common import tls

# One entry per set of credentials used; a few are plenty (contexts, users).
MAX_ENTRIES = 16
_VERSION = b"mctl-cli-tls-check-v1"


def _cache_dir(home: str) -> str:
    return os.path.join(home, "cache", "tls")


def checked(home: str, ca_path: str, cert_path: str, key_path: str) -> tls.TLSConfig:
    """The credentials of the three files, checked now or (same bytes, still valid) before."""
    from mctl.common import pki, tls

    try:
        ca = pki.read_file(ca_path, "the CA certificate")
        cert = pki.read_file(cert_path, "the certificate")
        key = pki.read_file(key_path, "the key")
    except pki.PKIError as e:
        raise tls.TLSError(str(e)) from None
    digest = sha256(b"\0".join([_VERSION, ca, cert, key])).hexdigest()
    entry_path = os.path.join(_cache_dir(home), digest + ".json")
    now = time.time()
    entry = _read(entry_path)
    if entry is not None and entry[2] <= now < entry[3]:
        return tls.TLSConfig(ca=ca, cert=cert, key=key,
                             identity=pki.Identity(role=entry[0], name=entry[1]),
                             cert_path=cert_path)
    config = tls.TLSConfig.from_files(ca_path, cert_path, key_path)
    own, authority = pki.load_cert(cert, cert_path), pki.load_cert(ca, ca_path)
    start = max(own.not_valid_before_utc, authority.not_valid_before_utc).timestamp()
    end = min(own.not_valid_after_utc, authority.not_valid_after_utc).timestamp()
    _write(home, entry_path, {"role": config.identity.role, "name": config.identity.name,
                              "not_before": start, "not_after": end})
    return config


def _read(path: str) -> tuple[str, str, float, float] | None:
    try:
        with open(path) as f:
            doc = json.load(f)
        return (str(doc["role"]), str(doc["name"]), float(doc["not_before"]),
                float(doc["not_after"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(home: str, path: str, doc: dict[str, object]) -> None:
    """Stores an entry and keeps the newest MAX_ENTRIES; a cache that cannot be written is
    no error (the next call checks again)."""
    directory = _cache_dir(home)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
        entries = sorted((e for e in os.scandir(directory) if e.name.endswith(".json")),
                         key=lambda e: e.stat().st_mtime, reverse=True)
        for old in entries[MAX_ENTRIES:]:
            os.unlink(old.path)
    except OSError:
        pass
