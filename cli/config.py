"""Where the CLI finds its server and the credentials to talk to it.

The server: --server, then MCTL_SERVER, then the config file. The TLS
credentials (cluster CA, the user's certificate and key), each: the
--tls-ca/--tls-cert/--tls-key flag, then MCTL_TLS_CA/MCTL_TLS_CERT/MCTL_TLS_KEY,
then the config file's tls_ca/tls_cert/tls_key (relative paths are relative
to the config file, like a kubeconfig's). Plain text only when asked for:
--insecure, MCTL_INSECURE=1 or "insecure": true in the config file.

`mctl cluster up` writes the config file ($MCTL_HOME/config.json, default
~/.mctl/config.json) so that every later command talks to that cluster.
"""

from __future__ import annotations

import argparse
import json
import os

from mctl.common import tls

DEFAULT_SERVER = "127.0.0.1:7070"
TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")


def home() -> str:
    return os.environ.get("MCTL_HOME") or os.path.join(os.path.expanduser("~"), ".mctl")


def config_path() -> str:
    return os.path.join(home(), "config.json")


def load() -> dict[str, str]:
    try:
        with open(config_path()) as f:
            doc = json.load(f)
        return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def save(doc: dict[str, str]) -> None:
    os.makedirs(home(), exist_ok=True)
    tmp = config_path() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, config_path())


def server(flag: str | None) -> str:
    return flag or os.environ.get("MCTL_SERVER") or load().get("server") or DEFAULT_SERVER


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def credentials(args: argparse.Namespace) -> tls.TLSConfig | None:
    """The CLI's TLS credentials, or None when plain text was explicitly asked for.

    Flags and environment beat the config file as a whole: --insecure works
    against a config with certificates, --tls-* against an insecure config.
    """
    doc = load()
    given: list[str] = [getattr(args, key, None) or os.environ.get(f"MCTL_{key.upper()}") or ""
                        for key in TLS_KEYS]
    if getattr(args, "insecure", False) or _truthy(os.environ.get("MCTL_INSECURE")):
        return tls.from_flags(given[0], given[1], given[2], insecure=True)
    if not any(given) and _truthy(doc.get("insecure")):
        return None
    # Relative paths in the config file are relative to it, like a kubeconfig's.
    ca, cert, key = [value or (os.path.join(home(), doc[name]) if doc.get(name) else "")
                     for name, value in zip(TLS_KEYS, given, strict=True)]
    if not (ca or cert or key):
        raise tls.TLSError(
            f"no TLS credentials for the mctl server at {server(getattr(args, 'server', None))}: "
            f"give --tls-ca, --tls-cert and --tls-key or set tls_ca, tls_cert and tls_key in "
            f"{config_path()} (`mctl cluster up` does), or --insecure for a plain-text cluster")
    return tls.from_flags(ca, cert, key, insecure=False)
