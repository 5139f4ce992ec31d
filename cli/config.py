"""Where the CLI finds its server: --server, then MCTL_SERVER, then the config file.

`mctl cluster up` writes the config file ($MCTL_HOME/config.json, default
~/.mctl/config.json) so that every later command talks to that cluster.
"""

from __future__ import annotations

import json
import os

DEFAULT_SERVER = "127.0.0.1:7070"


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
