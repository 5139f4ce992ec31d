"""Importing the images of an archive (`docker save` or an OCI image layout) into the store.

The archive (a tar file or a directory: source.py) is read first,
without unpacking anything: which images it holds, their configs and the
layer blobs they name (manifests.py). Then every layer not yet in the
store is unpacked (unpack.py) into a staging directory inside the store
and verified: its uncompressed sha256 (the *diff id*, which names it in the
store) against the config's `rootfs.diff_ids`, and its blob's sha256 against
the descriptor (or the `blobs/sha256/<hex>` name) when there is one (a
pull's blobs were checked by skopeo as they came: not hashed twice). The
layers of a directory (a pulled layout) are unpacked by threads at once,
sharing the node's limits. Only
when every layer of every image in the archive is complete are the layers
renamed into `layers/<digest>` and the image records written, so a refused
archive leaves nothing behind.

The image config's Entrypoint, Cmd, Env, WorkingDir and User become the
image's defaults (store.py); `created` is kept for `mctl image ls`.

Callers serialize imports into one store (the agent holds a lock).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from mctl.common import imageref

from . import layerstream, unpack, zstd
from .manifests import REF_NAME, ImagePlan, LayerRef, ManifestReader
from .source import (
    CHUNK,
    GZIP_MAGIC,
    ZSTD_MAGIC,
    ArchiveError,
    DirSource,
    Limits,
    Source,
    open_source,
)
from .store import Image, ImageStore

__all__ = ["ArchiveError", "ImportResult", "Limits", "import_archive"]

log = logging.getLogger(__name__)

# Layers of one import unpacked at once (at most one per CPU): each holds a
# zlib stream and a 1 MiB copy buffer, and images rarely have more layers
# of any size than this.
MAX_UNPACK_THREADS = 4


@dataclass
class ImportResult:
    images: list[Image]
    layers_new: int = 0
    layers_present: int = 0
    unpacked_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    # blob path in the archive -> the diff id of the layer it holds (a pull
    # keeps the blobs, so that the next pull need not fetch them: pull.py).
    layer_blobs: dict[str, str] = field(default_factory=dict)


# -- the image defaults ---------------------------------------------------------------


def _strings(config: dict[str, Any], key: str, fail: Callable[[str], ArchiveError]) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"config.{key} must be a list of strings")
    return value


def _string(config: dict[str, Any], key: str, fail: Callable[[str], ArchiveError]) -> str:
    value = config.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(f"config.{key} must be a string")
    return value


def created_ms(text: object) -> int:
    """RFC 3339 (with up to nanoseconds, as Go writes it) -> unix ms; 0 if unreadable."""
    if not isinstance(text, str):
        return 0
    # fromisoformat takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0, int(when.timestamp() * 1000))


def _defaults(plan: ImagePlan, label: str) -> dict[str, Any]:
    """The image record's fields from its config, checked before anything is unpacked."""
    def fail(problem: str) -> ArchiveError:
        return ArchiveError(f"{label}: {plan.where}: {problem}")
    cfg = plan.config.get("config") or {}
    if not isinstance(cfg, dict):
        raise fail("config.config is not an object")
    return {
        "entrypoint": tuple(_strings(cfg, "Entrypoint", fail)),
        "cmd": tuple(_strings(cfg, "Cmd", fail)),
        "env": tuple(_strings(cfg, "Env", fail)),
        "working_dir": _string(cfg, "WorkingDir", fail) or "/",
        "user": _string(cfg, "User", fail),
        "created_unix_ms": created_ms(plan.config.get("created")) or int(time.time() * 1000),
    }


def _stack(layer_ids: list[str]) -> tuple[str, ...]:
    """The layers to stack, bottom first.

    A layer listed twice (Docker's empty layer, typically) is stacked once, at
    its topmost place: the view is the same, and overlayfs refuses a lowerdir twice.
    """
    layers: list[str] = []
    for digest in reversed(layer_ids):
        if digest not in layers:
            layers.append(digest)
    return tuple(reversed(layers))


