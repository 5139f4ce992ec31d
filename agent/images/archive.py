"""Importing the images of an archive (`docker save` or an OCI image layout) into the store.

The archive (a tar file or a directory: source.py) is read first,
without unpacking anything: which images it holds, their configs and the
layer blobs they name (manifests.py). Then every layer not yet in the
store is unpacked (unpack.py) into a staging directory inside the store
and verified: its uncompressed sha256 (the *diff id*, which names it in the
store) against the config's `rootfs.diff_ids`, and its blob's sha256 against
the descriptor (or the `blobs/sha256/<hex>` name) when there is one. Only
when every layer of every image in the archive is complete are the layers
renamed into `layers/<digest>` and the image records written, so a refused
archive leaves nothing behind.

The image config's Entrypoint, Cmd, Env, WorkingDir and User become the
image's defaults (store.py); `created` is kept for `mctl image ls`.

Callers serialize imports into one store (the agent holds a lock).
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mctl.common import imageref

from . import unpack
from .manifests import REF_NAME, ImagePlan, LayerRef, ManifestReader
from .source import CHUNK, GZIP_MAGIC, ZSTD_MAGIC, ArchiveError, Limits, Source, open_source
from .store import Image, ImageStore

__all__ = ["ArchiveError", "ImportResult", "Limits", "import_archive"]

log = logging.getLogger(__name__)


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


class _Hashing:
    """Reads through to `raw`, hashing and counting; over `limit` bytes is an error.

    Errors of `raw` (corrupt compressed data) come out as _StreamError, so
    they are not taken for errors of the file system being written.
    """

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.count = 0
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        try:
            data: bytes = self.raw.read(n)
        except (EOFError, zlib.error, OSError) as e:
            raise _StreamError(str(e)) from None
        self.count += len(data)
        if self.count > self.limit:
            raise _LimitExceeded()
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
        return "sha256:" + self.sha.hexdigest()


@dataclass
class _Unpacked:
    diff_id: str
    dir: str
    result: unpack.Unpacked
    uncompressed: int


def _unpack_layer(src: Source, layer: LayerRef, dest: str, budget: unpack.Budget,
                  left: int, label: str, limits: Limits) -> _Unpacked:
    def fail(problem: str) -> ArchiveError:
        return ArchiveError(f"{label}: {layer.where}: {problem}")
    with src.open(layer.path) as f:
        magic = f.read(4)
    if magic.startswith(ZSTD_MAGIC):
        raise fail("zstd-compressed layers are not supported")
    compressed = magic.startswith(GZIP_MAGIC)
    os.mkdir(dest)
    os.chmod(dest, 0o755)
    with src.open(layer.path) as f:
        # An uncompressed blob is its own tar stream, under the unpacked budget.
        blob = _Hashing(f, limits.max_archive_bytes if compressed else left)
        stream = _Hashing(gzip.GzipFile(fileobj=blob, mode="rb"), left) if compressed else blob
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
            raise fail(f"corrupt {'gzip' if compressed else 'tar'} data: {e}") from None
    if layer.blob_digest is not None and blob.digest != layer.blob_digest:
        raise fail(f"digest mismatch: the manifest says {layer.blob_digest}, "
                   f"the blob is {blob.digest}")
    diff_id = stream.digest
    if layer.diff_id is not None and diff_id != layer.diff_id:
        raise fail(f"diff id mismatch: the config says {layer.diff_id}, "
                   f"the uncompressed layer is {diff_id}")
    return _Unpacked(diff_id, dest, result, stream.count)


def import_archive(store: ImageStore, path: str, name: str = "",
                   limits: Limits | None = None, label: str = "",
                   pinned: bool = False) -> ImportResult:
    """Imports every image of the archive at `path` (a file or directory) into `store`.

    `name` (NAME[:TAG]) names the archive's one image instead of its own
    tags; with `pinned` (a pull), it may be NAME[:TAG]@sha256:DIGEST.
    `label` is how messages call the archive (default: its path).
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
        left = limits.max_unpacked_bytes
        staged: dict[str, str] = {}          # diff id -> staged dir
        by_path: dict[str, str] = {}         # blob path -> diff id, when unpacked already
        present: set[str] = set()            # layers the store had before
        for plan, image_names, fields in zip(plans, names, defaults, strict=True):
            ids = []
            for layer in plan.layers:
                known = layer.diff_id or by_path.get(layer.path)
                if known and (known in staged or os.path.isdir(store.layer_path(known))):
                    if known not in staged:
                        present.add(known)
                    ids.append(known)
                    result.layer_blobs[layer.path] = known
                    continue
                t0 = time.monotonic()
                done = _unpack_layer(src, layer, os.path.join(staging, str(len(staged))),
                                     budget, left, label, limits)
                left -= done.uncompressed
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
                result.layer_blobs[layer.path] = done.diff_id
                ids.append(done.diff_id)
                log.info("layer unpacked archive=%s %s diff_id=%s files=%d bytes=%d ms=%.0f",
                         label, layer.where, done.diff_id, done.result.entries,
                         done.result.size, (time.monotonic() - t0) * 1000)
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
