"""Pulling images from OCI registries into the node's store.

The distribution protocol (token auth, redirects, retries, manifest lists)
is left to a maintained client: Debian's `skopeo`, run as a subprocess. It
copies `docker://REF` into a fresh OCI layout directory under the store's
scratch directory (`<store>/tmp/pull-*`), checking every blob against its
digest and picking the node's platform from a manifest list; the layout is
then imported exactly as an uploaded one is (importer.py, archive.py):
every layer against its diff id, the same hostile-archive checks, layers
already in the store not unpacked again, and nothing placed until all is
verified. The scratch directory is removed whatever happens, and the
agent removes the whole scratch directory when it starts, so a pull cut
short (killed agent, timeout) leaves nothing.

Credentials come from an auth.json file (`--registry-auth`), handed to
skopeo by path: never on its command line, where /proc would show them.
Registries are verified with the system CAs plus the cluster CA and
`--registry-ca` (copied into a certificate directory skopeo reads); TLS
verification is off only for registries named by `--insecure-registry`.

A node pulls one reference once at a time: replicas waiting for the same
image share the pull in flight (`Puller.wait_for`). A failed pull is
retried after a back-off of 1 s doubling to 5 min, per reference, and its
one-line cause is what the waiting replicas report (`ImagePullError`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mctl.common import imageref, metrics, skopeo
from mctl.v1 import types_pb2

from .importer import ImageImporter
from .source import ArchiveError
from .store import Image, ImageError

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
# Pulls of different references at once: each is a skopeo process and a
# staging directory, and a node rarely needs more.
MAX_CONCURRENT = 3


@dataclass(frozen=True)
class Pulled:
    image: Image
    present: bool = False          # it was in the store already: nothing fetched
    fetched_bytes: int = 0
    elapsed_ms: int = 0
    layers_new: int = 0


class PullError(Exception):
    """A pull failed; the message is one line for the user, never holding credentials."""


@dataclass(frozen=True)
class RegistryConfig:
    """How this node reaches registries (the agent's --registry-* flags)."""

    auth_file: str = ""                       # an auth.json ({"auths": {host: {"auth": b64}}})
    ca_files: tuple[str, ...] = ()            # the cluster CA and --registry-ca, PEM
    insecure: frozenset[str] = frozenset()    # host[:port] reached without TLS checks
    timeout_s: float = 1800.0
    skopeo: str = "skopeo"


def image_of(replica: types_pb2.Replica) -> str:
    """The reference a replica runs: its image, pinned to the digest the scheduler resolved."""
    return imageref.pinned(replica.spec.image, replica.spec.image_digest)


def is_pulled(ref: str) -> bool:
    """Whether a workload's `ref` comes from a registry (rather than busybox or an import)."""
    return imageref.registry_of(ref) is not None


def layout_bytes(path: str, skip_links: bool = False) -> int:
    """Bytes of the files under `path` (with skip_links: of those with one link only)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not (skip_links and st.st_nlink > 1):
                total += st.st_size
    return total


class Puller:
    def __init__(self, importer: ImageImporter, config: RegistryConfig,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.importer = importer
        self.store = importer.store
        self.config = config
        self.on_change = on_change
        self.cert_dir = os.path.join(self.store.root, "registry-certs")
        self._write_cert_dir()
        self.blobs_dir = os.path.dirname(self.store.blobs_path("sha256:x"))
        os.makedirs(self.blobs_dir, mode=0o700, exist_ok=True)
        self._drop_orphan_blobs()
        self._mu = threading.Lock()
        self._ref_locks: dict[str, threading.Lock] = {}
        self._in_flight: set[str] = set()
        # ref -> (failures in a row, retry at (monotonic s), one-line cause)
        self._failed: dict[str, tuple[int, float, str]] = {}
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def _write_cert_dir(self) -> None:
        """The CAs skopeo trusts beyond the system's: one `*.crt` per file given."""
        skopeo.write_cert_dir(self.cert_dir, self.config.ca_files)

    def _drop_orphan_blobs(self) -> None:
        """Kept blobs of layers no longer in the store (an agent killed mid-removal)."""
        for entry in os.listdir(self.blobs_dir):
            if not os.path.isdir(os.path.join(self.store.layers_dir, entry)):
                shutil.rmtree(os.path.join(self.blobs_dir, entry), ignore_errors=True)

    # -- kept blobs: layers present are not fetched again ----------------------------

    def _seed(self, layout: str) -> int:
        """Links every kept blob into the fresh layout; skopeo then skips fetching those.

        skopeo's OCI destination takes a blob already in the directory as
        written. Each was verified (digest and diff id) when its layer was
        imported, and the import checks every blob it unpacks again.
        """
        dest = os.path.join(layout, "blobs", "sha256")
        os.makedirs(dest)
        seeded = 0
        for layer in os.listdir(self.blobs_dir):
            if not os.path.isdir(os.path.join(self.store.layers_dir, layer)):
                continue
            for blob in os.listdir(os.path.join(self.blobs_dir, layer)):
                try:
                    os.link(os.path.join(self.blobs_dir, layer, blob), os.path.join(dest, blob))
                    seeded += 1
                except FileExistsError:
                    pass
        return seeded

    def _keep(self, layout: str, layer_blobs: dict[str, str]) -> None:
        """Keeps the layer blobs of an imported layout (hard links: no copy)."""
        for path, diff_id in layer_blobs.items():
            kept = os.path.join(self.store.blobs_path(diff_id), os.path.basename(path))
            if os.path.exists(kept):
                continue
            os.makedirs(os.path.dirname(kept), mode=0o700, exist_ok=True)
            try:
                os.link(os.path.join(layout, path), kept)
            except FileExistsError:
                pass

    # -- one pull --------------------------------------------------------------------

    def _command(self, ref: str, dest: str) -> list[str]:
        argv = [self.config.skopeo, "--command-timeout", f"{int(self.config.timeout_s)}s",
                "copy", "--quiet", "--retry-times", "2"]
        argv += skopeo.access_args("--src-", self.config.auth_file, self.cert_dir,
                                   imageref.registry_of(ref) in self.config.insecure)
        return argv + [f"docker://{imageref.fetch_reference(ref)}", f"oci:{dest}"]

    def pull(self, ref: str) -> Pulled:
        """Pulls `ref` into the store (one pull per reference at a time); raises PullError."""
        ref = imageref.normalize_reference(ref)
        with self._mu:
            lock = self._ref_locks.setdefault(ref, threading.Lock())
        with lock:
            try:
                # Pulled meanwhile, by whoever held the lock, or long ago.
                return Pulled(self.store.get(ref), present=True)
            except ImageError:
                pass
            with self._slots:
                return self._pull_locked(ref)

    def _pull_locked(self, ref: str) -> Pulled:
        t0 = time.monotonic()
        os.makedirs(self.importer.tmp_dir, mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="pull-", dir=self.importer.tmp_dir)
        layout = os.path.join(scratch, "layout")
        try:
            seeded = self._seed(layout)
            log.info("pulling image ref=%s blobs_kept=%d", ref, seeded)
            try:
                done = subprocess.run(self._command(ref, layout), capture_output=True,
                                      text=True, timeout=self.config.timeout_s + 30,
                                      stdin=subprocess.DEVNULL, env=skopeo.environment())
            except subprocess.TimeoutExpired:
                raise PullError(f"no answer within {self.config.timeout_s:.0f}s") from None
            except OSError as e:
                raise PullError(f"cannot run {self.config.skopeo}: {e.strerror} "
                                "(apt-get install skopeo)") from None
            if done.returncode != 0:
                raise PullError(skopeo.explain(done.stderr, imageref.fetch_reference(ref)))
            # What came over the network: the layout less the blobs seeded into it.
            fetched = layout_bytes(layout, skip_links=True)
            metrics.inc("image_pull_bytes_total", fetched)
            t1 = time.monotonic()
            try:
                result = self.importer.import_layout(layout, ref)
            except ArchiveError as e:
                raise PullError(str(e)) from None
            self._keep(layout, result.layer_blobs)
            log.info("image pulled ref=%s bytes=%d fetch_ms=%.0f import_ms=%.0f new_layers=%d",
                     ref, fetched, (t1 - t0) * 1000, (time.monotonic() - t1) * 1000,
                     result.layers_new)
            return Pulled(self.store.get(ref), fetched_bytes=fetched,
                          elapsed_ms=int((time.monotonic() - t0) * 1000),
                          layers_new=result.layers_new)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- replicas waiting for images --------------------------------------------------

    def wait_for(self, ref: str) -> tuple[bool, str] | None:
        """None when `ref` is ready to use (or not a registry's); else (failed, message).

        Never blocks: a pull that is due starts in the background and calls
        `on_change` when it ends, and again when its back-off is over.
        """
        if not is_pulled(ref):
            return None
        ref = imageref.normalize_reference(ref)
        try:
            self.store.get(ref)
            return None
        except ImageError:
            pass
        now = time.monotonic()
        with self._mu:
            if ref in self._in_flight:
                return False, f"pulling image {ref}"
            failed = self._failed.get(ref)
            if failed is not None and now < failed[1]:
                return True, failed[2]
            self._in_flight.add(ref)
        threading.Thread(target=self._background, args=(ref,), name=f"pull-{ref[:40]}",
                         daemon=True).start()
        return False, f"pulling image {ref}"

    def _background(self, ref: str) -> None:
        try:
            self.pull(ref)
            with self._mu:
                self._failed.pop(ref, None)
        except PullError as e:
            self._failure(ref, str(e))
        except Exception:  # noqa: BLE001 - e.g. the node's disk: retried like any failure
            log.exception("image pull failed ref=%s", ref)
            self._failure(ref, "the node could not store the image (see the agent's log)")
        finally:
            with self._mu:
                self._in_flight.discard(ref)
            self.on_change()

    def _failure(self, ref: str, cause: str) -> None:
        with self._mu:
            count = self._failed.get(ref, (0, 0.0, ""))[0] + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (count - 1))
            self._failed[ref] = (count, time.monotonic() + delay,
                                 f"{cause} (attempt {count}; next in {delay:.0f}s)")
        log.warning("image pull failed ref=%s attempt=%d retry_in_s=%.0f: %s",
                    ref, count, delay, cause)
        # Wakes the node loop when the back-off is over, so the retry is not
        # left to whatever pass happens next.
        timer = threading.Timer(delay, self.on_change)
        timer.daemon = True
        timer.start()

    def retain(self, refs: Iterable[str]) -> None:
        """Forgets failures and locks of references no replica here wants any more (a bound)."""
        keep = {imageref.normalize_reference(r) for r in refs}
        with self._mu:
            self._failed = {r: v for r, v in self._failed.items() if r in keep}
            self._ref_locks = {r: lk for r, lk in self._ref_locks.items()
                               if r in keep or lk.locked()}