def _names(plans: list[ImagePlan], name: str, label: str,
           pinned: bool = False) -> list[list[str]]:
    if name:
        if len(plans) != 1:
            raise ArchiveError(f"{label}: holds {len(plans)} images; --name can name only one")
        wanted = [[name]]
    else:
        wanted = []
        for plan in plans:
            if not plan.names:
                why = (f"is named only by the tag {plan.tag_only!r} ({REF_NAME})"
                       if plan.tag_only else "has no name (no RepoTags or ref.name annotation)")
                raise ArchiveError(f"{label}: {plan.where} {why}; give one with "
                                   "--name NAME[:TAG]")
            wanted.append(plan.names)
    seen: set[str] = set()
    out = []
    for plan, names in zip(plans, wanted, strict=True):
        normalized = []
        for n in names:
            problem = imageref.reference_problem(n) if pinned else imageref.problem(n)
            if problem:
                raise ArchiveError(f"{label}: {plan.where}: {problem}")
            n = imageref.normalize_reference(n)
            if n == "busybox:latest":
                raise ArchiveError(f"{label}: {plan.where}: busybox:latest is built into "
                                   "every node; import the image under another name")
            if n in seen:
                raise ArchiveError(f"{label}: names {n} twice")
            seen.add(n)
            normalized.append(n)
        out.append(normalized)
    return out


# -- unpacking -----------------------------------------------------------------------


class _LimitExceeded(Exception):
    pass


class _StreamError(Exception):
    pass


class Allowance:
    """Bytes that the layers of one import may still produce between them.

    Layers unpacked at once take from it concurrently: under a lock, so the
    node's limit holds for their sum, as it did when they came one by one.
    """

    def __init__(self, total: int) -> None:
        self.left = total
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            self.left -= n
            if self.left < 0:
                raise _LimitExceeded()


