"""Registry credentials from a Secret (`imagePullSecret`), as skopeo reads them.

A workload's `imagePullSecret` names a Secret of its namespace holding
either

- `username` and `password` (what SPEC.md documents): they are the
  credentials for the registry of the workload's image; or
- `.dockerconfigjson` (Kubernetes' kubernetes.io/dockerconfigjson type, what
  `docker login` / `podman login` write): `{"auths": {HOST: {"auth":
  base64(user:password)} | {"username": .., "password": ..}}}`; every host
  in it is kept.

Either becomes an auth.json that skopeo is handed by path (`private_file`):
a 0600 file in a fresh 0700 directory, removed when the pull or the tag
resolution is over; never on a command line, in a log, an event or
`describe`. The messages here name keys and hosts, never a value.

Shared by the agent (pulls) and the scheduler (pinning a tag); validation.py
checks at apply that the Secret exists and has one of the two shapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping

from .sha256 import sha256

USERNAME, PASSWORD, DOCKER_CONFIG = "username", "password", ".dockerconfigjson"
# A Secret is at most 1 MiB (validation.py); a docker config with more hosts
# than this is not a login file.
MAX_HOSTS = 64


class AuthError(Exception):
    """The Secret cannot serve as registry credentials; one line naming the key, no value."""


def shape_problem(keys: set[str] | frozenset[str] | Mapping[str, object]) -> str | None:
    """Whether a Secret's keys make pull credentials (None) or what is missing."""
    if DOCKER_CONFIG in keys or (USERNAME in keys and PASSWORD in keys):
        return None
    return (f"needs keys {USERNAME} and {PASSWORD}, or {DOCKER_CONFIG}; it has "
            + (", ".join(sorted(keys)[:8]) or "none"))


def _text(data: Mapping[str, bytes], key: str) -> str:
    try:
        return data[key].decode()
    except UnicodeDecodeError:
        raise AuthError(f"key {key} is not UTF-8 text") from None


def _docker_config(raw: str) -> dict[str, dict[str, str]]:
    # Here and in auth_json: pulls only, not an idle agent.
    import base64
    import binascii

    try:
        doc = json.loads(raw)
    except ValueError:
        raise AuthError(f"key {DOCKER_CONFIG} is not JSON") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict) or not auths:
        raise AuthError(f'key {DOCKER_CONFIG} has no "auths" object')
    if len(auths) > MAX_HOSTS:
        raise AuthError(f"key {DOCKER_CONFIG} names {len(auths)} registries; at most {MAX_HOSTS}")
    out: dict[str, dict[str, str]] = {}
    for host, entry in auths.items():
        shown = host[:60] if isinstance(host, str) else "?"
        if not isinstance(entry, dict):
            raise AuthError(f"key {DOCKER_CONFIG}: auths.{shown} is not an object")
        token = entry.get("auth")
        if isinstance(token, str) and token:
            try:
                if b":" not in base64.b64decode(token, validate=True):
                    raise ValueError
            except (ValueError, binascii.Error):
                raise AuthError(f"key {DOCKER_CONFIG}: auths.{shown}.auth is not "
                                "base64 of user:password") from None
        else:
            user, password = entry.get("username"), entry.get("password")
            if not (isinstance(user, str) and isinstance(password, str) and user):
                raise AuthError(f"key {DOCKER_CONFIG}: auths.{shown} needs auth, or "
                                "username and password")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
        out[host] = {"auth": token}
    return out


def auth_json(data: Mapping[str, bytes], registry: str) -> bytes:
    """The auth.json (bytes) the Secret's `data` gives for pulls from `registry`."""
    import base64

    if DOCKER_CONFIG in data:
        auths = _docker_config(_text(data, DOCKER_CONFIG))
    elif USERNAME in data and PASSWORD in data:
        user = _text(data, USERNAME)
        if not user or ":" in user:
            raise AuthError(f"key {USERNAME} must be non-empty and hold no ':'")
        token = base64.b64encode(f"{user}:{_text(data, PASSWORD)}".encode()).decode()
        auths = {registry: {"auth": token}}
    else:
        raise AuthError(shape_problem(set(data)) or "no credentials")
    return json.dumps({"auths": auths}, sort_keys=True).encode()


def fingerprint(auth: bytes | None) -> str:
    """A short, in-memory-only tag telling one set of credentials from another."""
    return sha256(auth).hexdigest()[:16] if auth else ""


@contextlib.contextmanager
def private_file(auth: bytes, parent: str | None = None) -> Iterator[str]:
    """The path of a 0600 auth.json in a fresh 0700 directory, removed on exit."""
    directory = tempfile.mkdtemp(prefix="mctl-auth-", dir=parent)
    try:
        path = os.path.join(directory, "auth.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(auth)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)
