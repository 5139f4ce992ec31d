"""The agent's side of `mctl image import` and `mctl image ls`.

An import arrives as a client stream of chunks. They are written to a
temporary file under the store (`<state>/images/tmp/`, on the same disk the
layers go to), counted against the node's archive size limit as they come,
and only then unpacked (archive.py). The first bytes must be those of an
archive (common/archivehead.py), so /dev/zero sent by mistake is refused
after one chunk, not after the size limit. One import runs at a time
per node: they are rare, and serializing them is what lets a failed import
remove exactly what it staged. Leftovers of an agent killed mid-import are
removed when the agent starts.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mctl.common import archivehead, imageref, metrics
from mctl.v1 import agent_pb2

from .source import Limits
from .store import Image, ImageStore

if TYPE_CHECKING:
    # archive.py (and tarfile, the decompressors, manifests) loads with the
    # first import or pull, not in an idle agent (tests/unit/test_agent_imports.py).
    from .archive import ImportResult
    from .early import EarlyUnpacker

log = logging.getLogger(__name__)


class ImportRefused(Exception):
    """The upload itself is unusable (empty, over the size limit); the message is for the user."""


class ImageImporter:
    def __init__(self, store: ImageStore, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.tmp_dir = os.path.join(store.root, "tmp")
        self._lock = threading.Lock()
        self._layer_sizes: dict[str, int] = {}    # layers never change: sized once
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        for entry in os.listdir(self.store.layers_dir):
            if entry.startswith(".tmp-"):
                log.info("removing an unfinished import's layers: %s", entry)
                shutil.rmtree(os.path.join(self.store.layers_dir, entry), ignore_errors=True)

    def receive(self, chunks: Iterable[agent_pb2.ImageChunk]) -> tuple[ImportResult, int]:
        """Takes the streamed archive and imports it; returns the result and the bytes received.

        Raises ImportRefused or ArchiveError (bad input), OSError (the node's disk).
        """
        t0 = time.monotonic()
        fd, path = tempfile.mkstemp(prefix="upload-", suffix=".tar", dir=self.tmp_dir)
        try:
            name = filename = ""
            received = 0
            head = b""          # the first bytes, until they are judged
            judged = False
            with os.fdopen(fd, "wb") as f:
                for i, chunk in enumerate(chunks):
                    if i == 0:
                        name, filename = chunk.name, os.path.basename(chunk.filename)
                        if chunk.size > self.limits.max_archive_bytes:
                            raise ImportRefused(self._too_big(filename or "the archive",
                                                              chunk.size))
                    received += len(chunk.data)
                    if received > self.limits.max_archive_bytes:
                        raise ImportRefused(self._too_big(filename or "the archive", received))
                    if not judged:
                        head += chunk.data[:archivehead.HEAD_BYTES]
                        if len(head) >= archivehead.HEAD_BYTES:
                            self._judge(filename, head)
                            judged = True
                    f.write(chunk.data)
            if received == 0:
                raise ImportRefused(f"{filename or 'the archive'}: no data received")
            if not judged:
                self._judge(filename, head)
            t1 = time.monotonic()
            label = filename or "archive"
            log.info("image archive received file=%s bytes=%d ms=%.0f", label, received,
                     (t1 - t0) * 1000)
            with self._lock:
                from .archive import import_archive
                result = import_archive(self.store, path, name=name, limits=self.limits,
                                        label=label)
            metrics.inc("image_import_bytes_total", received)
            log.info("image archive imported file=%s images=%s new_layers=%d ms=%.0f", label,
                     ",".join(i.name for i in result.images), result.layers_new,
                     (time.monotonic() - t1) * 1000)
            return result, received
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def import_layout(self, path: str, ref: str,
                      early: EarlyUnpacker | None = None) -> ImportResult:
        """Imports a pulled OCI layout directory as `ref`, with every check an upload gets.

        Under the one import lock: a pull and an upload never place layers
        into the store at the same time (`early` unpacked some of them into
        staging while they were fetched, outside the lock: staging is not
        the store). Raises ArchiveError, leaving the store as it was.
        """
        from .archive import import_archive
        with self._lock:
            # skopeo checked every blob it fetched against its digest; a
            # kept blob it did not fetch is one of a layer the store has,
            # which is not read again.
            return import_archive(self.store, path, name=ref, limits=self.limits,
                                  label=ref, pinned=True, blobs_verified=True, early=early)

    def remove(self, ref: str) -> tuple[int, int]:
        """Removes an image and then every layer no image names; (layers, bytes) freed.

        Under the import lock: an import renames its layers into place before
        it writes the records naming them, and those must not look unused.
        The caller has checked that no container uses the image.
        """
        with self._lock:
            self.store.remove(ref)
            freed = removed = 0
            for digest in self.store.unused_layers():
                size = self.layer_size(digest)
                path = self.store.layer_path(digest)
                # Renamed first, so a crash midway leaves a staging dir
                # (removed at start) rather than a half layer under its digest.
                doomed = tempfile.mkdtemp(prefix=".tmp-rm-", dir=self.store.layers_dir)
                os.rename(path, os.path.join(doomed, "layer"))
                shutil.rmtree(doomed, ignore_errors=True)
                shutil.rmtree(self.store.blobs_path(digest), ignore_errors=True)
                self._layer_sizes.pop(digest, None)
                freed += size
                removed += 1
            log.info("image removed ref=%s layers_removed=%d bytes=%d", ref, removed, freed)
            return removed, freed

    def _judge(self, filename: str, head: bytes) -> None:
        problem = archivehead.problem(head)
        if problem is not None:
            raise ImportRefused(f"{filename or 'the archive'}: {problem}")

    def _too_big(self, what: str, size: int) -> str:
        return (f"{what}: {size} bytes is over this node's limit of "
                f"{self.limits.max_archive_bytes} bytes per archive")

    def layer_size(self, digest: str) -> int:
        """Bytes of the regular files in a layer (hard links counted once)."""
        size = self._layer_sizes.get(digest)
        if size is None:
            size = 0
            seen: set[int] = set()
            for dirpath, _, filenames in os.walk(self.store.layer_path(digest)):
                for name in filenames:
                    st = os.lstat(os.path.join(dirpath, name))
                    if stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                        seen.add(st.st_ino)
                        size += st.st_size
            self._layer_sizes[digest] = size
        return size

    def info(self, image: Image) -> agent_pb2.ImageInfo:
        created = image.created_unix_ms
        if not created and image.layers:
            # busybox is built on the node: its layer's age is the image's.
            try:
                created = int(os.stat(self.store.layer_path(image.layers[-1])).st_mtime * 1000)
            except OSError:
                created = 0
        return agent_pb2.ImageInfo(
            name=image.name, layers=list(image.layers),
            size_bytes=sum(self.layer_size(d) for d in dict.fromkeys(image.layers)),
            created_unix_ms=created, entrypoint=list(image.entrypoint), cmd=list(image.cmd),
            env=list(image.env), working_dir=image.working_dir, user=image.user,
            digest=imageref.digest_of(image.name))

    def list(self) -> list[agent_pb2.ImageInfo]:
        return [self.info(image) for image in self.store.list()]


def is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)
