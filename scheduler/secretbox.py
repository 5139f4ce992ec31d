"""Secrets sealed before they reach etcd: AES-256-GCM under the scheduler's key.

etcd keeps every write in its log and snapshots, and backups copy them
(`mctl cluster backup`): a Secret stored as it came would be readable by
anyone with one of those files. So the scheduler seals each Secret with
AES-GCM (authenticated: a flipped bit or a wrong key is an error, never
garbage) under a 256-bit key read from `--encryption-key-file`, as
Kubernetes' aescbc/aesgcm providers and Docker Swarm's encrypted Raft log do.

A sealed value is

    MAGIC | key id (8) | version (16) | nonce (12) | AES-GCM(Secret message)

- the key id (the first 8 bytes of the key's SHA-256) names the key that
  sealed it, so a scheduler given several keys (the first seals, every one
  opens) reads values sealed before a rotation, and `rotate` re-seals them;
- the version is random, made anew only when the Secret's data changes: it
  is what the workloads' spec hash covers (objects.py), so a change of data
  rolls them while a re-seal under a new key does not, and no digest of a
  (perhaps guessable) value is ever shown;
- the nonce is random per seal (96 bits: far from a collision at the number
  of writes one cluster makes under one key);
- the associated data is the header plus the object's namespace and name,
  so a value copied to another Secret's key does not open.

The key file holds the key as 64 hex digits (one line); a file of several
lines holds several keys, the first the one that seals (rotation: put the
new key first, keep the old one second, restart, re-seal, drop the old one).
"""

from __future__ import annotations

import hashlib
import os
import secrets as _random
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mctl.v1 import types_pb2

MAGIC = b"mctl-secret-v1\n"
KEY_BYTES = 32
KEY_ID_BYTES = 8
VERSION_BYTES = 16
NONCE_BYTES = 12
_HEADER = len(MAGIC) + KEY_ID_BYTES + VERSION_BYTES
# A key file is a few lines of hex; anything bigger is the wrong file.
MAX_KEY_FILE_BYTES = 4096
MAX_KEYS = 8


class SecretBoxError(Exception):
    """A sealed value that cannot be opened, or a key file that cannot be used."""


@dataclass(frozen=True)
class Opened:
    secret: types_pb2.Secret
    version: bytes
    key_id: bytes


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES]


def new_key_text() -> str:
    """A fresh key as a key file's line (64 hex digits)."""
    return _random.token_hex(KEY_BYTES) + "\n"


def write_key_file(path: str) -> None:
    """Makes a new key file, mode 0600 from the start (never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_key_text())


def parse_keys(text: str, source: str = "the key file") -> list[bytes]:
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise SecretBoxError(f"{source}: line {number} is not hex") from None
        if len(key) != KEY_BYTES:
            raise SecretBoxError(f"{source}: line {number} holds {len(key)} bytes;"
                                 f" a key is {KEY_BYTES} (64 hex digits)")
        keys.append(key)
    if not keys:
        raise SecretBoxError(f"{source}: no key in it")
    if len(keys) > MAX_KEYS:
        raise SecretBoxError(f"{source}: {len(keys)} keys; at most {MAX_KEYS}")
    return keys


def load_key_file(path: str) -> SecretBox:
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise SecretBoxError(f"{path}: mode {st.st_mode & 0o777:o} lets others read the"
                                 " key; chmod 600 it")
        with open(path, encoding="ascii") as f:
            text = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise SecretBoxError(f"{path}: {(e.strerror or str(e)).lower()}") from None
    except UnicodeDecodeError:
        raise SecretBoxError(f"{path}: not a key file (not ASCII)") from None
    if len(text) > MAX_KEY_FILE_BYTES:
        raise SecretBoxError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes; not a key file")
    return SecretBox(parse_keys(text, path))


def _aad(header: bytes, namespace: str, name: str) -> bytes:
    return header + f"{namespace}/{name}".encode()


class SecretBox:
    """Seals and opens Secrets; `keys[0]` seals, every key opens."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretBoxError("no encryption key")
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self.sealing_id = key_id(keys[0])
        self._sealer = self._keys[self.sealing_id]

    def seal(self, secret: types_pb2.Secret, version: bytes | None = None) -> bytes:
        """The value to store; `version` kept when the data did not change."""
        if version is None:
            version = _random.token_bytes(VERSION_BYTES)
        header = MAGIC + self.sealing_id + version
        nonce = _random.token_bytes(NONCE_BYTES)
        aad = _aad(header, secret.metadata.namespace, secret.metadata.name)
        body = secret.SerializeToString(deterministic=True)
        return header + nonce + self._sealer.encrypt(nonce, body, aad)

    def open(self, sealed: bytes, namespace: str, name: str) -> Opened:
        """The Secret in `sealed`, stored as namespace/name; SecretBoxError if it cannot be."""
        if not sealed.startswith(MAGIC) or len(sealed) < _HEADER + NONCE_BYTES + 16:
            raise SecretBoxError(f"secret {namespace}/{name}: stored value is not sealed")
        header = sealed[:_HEADER]
        kid = header[len(MAGIC):len(MAGIC) + KEY_ID_BYTES]
        version = header[len(MAGIC) + KEY_ID_BYTES:]
        cipher = self._keys.get(kid)
        if cipher is None:
            raise SecretBoxError(f"secret {namespace}/{name}: sealed with key {kid.hex()},"
                                 " which is not in --encryption-key-file")
        nonce = sealed[_HEADER:_HEADER + NONCE_BYTES]
        try:
            body = cipher.decrypt(nonce, sealed[_HEADER + NONCE_BYTES:],
                                  _aad(header, namespace, name))
        except InvalidTag:
            raise SecretBoxError(f"secret {namespace}/{name}: does not open with key"
                                 f" {kid.hex()} (tampered, or stored under another name)"
                                 ) from None
        return Opened(types_pb2.Secret.FromString(body), version, kid)


def version_of(sealed: bytes) -> bytes:
    """The data version of a sealed value, read without opening it ("" if not sealed)."""
    if not sealed.startswith(MAGIC) or len(sealed) < _HEADER:
        return b""
    return sealed[len(MAGIC) + KEY_ID_BYTES:_HEADER]


def key_id_of(sealed: bytes) -> bytes:
    if not sealed.startswith(MAGIC) or len(sealed) < _HEADER:
        return b""
    return sealed[len(MAGIC):len(MAGIC) + KEY_ID_BYTES]
