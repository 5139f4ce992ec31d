"""Where an image archive's files come from: a tar file or a directory.

`docker save` writes a tar; an OCI image layout is a directory (or a tar of
one). Either way, importing reads a few JSON documents and the layer blobs by
path, so both are a `Source`: the size of a file (None if there is none) and
a stream of it. A tar is read in place, member by member, never extracted;
a compressed one (gzip, bzip2, xz: `docker save | gzip`) is first
decompressed into the import's scratch directory, under the size limit.
Paths the archive's JSON names are checked before use (`archive_path`): an
absolute path or `..` is refused, and so is, in a directory, a symbolic link
leading out of it.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    import tarfile

CHUNK = 1 << 20
GiB = 1 << 30
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _gunzip(f: BinaryIO) -> io.BufferedIOBase:
    import gzip  # with the first gzipped archive: not in an idle agent

    return gzip.GzipFile(fileobj=f, mode="rb")


# Each a file object reading the decompressed bytes (gzip, bz2 and lzma's own).
_OUTER_DECOMPRESSORS: dict[bytes, tuple[str, Callable[[BinaryIO], io.BufferedIOBase]]] = {
    GZIP_MAGIC: ("gzip", _gunzip),
    b"BZh": ("bzip2", lambda f: bz2.BZ2File(f, mode="rb")),
    b"\xfd7zXZ\x00": ("xz", lambda f: lzma.LZMAFile(f, mode="rb")),
}


class ArchiveError(Exception):
    """The archive is malformed, hostile or over a limit; the message is one line for the user."""


@dataclass(frozen=True)
class Limits:
    """What a node accepts from one archive (the agent's --image-max-* flags)."""

    max_archive_bytes: int = 8 * GiB       # the archive as sent (and once decompressed)
    max_unpacked_bytes: int = 8 * GiB      # all its layers' uncompressed tar streams
    max_file_bytes: int = 8 * GiB          # one file in a layer
    max_members: int = 1_000_000           # entries in the archive and all its layers
    max_json_bytes: int = 4 << 20          # one manifest, index or config


class Source(Protocol):
    def size(self, path: str) -> int | None:
        """The size of the file at `path`, or None if there is none."""

    def open(self, path: str) -> BinaryIO: ...

    def close(self) -> None: ...


def archive_path(path: object, label: str, where: str) -> str:
    """A path the archive's JSON names, made relative; refused if it leaves the archive."""
    if not isinstance(path, str) or not path:
        raise ArchiveError(f"{label}: {where}: expected a path, got {path!r}")
    if path.startswith("/"):
        raise ArchiveError(f"{label}: {where}: absolute path {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise ArchiveError(f"{label}: {where}: path {path!r} leaves the archive")
    return "/".join(parts)


class DirSource:
    """An unpacked archive: a directory holding manifest.json or an OCI layout."""

    def __init__(self, root: str, label: str) -> None:
        self.root = os.path.realpath(root)
        self.label = label

    def _real(self, path: str) -> str:
        real = os.path.realpath(os.path.join(self.root, path))
        if not real.startswith(self.root + os.sep):
            raise ArchiveError(f"{self.label}: {path}: a symbolic link leads out of the directory")
        return real

    def size(self, path: str) -> int | None:
        real = self._real(path)
        return os.path.getsize(real) if os.path.isfile(real) else None

    def open(self, path: str) -> BinaryIO:
        return open(self._real(path), "rb")

    def close(self) -> None:
        pass


class TarSource:
    """A tar archive, read in place (after decompressing it into `scratch` if it is compressed)."""

    def __init__(self, path: str, label: str, limits: Limits, scratch: str) -> None:
        # Here: tarfile is not in an idle agent, which imports this module for Limits.
        import tarfile

        self.label = label
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic.startswith(ZSTD_MAGIC):
            raise ArchiveError(f"{label}: zstd-compressed archives are not supported; "
                               "decompress it first (zstd -d)")
        for prefix, (kind, opener) in _OUTER_DECOMPRESSORS.items():
            if magic.startswith(prefix):
                path = self._decompress(path, kind, opener, limits, scratch)
                break
        try:
            self.tf = tarfile.open(path, "r:")
        except (tarfile.TarError, OSError) as e:
            raise ArchiveError(f"{label}: not a tar archive ({e})") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        count = 0
        try:
            while (m := self.tf.next()) is not None:
                count += 1
                if count > limits.max_members:
                    raise ArchiveError(f"{label}: more than {limits.max_members} members "
                                       "(the node's limit)")
                # Names are only looked up, never extracted: odd ones just never match.
                self.members["/".join(p for p in m.name.split("/") if p not in ("", "."))] = m
        except tarfile.TarError as e:
            self.tf.close()
            raise ArchiveError(f"{label}: bad tar header: {e}") from None
        except ArchiveError:
            self.tf.close()
            raise

    def _decompress(self, path: str, kind: str,
                    opener: Callable[[BinaryIO], io.BufferedIOBase],
                    limits: Limits, scratch: str) -> str:
        out = os.path.join(scratch, "archive.tar")
        written = 0
        with open(path, "rb") as raw, opener(raw) as src, open(out, "wb") as dst:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except (EOFError, zlib.error, lzma.LZMAError, OSError) as e:
                    # Reading only: an OSError here is bad data (BadGzipFile,
                    # bzip2's "Invalid data stream"), not the disk.
                    raise ArchiveError(f"{self.label}: corrupt {kind} data: {e}") from None
                if not chunk:
                    return out
                written += len(chunk)
                if written > limits.max_archive_bytes:
                    raise ArchiveError(f"{self.label}: more than {limits.max_archive_bytes} "
                                       "bytes once decompressed (the node's limit)")
                dst.write(chunk)

    def _regular(self, path: str) -> tarfile.TarInfo | None:
        m = self.members.get(path)
        if m is not None and m.islnk():
            # A hard link names an earlier member of the same archive.
            m = self.members.get("/".join(p for p in m.linkname.split("/")
                                          if p not in ("", ".")))
        return m if m is not None and m.isreg() else None

    def size(self, path: str) -> int | None:
        m = self._regular(path)
        return m.size if m is not None else None

    def open(self, path: str) -> BinaryIO:
        m = self._regular(path)
        f = self.tf.extractfile(m) if m is not None else None
        if f is None:
            raise ArchiveError(f"{self.label}: {path} is not a file in the archive")
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self.tf.close()


def open_source(path: str, label: str, limits: Limits, scratch: str) -> Source:
    if os.path.isdir(path):
        return DirSource(path, label)
    return TarSource(path, label, limits, scratch)
