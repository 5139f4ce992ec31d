"""Unpacking a pull's layers while the registry client is still fetching them.

skopeo copies an image into an OCI layout directory: each blob is written
to a temporary file in the layout's root (`oci-put-blob*`), checked against
the digest the manifest gives it, and only then renamed to
`blobs/sha256/<hex>`; on a mismatch the file is removed. skopeo fetches the
layers at once, so they all land near the end: waiting for the renames
would leave little to overlap. Instead each temporary file is read while it
is being written (`_Tail`: at its end it waits for more, until the file has
been renamed, which says the writer is done, or removed, which says the
blob was refused), decompressed, hashed and unpacked as the bytes come.
A blob that landed before it was seen is unpacked from its final name.

Nothing is decided here. A layer read while written counts only once
skopeo renamed that file (the same inode) into the blobs: its name is then
the digest skopeo checked, as for a blob it landed (the compressed bytes
are not hashed a second time: archive.py's `blobs_verified`). It is held
by its blob digest in a staging directory (`<store>/layers/.tmp-early-*`,
removed when the pull ends and by the agent when it starts). The import
(archive.py) takes the ones the manifest names as layers, checks each diff
id against the config, and places layers only once the whole image
verified, as for an upload. Failures here are not reported: the import
unpacks that layer itself, with the message a plain import gives. A blob
the manifest does not name (the config) goes with the staging directory.
The node's limits hold for the sum of the layers unpacked here and in the
import.

Blobs already in the layout when the watch starts were seeded from the
store (their layers are there: pull.py) and are not read. Only blobs that
start like a layer (gzip, zstd or tar) are unpacked.

The directory is polled every POLL_S rather than watched with inotify: it
holds a handful of entries, a listing costs microseconds, and a blob is
seen at most POLL_S (10 ms) after skopeo creates it, of a pull of a few
hundred - not worth a ctypes binding with file descriptors of its own.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from typing import BinaryIO, cast

from . import archive
from .manifests import LayerRef
from .source import GZIP_MAGIC, ZSTD_MAGIC, ArchiveError, DirSource, Limits
from .unpack import Budget

log = logging.getLogger(__name__)

POLL_S = 0.01
# How long a reader at the end of a file still being written sleeps.
TAIL_WAIT_S = 0.002
# Blobs unpacked ahead by one pull; any further ones are left to the import
# (a bound on the queue and the staging dirs, far above real images).
MAX_BLOBS = 256
# Layers read at once: as many as skopeo fetches at once (its default), as
# most of a reader's time is waiting for the network.
WORKERS = 6
# tar's magic (POSIX ustar and GNU), at byte 257 of the first header.
_TAR_MAGIC_AT = 257
_HEAD = _TAR_MAGIC_AT + 5
# The layout's own files, never a blob being written.
_LAYOUT_FILES = {"blobs", "index.json", "oci-layout"}


class Cancelled(Exception):
    """The pull ended (failed or was stopped) while a layer was being unpacked."""


class _Abandoned(Exception):
    """The writer removed the file it was writing: skopeo refused the blob."""


class _Allowance(archive.Allowance):
    """The import's byte allowance that also stops the unpacking of a cancelled pull.

    Every chunk read from a layer takes from the allowance, so this is where
    a layer being unpacked learns soonest that nobody wants it any more.
    """

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.cancelled = threading.Event()

    def take(self, n: int) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        super().take(n)


class _Tail:
    """Reads the file at `path` (open as `fd`) while another process writes it.

    At the end of what is written it waits for more, until the writer is
    done (the file was renamed away from `path`: skopeo renames a blob only
    once it is complete and verified), gave up (the file was removed) or
    has exited (`exited`: whatever it left is all there will be).
    """

    def __init__(self, fd: int, path: str, cancelled: threading.Event,
                 exited: threading.Event, owns_fd: bool = False) -> None:
        self.fd = fd
        self.path = path
        self.cancelled = cancelled
        self.exited = exited
        self.owns_fd = owns_fd
        self.pos = 0

    def _writer_done(self) -> bool:
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            raise _Abandoned()
        try:
            return os.lstat(self.path).st_ino != st.st_ino
        except FileNotFoundError:
            return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while True:
            data = os.pread(self.fd, n, self.pos)
            if data:
                self.pos += len(data)
                return data
            if self.exited.is_set() or self._writer_done():
                # Written in full before the rename: whatever is left is here now.
                data = os.pread(self.fd, n, self.pos)
                self.pos += len(data)
                return data
            if self.cancelled.is_set():
                raise Cancelled()
            time.sleep(TAIL_WAIT_S)

    def close(self) -> None:
        if self.owns_fd and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def looks_like_layer(head: bytes) -> bool:
    """Whether a blob starting with `head` is a gzip, zstd or tar stream (not a JSON document)."""
    return head.startswith((GZIP_MAGIC, ZSTD_MAGIC)) or head[_TAR_MAGIC_AT:_HEAD] == b"ustar"


class EarlyUnpacker:
    """Watches `layout` and unpacks each layer blob as skopeo writes it; see the module doc.

    `start()` before the registry client runs, `fetched()` once it exited,
    `close()` whatever happens; the import asks `take(layer)` for what was
    unpacked.
    """

    def __init__(self, layout: str, layers_dir: str, label: str, limits: Limits) -> None:
        self.layout = layout
        self.blobs = os.path.join(layout, "blobs", "sha256")
        self.label = label
        self.limits = limits
        self.budget = Budget(max_file_bytes=limits.max_file_bytes,
                             max_members=limits.max_members)
        self.allowance = _Allowance(limits.max_unpacked_bytes)
        self.staging = tempfile.mkdtemp(prefix=".tmp-early-", dir=layers_dir)
        self._src = DirSource(layout, label)
        self._seen_blobs: set[str] = set(os.listdir(self.blobs))   # seeded: not read
        self._seen_root: set[str] = set()
        self._tailed: set[int] = set()          # inodes of files read while written
        self._jobs: list[concurrent.futures.Future[archive.UnpackedLayer | None]] = []
        self._done: dict[str, archive.UnpackedLayer] = {}    # blob digest -> its layer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._exited = threading.Event()      # the registry client has exited
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS,
                                                           thread_name_prefix="early-unpack")
        self._watcher = threading.Thread(target=self._watch, name="early-unpack-watch",
                                         daemon=True)

    def start(self) -> None:
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self._scan()

    def _submit(self, fn: object, *args: object) -> None:
        self._jobs.append(self._pool.submit(fn, *args))  # type: ignore[arg-type]

    def _scan(self) -> None:
        with self._lock:
            try:
                # Files being written first: one renamed meanwhile is then
                # found among the blobs, not lost between the two listings.
                root = os.listdir(self.layout)
                blobs = os.listdir(self.blobs)
            except OSError:
                return      # the layout is being removed: the pull is over
            for name in root:
                if name in self._seen_root or name in _LAYOUT_FILES \
                        or len(self._jobs) >= MAX_BLOBS:
                    continue
                self._seen_root.add(name)
                path = os.path.join(self.layout, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    continue        # renamed already: among the blobs next time
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    continue
                self._tailed.add(st.st_ino)
                self._submit(self._unpack_tail, path, fd)
            for name in blobs:
                if name in self._seen_blobs or len(self._jobs) >= MAX_BLOBS:
                    continue
                self._seen_blobs.add(name)
                try:
                    if os.lstat(os.path.join(self.blobs, name)).st_ino in self._tailed:
                        continue
                except OSError:
                    continue
                self._submit(self._unpack_landed, name)

    def _unpack_tail(self, path: str, fd: int) -> archive.UnpackedLayer | None:
        """A blob being written: read as it comes, kept if it lands under its digest."""
        cancelled = self.allowance.cancelled
        try:
            head = b""
            with _Tail(fd, path, cancelled, self._exited) as tail:
                while len(head) < _HEAD and (more := tail.read(_HEAD - len(head))):
                    head += more
            if not looks_like_layer(head):
                return None
            layer = LayerRef(path="", where=f"layer being fetched ({os.path.basename(path)})",
                             diff_id=None, blob_digest=None, blob_size=None)
            done = self._unpack(layer, os.path.basename(path), lambda: cast(
                BinaryIO, _Tail(os.dup(fd), path, cancelled, self._exited, owns_fd=True)))
            if done is None:
                return None
            # The writer is done: it renamed the file to its digest, which it
            # checked against the manifest's (the same trust as a blob it
            # landed: its bytes are not hashed a second time here).
            inode = os.fstat(fd).st_ino
            for name in os.listdir(self.blobs):
                try:
                    if os.lstat(os.path.join(self.blobs, name)).st_ino == inode:
                        done.blob_digest = "sha256:" + name
                        return self._keep(done)
                except OSError:
                    continue
            return None     # not renamed into the blobs: not a blob of this layout
        except (_Abandoned, Cancelled):
            return None
        finally:
            os.close(fd)

    def _unpack_landed(self, name: str) -> archive.UnpackedLayer | None:
        """A blob skopeo landed before it was seen: complete, verified, named by its digest."""
        try:
            with open(os.path.join(self.blobs, name), "rb") as f:
                if not looks_like_layer(f.read(_HEAD)):
                    return None
        except OSError:
            return None
        digest = "sha256:" + name
        layer = LayerRef(path=f"blobs/sha256/{name}", where=f"layer {digest[:19]}",
                         diff_id=None, blob_digest=digest, blob_size=None)
        done = self._unpack(layer, name, None)
        if done is None:
            return None
        done.blob_digest = digest
        return self._keep(done)

    def _unpack(self, layer: LayerRef, name: str,
                open_blob: object) -> archive.UnpackedLayer | None:
        t0 = time.monotonic()
        dest = tempfile.mkdtemp(prefix="layer-", dir=self.staging)
        os.rmdir(dest)          # unpack_layer makes it
        try:
            done = archive.unpack_layer(self._src, layer, dest, self.budget, self.allowance,
                                        self.label, self.limits,
                                        blobs_verified=True,
                                        open_blob=open_blob)  # type: ignore[arg-type]
        except (ArchiveError, OSError) as e:
            # The import unpacks this layer again and reports it as it would any.
            log.debug("early unpack of %s gave up: %s", name, e)
            return None
        log.info("layer unpacked while pulling image=%s blob=%s diff_id=%s files=%d "
                 "bytes=%d ms=%.0f", self.label, name[:24], done.diff_id,
                 done.result.entries, done.result.size, (time.monotonic() - t0) * 1000)
        return done

    def _keep(self, done: archive.UnpackedLayer) -> archive.UnpackedLayer:
        assert done.blob_digest is not None
        with self._lock:
            self._done.setdefault(done.blob_digest, done)
        return done

    def fetched(self) -> None:
        """The registry client has exited: takes the blobs it landed since the last look."""
        self._exited.set()
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self._scan()

    def take(self, layer: LayerRef) -> archive.UnpackedLayer | None:
        """The layer unpacked from `layer`'s blob (once every reading ended); None: not here.

        Once taken it is the caller's (it renames or removes the directory).
        """
        with self._lock:
            jobs = list(self._jobs)
        concurrent.futures.wait(jobs)
        if layer.blob_digest is None:
            return None
        with self._lock:
            return self._done.pop(layer.blob_digest, None)

    def close(self) -> None:
        """Stops the watch and every unpacking, and removes what they staged."""
        self._stop.set()
        self.allowance.cancelled.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.staging, ignore_errors=True)