class _Hashing:
    """Reads through to `raw`, hashing and counting; over `limit` bytes is an error.

    `limit` is a byte count of its own or an Allowance shared with other
    streams. With `hashed` False the bytes are counted, not hashed (a blob
    whose digest the registry client checked as it fetched it).
    Errors of `raw` (corrupt compressed data) come out as _StreamError, so
    they are not taken for errors of the file system being written.
    """

    def __init__(self, raw: Any, limit: int | Allowance, hashed: bool = True) -> None:
        self.raw = raw
        self.limit = limit
        self.count = 0
        # OpenSSL's (fastest for layers), loaded with the first import or pull,
        # not by an idle agent (common/sha256.py).
        import hashlib
        self.sha = hashlib.sha256() if hashed else None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        try:
            data: bytes = self.raw.read(n)
        except (EOFError, zlib.error, OSError, zstd.ZstdError, layerstream.GzipError) as e:
            raise _StreamError(str(e)) from None
        self.count += len(data)
        if isinstance(self.limit, Allowance):
            self.limit.take(len(data))
        elif self.count > self.limit:
            raise _LimitExceeded()
        if self.sha is not None:
            self.sha.update(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        """A hashed stream is read once, front to back: it cannot seek (as a pipe cannot)."""
        raise io.UnsupportedOperation("seek")

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        assert self.sha is not None
        return "sha256:" + self.sha.hexdigest()


@dataclass
class UnpackedLayer:
    diff_id: str
    dir: str
    result: unpack.Unpacked
    uncompressed: int
    blob_digest: str | None = None     # when the blob was hashed


class EarlyLayers(Protocol):
    """Layers unpacked before the import, while their blobs were fetched (early.py)."""

    @property
    def budget(self) -> unpack.Budget: ...

    @property
    def allowance(self) -> Allowance: ...

    def take(self, layer: LayerRef) -> UnpackedLayer | None:
        """The layer unpacked from `layer`'s blob, or None: the import unpacks it."""


def unpack_layer(src: Source, layer: LayerRef, dest: str, budget: unpack.Budget,
                 left: Allowance, label: str, limits: Limits, blobs_verified: bool = False,
                 open_blob: Callable[[], BinaryIO] | None = None) -> UnpackedLayer:
    """Unpacks one layer blob into `dest`, checking it; raises ArchiveError.

    `open_blob` opens the blob from its start (default: `layer.path` in `src`).
    """
    def fail(problem: str) -> ArchiveError:
        return ArchiveError(f"{label}: {layer.where}: {problem}")
    opener = open_blob or (lambda: src.open(layer.path))
    with opener() as f:
        magic = f.read(4)
    kind = "zstd" if magic.startswith(ZSTD_MAGIC) else \
        "gzip" if magic.startswith(GZIP_MAGIC) else "tar"
    compressed = kind != "tar"
    os.mkdir(dest)
    os.chmod(dest, 0o755)
    with opener() as f:
        # An uncompressed blob is its own tar stream, under the unpacked budget.
        # Its diff id is hashed whatever happens; the blob's own digest only
        # when no registry client checked it already (a compressed blob's is
        # a second hash of the same bytes).
        blob = _Hashing(f, limits.max_archive_bytes if compressed else left,
                        hashed=not (blobs_verified and compressed))
        stream = blob
        if kind == "gzip":
            stream = _Hashing(layerstream.Gunzip(blob), left)
        elif kind == "zstd":
            try:
                stream = _Hashing(zstd.reader(blob), left)  # type: ignore[arg-type]
            except zstd.ZstdUnavailable as e:
                raise fail(str(e)) from None
        try:
            result = unpack.unpack(stream, dest, budget)  # type: ignore[arg-type]
            stream.drain()  # the end-of-archive padding is part of the digest
            blob.drain()
        except unpack.LayerError as e:
            raise fail(str(e)) from None
        except _LimitExceeded:
            raise fail(f"more than {limits.max_unpacked_bytes} bytes uncompressed in the "
                       "archive's layers (the node's limit)") from None
        except _StreamError as e:
            raise fail(f"corrupt {kind} data: {e}") from None
    if layer.blob_digest is not None and blob.sha is not None \
            and blob.digest != layer.blob_digest:
        raise fail(f"digest mismatch: the manifest says {layer.blob_digest}, "
                   f"the blob is {blob.digest}")
    diff_id = stream.digest
    if layer.diff_id is not None and diff_id != layer.diff_id:
        raise fail(f"diff id mismatch: the config says {layer.diff_id}, "
                   f"the uncompressed layer is {diff_id}")
    return UnpackedLayer(diff_id, dest, result, stream.count,
                         blob.digest if blob.sha is not None else None)


def _unpack_all(src: Source, layers: list[LayerRef], staging: str, budget: unpack.Budget,
                left: Allowance, label: str, limits: Limits, blobs_verified: bool,
                parallel: bool, early: EarlyLayers | None = None) -> list[UnpackedLayer]:
    """Unpacks `layers` into staging/0, staging/1, ...: at once when `parallel`.

    The work is hashing, inflating and writing, which release the GIL, so
    layers unpacked by threads of their own overlap on a machine with more
    than one core. A layer `early` unpacked while it was being fetched is
    taken from there (its diff id checked here). The first failure is
    raised once every layer has ended (the caller then removes the staging
    directory whole).
    """
    def one(i: int) -> UnpackedLayer:
        t0 = time.monotonic()
        done = early.take(layers[i]) if early is not None else None
        if done is not None:
            want = layers[i].diff_id
            if want is not None and done.diff_id != want:
                raise ArchiveError(f"{label}: {layers[i].where}: diff id mismatch: the config "
                                   f"says {want}, the uncompressed layer is {done.diff_id}")
            return done
        done = unpack_layer(src, layers[i], os.path.join(staging, str(i)), budget, left,
                            label, limits, blobs_verified)
        log.info("layer unpacked archive=%s %s diff_id=%s files=%d bytes=%d ms=%.0f",
                 label, layers[i].where, done.diff_id, done.result.entries,
                 done.result.size, (time.monotonic() - t0) * 1000)
        return done
    workers = min(len(layers), os.cpu_count() or 1, MAX_UNPACK_THREADS) if parallel else 1
    if workers <= 1:
        return [one(i) for i in range(len(layers))]
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="unpack") as pool:
        futures = [pool.submit(one, i) for i in range(len(layers))]
        concurrent.futures.wait(futures)
    return [f.result() for f in futures]


