"""Pinning a workload's image tag to a digest, once per spec revision.

A tag moves; a digest does not. So that every replica of one spec runs the
same bytes, whatever node pulls it and whenever, Apply resolves the tag of
a registry's image (`registry.local:5000/team/app:1.2`) to the digest of
its manifest (or manifest list: each node then picks its own platform) and
stores it in the spec (`image_digest`, server-written). The spec hash
covers it, so a new digest is a new revision, rolled like any spec change.

When is a tag resolved again? `reuse` decides, from the stored spec:
- the same spec (replicas and the update strategy aside: they do not make
  new replicas either) keeps its digest, so re-applying a file after the
  tag moved changes nothing, unless `imagePullPolicy: Always`;
- any other change, a new workload, or a stored spec with no digest (its
  registry could not be reached then) asks the registry.

Resolution runs Debian's `skopeo inspect --raw` (the maintained client the
agents also use) and hashes the manifest bytes it returns. Credentials are
an auth.json handed by path, never on the command line: the workload's
`imagePullSecret` (common/registryauth.py; written 0600 into the call's
private temporary directory and removed with it), else the scheduler's
`--registry-auth`. If the registry
cannot answer, the workload is stored unpinned (a warning is logged and
the apply still succeeds): its nodes then pull the tag, and report
`ImagePullError` themselves while the cause lasts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mctl.common import imageref, registryauth, skopeo
from mctl.common.spec import spec_hash
from mctl.v1 import types_pb2

log = logging.getLogger(__name__)

ALWAYS = "Always"
# A manifest (or list) is small; a registry answering more is refused.
MAX_MANIFEST_BYTES = 4 << 20


class PinError(Exception):
    """The tag could not be resolved; the message is one line."""


@dataclass(frozen=True)
class PinConfig:
    """How the scheduler reaches registries (its --registry-* flags, as the agent's)."""

    auth_file: str = ""
    ca_files: tuple[str, ...] = ()
    insecure: frozenset[str] = frozenset()
    timeout_s: float = 20.0
    skopeo: str = "skopeo"


def needs_pin(spec: types_pb2.WorkloadSpec) -> bool:
    """A registry's image named by tag: what a digest is resolved for."""
    return imageref.registry_of(spec.image) is not None and "@" not in spec.image


def _template(spec: types_pb2.WorkloadSpec) -> str:
    bare = types_pb2.WorkloadSpec()
    bare.CopyFrom(spec)
    bare.ClearField("image_digest")
    return spec_hash(bare)


def reuse(new: types_pb2.WorkloadSpec, old: types_pb2.WorkloadSpec | None) -> str | None:
    """The digest `new` keeps without asking the registry; "" for none needed; None: ask."""
    if not needs_pin(new):
        return ""
    if (old is not None and old.image_digest and new.image_pull_policy != ALWAYS
            and _template(old) == _template(new)):
        return old.image_digest
    return None


class Resolver:
    def __init__(self, config: PinConfig) -> None:
        self.config = config

    def command(self, ref: str, cert_dir: str, auth_file: str | None = None) -> list[str]:
        argv = [self.config.skopeo, "--command-timeout", f"{int(self.config.timeout_s)}s",
                "inspect", "--raw", "--retry-times", "1"]
        argv += skopeo.access_args("--", self.config.auth_file if auth_file is None
                                   else auth_file, cert_dir,
                                   imageref.registry_of(ref) in self.config.insecure)
        return argv + [f"docker://{ref}"]

    def resolve(self, ref: str, auth: bytes | None = None) -> str:
        """The sha256 digest of the manifest `ref` names now; raises PinError.

        `auth`: an auth.json from the workload's imagePullSecret (None: --registry-auth).
        """
        # skopeo takes extra CAs as a directory of *.crt files: one per call,
        # so a scheduler that is killed leaves at most one behind, not one per run.
        # The directory is private (mkdtemp: 0700), so the credentials go there too.
        private = tempfile.mkdtemp(prefix="mctl-registry-")
        cert_dir = os.path.join(private, "certs")
        auth_file = None
        try:
            skopeo.write_cert_dir(cert_dir, self.config.ca_files)
            if auth is not None:
                auth_file = os.path.join(private, "auth.json")
                fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(auth)
            done = subprocess.run(self.command(ref, cert_dir, auth_file), capture_output=True,
                                  timeout=self.config.timeout_s + 10,
                                  stdin=subprocess.DEVNULL, env=skopeo.environment())
        except subprocess.TimeoutExpired:
            raise PinError(f"no answer within {self.config.timeout_s:.0f}s") from None
        except OSError as e:
            raise PinError(f"cannot run {self.config.skopeo}: {e.strerror}") from None
        finally:
            shutil.rmtree(private, ignore_errors=True)
        if done.returncode != 0:
            raise PinError(skopeo.explain(done.stderr.decode(errors="replace"), ref))
        if not done.stdout or len(done.stdout) > MAX_MANIFEST_BYTES:
            raise PinError(f"the registry sent a manifest of {len(done.stdout)} bytes")
        # The digest of the bytes as served: what a pull by digest asks for.
        return "sha256:" + hashlib.sha256(done.stdout).hexdigest()


SecretOf = Callable[[str, str], types_pb2.Secret | None]


def _auth(w: types_pb2.Workload, secret_of: SecretOf | None) -> bytes | None:
    """The auth.json of the workload's imagePullSecret; None: the scheduler's own.

    Raises PinError when the Secret is named but gives no credentials.
    """
    name = w.spec.image_pull_secret
    if not name or secret_of is None:
        return None
    secret = secret_of(w.metadata.namespace, name)
    if secret is None:
        raise PinError(f"imagePullSecret {name}: secret not found")
    try:
        return registryauth.auth_json(secret.data, imageref.registry_of(w.spec.image) or "")
    except registryauth.AuthError as e:
        raise PinError(f"imagePullSecret {name}: {e}") from None


def pins(resolver: Resolver | None, workloads: Iterable[types_pb2.Workload],
         stored: dict[tuple[str, str], types_pb2.Workload],
         secret_of: SecretOf | None = None) -> dict[tuple[str, str], str]:
    """(namespace, name) -> the digest to store with each workload ("" for none).

    `secret_of(namespace, name)` opens the Secrets that imagePullSecret
    names. Each image is asked for at most once per apply and credentials,
    however many workloads name it.
    """
    out: dict[tuple[str, str], str] = {}
    asked: dict[tuple[str, str], str] = {}
    for w in workloads:
        key = (w.metadata.namespace, w.metadata.name)
        old = stored.get(key)
        if old is not None and old.metadata.deletion_requested:
            old = None
        digest = reuse(w.spec, old.spec if old is not None else None)
        if digest is None:
            ref = imageref.normalize(w.spec.image)
            try:
                auth = _auth(w, secret_of)
            except PinError as e:
                log.warning("image %s not pinned (its nodes will pull the tag): %s", ref, e)
                out[key] = ""
                continue
            asked_key = (ref, registryauth.fingerprint(auth))
            if asked_key not in asked:
                asked[asked_key] = _ask(resolver, ref, auth)
            digest = asked[asked_key]
        out[key] = digest
    return out


def _ask(resolver: Resolver | None, ref: str, auth: bytes | None = None) -> str:
    if resolver is None:
        return ""
    try:
        digest = resolver.resolve(ref, auth)
    except PinError as e:
        log.warning("image %s not pinned (its nodes will pull the tag): %s", ref, e)
        return ""
    log.info("image pinned ref=%s digest=%s", ref, digest)
    return digest
