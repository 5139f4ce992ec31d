"""Where the CLI finds its server and the credentials to talk to it: contexts.

The server: --server, then MCTL_SERVER, then the config file. The TLS
credentials (cluster CA, the user's certificate and key), each: the
--tls-ca/--tls-cert/--tls-key flag, then MCTL_TLS_CA/MCTL_TLS_CERT/MCTL_TLS_KEY,
then the config file's tls_ca/tls_cert/tls_key (relative paths are relative
to the config file, like a kubeconfig's). Plain text only when asked for:
--insecure, MCTL_INSECURE=1 or "insecure": "true" in the config file.

The config file ($MCTL_HOME/config.json, default ~/.mctl/config.json) holds
one or more *contexts*, each a cluster's server and credentials, as a
kubeconfig does, and which one is current:

    {"current_context": "cluster",
     "contexts": {"cluster": {"server": "127.0.0.1:7070", "tls_ca": ...},
                  "prod": {"server": "10.0.0.2:7070", ...}}}

--context NAME (or MCTL_CONTEXT) picks another for one call, `mctl config
use-context NAME` for every later one. A file of the older, single-cluster
form (the settings at the top level) is read as one context named "default",
and rewritten in the new form only when something is saved; the new form
repeats the current context's settings at the top level for older CLIs.

`mctl cluster up` saves its cluster as a context (named after its
directory) and makes it current; `cluster down` removes it again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import TYPE_CHECKING, Any

from mctl.common import names

if TYPE_CHECKING:
    from mctl.common import tls

DEFAULT_SERVER = "127.0.0.1:7070"
TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")
LEGACY_CONTEXT = "default"
# Every `cluster up` in another directory adds a context: the file stays
# small and `get-contexts` readable.
MAX_CONTEXTS = 100
# The settings a context may hold (others are dropped when read).
CONTEXT_KEYS = ("server", "cluster_dir", "insecure") + TLS_KEYS

# The context --context/MCTL_CONTEXT chose for this call (main.py sets it).
_selected: str | None = None


class ConfigError(ValueError):
    """The config file cannot do what was asked (an unknown context, a full file)."""


def home() -> str:
    return os.environ.get("MCTL_HOME") or os.path.join(os.path.expanduser("~"), ".mctl")


def config_path() -> str:
    return os.path.join(home(), "config.json")


def select(name: str | None) -> None:
    """Uses context `name` for this process (None: MCTL_CONTEXT, else the current one)."""
    global _selected
    _selected = None
    chosen = name or os.environ.get("MCTL_CONTEXT") or None
    if chosen is not None:
        if problem := names.validate_dns_label(chosen):
            raise ConfigError(f"context: {problem}")
        _selected = chosen
        try:
            # Refused now, whatever else the line says (--server too), as kubectl does.
            load()
        except ConfigError:
            _selected = None
            raise


def _settings(doc: object) -> dict[str, str]:
    if not isinstance(doc, dict):
        return {}
    return {str(k): str(v) for k, v in doc.items() if k in CONTEXT_KEYS}


def load_all() -> tuple[str, dict[str, dict[str, str]]]:
    """(current context's name, every context by name); legacy files as one context."""
    try:
        with open(config_path()) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return "", {}
    if not isinstance(doc, dict):
        return "", {}
    if "contexts" not in doc:
        legacy = _settings(doc)
        return (LEGACY_CONTEXT, {LEGACY_CONTEXT: legacy}) if legacy else ("", {})
    contexts = doc.get("contexts")
    found = ({str(k): _settings(v) for k, v in contexts.items()}
             if isinstance(contexts, dict) else {})
    current = doc.get("current_context")
    return (current if isinstance(current, str) else ""), found


def load() -> dict[str, str]:
    """The settings of the context in use: --context/MCTL_CONTEXT's, else the current one."""
    current, contexts = load_all()
    if _selected is not None:
        if _selected not in contexts:
            have = ", ".join(sorted(contexts)) or "none"
            raise ConfigError(f"context {_selected} not found in {config_path()}"
                              f" (contexts: {have})")
        return contexts[_selected]
    return contexts.get(current, {})


def write_all(current: str, contexts: dict[str, dict[str, str]]) -> None:
    if len(contexts) > MAX_CONTEXTS:
        raise ConfigError(f"{config_path()} already holds {MAX_CONTEXTS} contexts: remove some"
                          " with `mctl config delete-context NAME`")
    os.makedirs(home(), mode=0o700, exist_ok=True)
    tmp = config_path() + ".tmp"
    # The current context's settings are also written at the top level, the
    # older form, so that an older mctl on the same machine keeps working;
    # this one reads "contexts" alone when the file has it.
    doc: dict[str, Any] = dict(contexts.get(current, {}))
    doc.update(current_context=current, contexts=contexts)
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, config_path())


def _name_for(doc: dict[str, str], contexts: dict[str, dict[str, str]]) -> str:
    """The context a cluster's settings go to: its own if saved before, else a new name."""
    cluster_dir = doc.get("cluster_dir", "")
    for name, settings in contexts.items():
        if cluster_dir and settings.get("cluster_dir") == cluster_dir:
            return name
    # A context's name is a DNS label, as --context checks: the directory's name, made one.
    base = re.sub(r"[^a-z0-9-]+", "-", os.path.basename(cluster_dir.rstrip("/")).lower())
    base = base.strip("-")[:50].strip("-") or LEGACY_CONTEXT
    name, n = base, 1
    while name in contexts:
        n += 1
        name = f"{base}-{n}"
    return name


def save(doc: dict[str, str]) -> str:
    """Saves a cluster's settings as a context (its own, if it has one) and makes it current.

    Returns the context's name. The other contexts are kept.
    """
    _, contexts = load_all()
    name = _name_for(doc, contexts)
    contexts[name] = _settings(doc)
    write_all(name, contexts)
    return name


def forget_cluster(cluster_dir: str) -> None:
    """Removes the contexts of a cluster that is gone (`cluster down`)."""
    current, contexts = load_all()
    gone = [n for n, s in contexts.items() if s.get("cluster_dir") == cluster_dir]
    if not gone:
        return
    for name in gone:
        del contexts[name]
    if not contexts:
        try:
            os.unlink(config_path())
        except FileNotFoundError:
            pass
        return
    write_all("" if current in gone else current, contexts)


def server(flag: str | None) -> str:
    return flag or os.environ.get("MCTL_SERVER") or load().get("server") or DEFAULT_SERVER


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def credentials(args: argparse.Namespace) -> tls.TLSConfig | None:
    """The CLI's TLS credentials, or None when plain text was explicitly asked for.

    Flags and environment beat the config file as a whole: --insecure works
    against a config with certificates, --tls-* against an insecure config.
    """
    from mctl.common import tls

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
    if ca and cert and key:
        from .tlscheck import checked
        return checked(home(), ca, cert, key)
    return tls.from_flags(ca, cert, key, insecure=False)    # says which one is missing


def describe(settings: dict[str, Any]) -> str:
    """How a context authenticates, for `get-contexts`."""
    if _truthy(settings.get("insecure")):
        return "insecure"
    return "mutual TLS" if settings.get("tls_cert") else "<none>"