def import_archive(store: ImageStore, path: str, name: str = "",
                   limits: Limits | None = None, label: str = "",
                   pinned: bool = False, blobs_verified: bool = False,
                   early: EarlyLayers | None = None) -> ImportResult:
    """Imports every image of the archive at `path` (a file or directory) into `store`.

    `name` (NAME[:TAG]) names the archive's one image instead of its own
    tags; with `pinned` (a pull), it may be NAME[:TAG]@sha256:DIGEST.
    `blobs_verified`: every compressed blob was checked against its digest
    already (skopeo does as it fetches), so only its diff id is hashed.
    `label` is how messages call the archive (default: its path).
    `early`: layers of a pull unpacked as their blobs landed (early.py);
    the node's limits then hold for its layers and these together.
    Raises ArchiveError, leaving the store as it was.
    """
    limits = limits or Limits()
    label = label or path
    staging = tempfile.mkdtemp(prefix=".tmp-import-", dir=store.layers_dir)
    src: Source | None = None
    try:
        src = open_source(path, label, limits, staging)
        plans = ManifestReader(src, label, limits).plans()
        names = _names(plans, name, label, pinned)
        defaults = [_defaults(plan, label) for plan in plans]
        result = ImportResult(images=[])
        budget = unpack.Budget(max_file_bytes=limits.max_file_bytes,
                               max_members=limits.max_members)
        left = Allowance(limits.max_unpacked_bytes)
        if early is not None:
            budget, left = early.budget, early.allowance
        # What must be unpacked: each blob once, none whose layer (by the
        # config's diff id) the store holds already.
        todo: list[LayerRef] = []
        wanted_ids: set[str] = set()
        wanted_paths: set[str] = set()
        for plan in plans:
            for layer in plan.layers:
                if layer.diff_id and (layer.diff_id in wanted_ids
                                      or os.path.isdir(store.layer_path(layer.diff_id))):
                    continue
                if layer.path in wanted_paths:
                    continue
                todo.append(layer)
                wanted_paths.add(layer.path)
                if layer.diff_id:
                    wanted_ids.add(layer.diff_id)
        # A directory's files can be read by several threads; a tar's members
        # share its one file position.
        unpacked = _unpack_all(src, todo, staging, budget, left, label, limits,
                               blobs_verified, parallel=isinstance(src, DirSource), early=early)
        staged: dict[str, str] = {}          # diff id -> staged dir
        by_path: dict[str, str] = {}         # blob path -> diff id, when unpacked
        for layer, done in zip(todo, unpacked, strict=True):
            result.unpacked_bytes += done.result.size
            result.warnings += [f"{layer.where}: skipped {s}" for s in done.result.skipped]
            if done.diff_id in staged or os.path.isdir(store.layer_path(done.diff_id)):
                shutil.rmtree(done.dir)   # the same content under another path
            else:
                final = os.path.join(staging, done.diff_id.replace(":", "_"))
                os.rename(done.dir, final)
                staged[done.diff_id] = final
                result.layers_new += 1
            by_path[layer.path] = done.diff_id
        present: set[str] = set()            # layers the store had before
        for plan, image_names, fields in zip(plans, names, defaults, strict=True):
            ids = []
            for layer in plan.layers:
                known = by_path.get(layer.path) or layer.diff_id
                assert known is not None      # not unpacked: its diff id is in the store
                if known not in staged:
                    present.add(known)
                ids.append(known)
                result.layer_blobs[layer.path] = known
            result.images += [Image(name=n, layers=_stack(ids), **fields) for n in image_names]
        result.layers_present = len(present)
        # Everything is complete and verified: now, and only now, into place.
        for digest, d in staged.items():
            try:
                os.rename(d, store.layer_path(digest))
            except OSError:
                if not os.path.isdir(store.layer_path(digest)):
                    raise
        for image in result.images:
            store.put(image)
            log.info("image imported name=%s layers=%d archive=%s", image.name,
                     len(image.layers), label)
        return result
    finally:
        if src is not None:
            src.close()
        shutil.rmtree(staging, ignore_errors=True)
