"""Configs and Secrets on the scheduler: who uses them, what a change rolls, what nodes get.

A workload names Configs and Secrets (env `valueFrom`, config and secret
volumes) of its own namespace. Three facts follow from that, all made here
from one snapshot:

- **the rollout hash** (`workload_hash`): a replica records the hash of what
  it runs; a workload whose hash differs from its replicas' is rolled
  (reconcile.py). The hash covers the spec and, for every Config and Secret
  the spec names, a digest of its data (a Config's SHA-256; a Secret's random
  data version, secretbox.py, so no digest of a secret value is ever shown
  and a re-seal under a new key rolls nothing). Changing their data therefore
  rolls the workloads that use them, as Kubernetes users do by hand with a
  checksum annotation. A spec that names none hashes as it always did, so
  no workload rolls on upgrade.
- **users** (`users_of`): a Config, Secret or named volume in use cannot be
  deleted; the refusal names the workloads.
- **what a node receives** (`node_objects`): the Configs and Secrets its
  replicas use, and no others (a node that runs nothing of namespace "shop"
  never sees shop's passwords). Secrets are opened here, in memory only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from mctl.common.spec import spec_hash
from mctl.common.validation import references
from mctl.v1 import types_pb2

from .secretbox import SecretBox, SecretBoxError, version_of
from .store import Snapshot

Key = tuple[str, str]


def config_digest(config: types_pb2.Config) -> bytes:
    h = hashlib.sha256()
    for key in sorted(config.data):
        value = config.data[key].encode()
        h.update(f"{len(key)}:{key}{len(value)}:".encode() + value)
    return h.digest()


def workload_hash(w: types_pb2.Workload, snap: Snapshot) -> str:
    """12 hex digits: the spec hash, covering the data of the Configs and Secrets it uses.

    A reference to one that is missing (it can only have gone with the
    workload being deleted) counts as empty.
    """
    base = spec_hash(w.spec)
    # The imagePullSecret is left out: a new registry password is used by
    # the next pull, without rolling what runs (imagepin.py, agent/images/pull.py).
    configs, secrets, _ = references(w.spec, pull_secret=False)
    if not configs and not secrets:
        return base
    ns = w.metadata.namespace
    h = hashlib.sha256(base.encode())
    for name in sorted(configs):
        config = snap.configs.get((ns, name))
        h.update(b"\0config\0" + name.encode() + b"\0"
                 + (config_digest(config) if config is not None else b""))
    for name in sorted(secrets):
        h.update(b"\0secret\0" + name.encode() + b"\0"
                 + version_of(snap.secrets.get((ns, name), b"")))
    return h.hexdigest()[:12]


def users_of(snap: Snapshot, kind: str, namespace: str, name: str,
             rolling: bool = False) -> list[str]:
    """The workloads of `namespace` that use the config, secret or volume `name` (sorted).

    Workloads being deleted count while their record is there: their
    replicas may still be running with it. `rolling`: only those that a
    change of its data rolls (an imagePullSecret alone rolls nothing).
    """
    index = {"config": 0, "secret": 1, "volume": 2}[kind]
    return sorted(w.metadata.name for (ns, _), w in snap.workloads.items()
                  if ns == namespace
                  and name in references(w.spec, pull_secret=not rolling)[index])


class SecretReader:
    """Opens sealed Secrets of a snapshot, keeping the opened ones while they are unchanged.

    The controller needs the values of the Secrets its nodes' replicas use
    on every push; opening each once per change, not once per pass, keeps
    AES-GCM off the pass's cost. The memo holds only what the last call saw.
    """

    def __init__(self, box: SecretBox | None) -> None:
        self.box = box
        self._opened: dict[Key, tuple[bytes, types_pb2.Secret]] = {}

    def open(self, snap: Snapshot, key: Key) -> types_pb2.Secret | None:
        sealed = snap.secrets.get(key)
        if sealed is None or self.box is None:
            return None
        hit = self._opened.get(key)
        if hit is not None and hit[0] == sealed:
            return hit[1]
        secret = self.box.open(sealed, *key).secret
        self._opened[key] = (sealed, secret)
        return secret

    def forget_others(self, keep: Iterable[Key]) -> None:
        keep = set(keep)
        self._opened = {k: v for k, v in self._opened.items() if k in keep}


def node_objects(snap: Snapshot, replicas: Iterable[types_pb2.Replica],
                 secrets: SecretReader) -> tuple[list[types_pb2.Config],
                                                 list[types_pb2.Secret], list[str]]:
    """(configs, secrets) the replicas use, sorted by key, and the problems met.

    A Secret that cannot be opened (no key, a wrong key) is left out and
    named in the problems: its replicas cannot start, and the node is told
    nothing false.
    """
    config_keys: set[Key] = set()
    secret_keys: set[Key] = set()
    for r in replicas:
        configs, used, _ = references(r.spec)
        ns = r.metadata.namespace
        config_keys.update((ns, name) for name in configs)
        secret_keys.update((ns, name) for name in used)
    out_configs = [snap.configs[k] for k in sorted(config_keys) if k in snap.configs]
    out_secrets = []
    problems = []
    for k in sorted(secret_keys):
        try:
            secret = secrets.open(snap, k)
        except SecretBoxError as e:
            problems.append(str(e))
            continue
        if secret is not None:
            out_secrets.append(secret)
    return out_configs, out_secrets, problems
