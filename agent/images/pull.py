"""Pulling images from OCI registries into the node's store.

The distribution protocol (token auth, redirects, retries, manifest lists)
is left to a maintained client: Debian's `skopeo`, run as a subprocess. It
copies `docker://REF` into a fresh OCI layout directory under the store's
scratch directory (`<store>/tmp/pull-*`), checking every blob against its
digest and picking the node's platform from a manifest list; the layout is
then imported exactly as an uploaded one is (importer.py, archive.py):
every layer against its diff id, the same hostile-archive checks, layers
already in the store not unpacked again, and nothing placed until all is
verified. Each layer blob is unpacked (into staging) as soon as skopeo has
landed it, while it fetches the others (early.py): the import then finds
most of the work done. The scratch directory is removed whatever happens, and the
agent removes the whole scratch directory when it starts, so a pull cut
short (killed agent, timeout) leaves nothing.

Credentials: a replica whose workload names an `imagePullSecret` pulls
with that Secret's credentials (common/registryauth.py makes them an
auth.json in a private 0600 file that lives only as long as the pull);
any other pull uses the node-wide auth.json of `--registry-auth`. Either is
handed to skopeo by path: never on its command line, where /proc would show
them. A failure's back-off is kept per reference and credentials: a mended
Secret is tried at once, not after the back-off the wrong one earned.
Registries are verified with the system CAs plus the cluster CA and
`--registry-ca` (copied into a certificate directory skopeo reads); TLS
verification is off only for registries named by `--insecure-registry`.

A node pulls one reference once at a time: replicas waiting for the same
image share the pull in flight (`Puller.wait_for`). While it runs,
`progress` says the bytes so far (the scratch layout's size: skopeo's
partial blobs are in it), the total (the image's layer sizes, from a
`skopeo inspect` run alongside the copy once it has taken more than
TOTAL_AFTER_S, so that the many short pulls do not pay for a second
process) and the time; once done, the size and time are kept for
`describe replica`. A failed pull is retried after a back-off of 1 s
doubling to 5 min, per reference and credentials, and its one-line cause
is what the waiting replicas report (`ImagePullError`).
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
from typing import TYPE_CHECKING

from mctl.common import imageref, metrics, registryauth, skopeo
from mctl.v1 import types_pb2

from .importer import ImageImporter
from .source import ArchiveError
from .store import Image, ImageError

if TYPE_CHECKING:
    from .early import EarlyUnpacker

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
# Pulls of different references at once: each is a skopeo process and a
# staging directory, and a node rarely needs more.
MAX_CONCURRENT = 3
# How stale the bytes-so-far of a pull may be: each look walks the scratch
# layout (a few files), and the status report quantizes it further.
PROGRESS_EVERY_S = 1.0
# A pull still running after this long learns its total size (one `skopeo inspect`).
TOTAL_AFTER_S = 1.0
# Failed pulls remembered (a reference with each set of credentials tried).
MAX_FAILURES_KEPT = 1024
# Finished pulls remembered for `describe replica` (forgotten with `retain`).
MAX_PULLED_KEPT = 256


@dataclass(frozen=True)
class Progress:
    """A pull as `describe replica` shows it."""

    done: bool
    bytes: int            # so far, or fetched in all when done
    total: int            # 0 while unknown
    elapsed_ms: int


class _Running:
    """A pull in flight: its scratch layout and what is known of its size."""

    def __init__(self, layout: str) -> None:
        self.layout = layout
        self.started = time.monotonic()
        self.total = 0
        self.seen = 0
        self.seen_at = 0.0


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
        # (ref, fingerprint of the credentials) -> (failures in a row, retry at
        # (monotonic s), one-line cause): per credentials, so that two
        # workloads pulling one image with different Secrets each keep their
        # own back-off rather than resetting each other's.
        self._failed: dict[tuple[str, str], tuple[int, float, str]] = {}
        self._running: dict[str, _Running] = {}
        self._pulled: dict[str, Progress] = {}
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        # Layers unpacked as their blobs land (early.py); off: only once all
        # are fetched (kept for bench/pull.py's before/after).
        self.overlap = True

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

    def _access(self, ref: str, prefix: str, auth_file: str) -> list[str]:
        return skopeo.access_args(prefix, auth_file, self.cert_dir,
                                  imageref.registry_of(ref) in self.config.insecure)

    def _command(self, ref: str, dest: str, auth_file: str) -> list[str]:
        argv = [self.config.skopeo, "--command-timeout", f"{int(self.config.timeout_s)}s",
                "copy", "--quiet", "--retry-times", "2"]
        argv += self._access(ref, "--src-", auth_file)
        return argv + [f"docker://{imageref.fetch_reference(ref)}", f"oci:{dest}"]

    def _size_command(self, ref: str, auth_file: str) -> list[str]:
        argv = [self.config.skopeo, "--command-timeout", "30s", "inspect", "--format",
                "{{range .LayersData}}{{.Size}} {{end}}"]
        argv += self._access(ref, "--", auth_file)
        return argv + [f"docker://{imageref.fetch_reference(ref)}"]

    def pull(self, ref: str, auth: bytes | None = None) -> Pulled:
        """Pulls `ref` into the store (one pull per reference at a time); raises PullError.

        `auth`: an auth.json from the workload's imagePullSecret; None: the
        node's --registry-auth.
        """
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
                if auth is None:
                    return self._pull_locked(ref, self.config.auth_file)
                with registryauth.private_file(auth, self.importer.tmp_dir) as path:
                    return self._pull_locked(ref, path)

    def _measure_total(self, ref: str, auth_file: str, running: _Running) -> None:
        """The image's layer bytes, for progress only: any failure leaves it unknown."""
        try:
            out = subprocess.run(self._size_command(ref, auth_file), capture_output=True,
                                 text=True, timeout=40, stdin=subprocess.DEVNULL,
                                 env=skopeo.environment())
            if out.returncode == 0:
                running.total = sum(int(x) for x in out.stdout.split()[:1000] if x.isdigit())
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _pull_locked(self, ref: str, auth_file: str) -> Pulled:
        t0 = time.monotonic()
        os.makedirs(self.importer.tmp_dir, mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix="pull-", dir=self.importer.tmp_dir)
        layout = os.path.join(scratch, "layout")
        running = _Running(layout)
        sizer: threading.Timer | None = None
        early: EarlyUnpacker | None = None
        try:
            seeded = self._seed(layout)
            if self.overlap:
                from .early import EarlyUnpacker  # with archive.py: not in an idle agent
                early = EarlyUnpacker(layout, self.store.layers_dir, ref, self.importer.limits)
                early.start()
            log.info("pulling image ref=%s blobs_kept=%d", ref, seeded)
            with self._mu:
                self._running[ref] = running
            sizer = threading.Timer(TOTAL_AFTER_S, self._measure_total,
                                    args=(ref, auth_file, running))
            sizer.daemon = True
            sizer.start()
            try:
                done = subprocess.run(self._command(ref, layout, auth_file), capture_output=True,
                                      text=True, timeout=self.config.timeout_s + 30,
                                      stdin=subprocess.DEVNULL, env=skopeo.environment())
            except subprocess.TimeoutExpired:
                raise PullError(f"no answer within {self.config.timeout_s:.0f}s") from None
            except OSError as e:
                raise PullError(f"cannot run {self.config.skopeo}: {e.strerror} "
                                "(apt-get install skopeo)") from None
            if early is not None:
                early.fetched()
            if done.returncode != 0:
                raise PullError(skopeo.explain(done.stderr, imageref.fetch_reference(ref)))
            # What came over the network: the layout less the blobs seeded into it.
            fetched = layout_bytes(layout, skip_links=True)
            metrics.inc("image_pull_bytes_total", fetched)
            t1 = time.monotonic()
            try:
                result = self.importer.import_layout(layout, ref, early)
            except ArchiveError as e:
                raise PullError(str(e)) from None
            self._keep(layout, result.layer_blobs)
            log.info("image pulled ref=%s bytes=%d fetch_ms=%.0f import_ms=%.0f new_layers=%d",
                     ref, fetched, (t1 - t0) * 1000, (time.monotonic() - t1) * 1000,
                     result.layers_new)
            elapsed_ms = int((time.monotonic() - t0) * 1000)
            with self._mu:
                self._pulled[ref] = Progress(True, fetched, fetched, elapsed_ms)
                while len(self._pulled) > MAX_PULLED_KEPT:
                    del self._pulled[next(iter(self._pulled))]
            return Pulled(self.store.get(ref), fetched_bytes=fetched, elapsed_ms=elapsed_ms,
                          layers_new=result.layers_new)
        finally:
            with self._mu:
                self._running.pop(ref, None)
            if early is not None:
                early.close()       # before the layout it reads goes
            shutil.rmtree(scratch, ignore_errors=True)
            if sizer is not None:
                sizer.cancel()      # if it started, it ends with its (bounded) skopeo

    def progress(self, ref: str) -> Progress | None:
        """The pull of `ref` in flight, or the last finished one here; None: neither."""
        ref = imageref.normalize_reference(ref)
        now = time.monotonic()
        with self._mu:
            running = self._running.get(ref)
            if running is None:
                return self._pulled.get(ref)
        if now - running.seen_at >= PROGRESS_EVERY_S:
            try:
                running.seen = layout_bytes(running.layout, skip_links=True)
            except OSError:
                pass    # the pull ended meanwhile and removed its layout
            running.seen_at = now
        return Progress(False, running.seen, running.total, int((now - running.started) * 1000))

    # -- replicas waiting for images --------------------------------------------------

    def wait_for(self, ref: str, auth: bytes | None = None) -> tuple[bool, str] | None:
        """None when `ref` is ready to use (or not a registry's); else (failed, message).

        Never blocks: a pull that is due starts in the background and calls
        `on_change` when it ends, and again when its back-off is over. `auth`
        as for `pull`; other credentials than those that failed last are
        tried at once.
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
            failed = self._failed.get((ref, registryauth.fingerprint(auth)))
            if failed is not None and now < failed[1]:
                return True, failed[2]
            self._in_flight.add(ref)
        threading.Thread(target=self._background, args=(ref, auth), name=f"pull-{ref[:40]}",
                         daemon=True).start()
        return False, f"pulling image {ref}"

    def _background(self, ref: str, auth: bytes | None = None) -> None:
        try:
            self.pull(ref, auth)
            with self._mu:
                self._failed = {k: v for k, v in self._failed.items() if k[0] != ref}
        except PullError as e:
            self._failure(ref, str(e), auth)
        except Exception:  # noqa: BLE001 - e.g. the node's disk: retried like any failure
            log.exception("image pull failed ref=%s", ref)
            self._failure(ref, "the node could not store the image (see the agent's log)", auth)
        finally:
            with self._mu:
                self._in_flight.discard(ref)
            self.on_change()

    def _failure(self, ref: str, cause: str, auth: bytes | None = None) -> None:
        key = (ref, registryauth.fingerprint(auth))
        with self._mu:
            count = self._failed.get(key, (0, 0.0, ""))[0] + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (count - 1))
            self._failed.pop(key, None)
            self._failed[key] = (count, time.monotonic() + delay,
                                 f"{cause} (attempt {count}; next in {delay:.0f}s)")
            while len(self._failed) > MAX_FAILURES_KEPT:   # the oldest first
                del self._failed[next(iter(self._failed))]
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
            self._failed = {k: v for k, v in self._failed.items() if k[0] in keep}
            self._pulled = {r: v for r, v in self._pulled.items() if r in keep}
            self._ref_locks = {r: lk for r, lk in self._ref_locks.items()
                               if r in keep or lk.locked()}

