"""A layer's bytes on their way from the blob to the unpacker, in few calls and few copies.

A pull leaves the agent's CPU no slack: skopeo (TLS, digests, its own
writes) and the agent's unpacking (inflate, the diff id's sha256, the
files' writes) share the node's cores while the layers arrive, so each
byte should cost what the work needs and no more. The standard library's
way costs more: `gzip.GzipFile` reads its input 8 KiB at a time and adds
a CRC of every piece, and tarfile's stream mode (`r|`) reads 10 KiB at a
time and joins and slices them into every read, so 30 MiB of layers took
some 10,000 Python-level reads and five copies of each byte, in 1 MiB
pieces that no longer fit a core's cache by the time they were written
(bench/pull.py: the agent used ~100 ms of CPU for a 30 MiB pull that
skopeo fetched with ~140 ms; now ~50 ms, a third of it the diff id's sha256).

- `Gunzip` reads each gzip member's header itself and inflates the data
  raw, CHUNK bytes of input at a time, every member one after another and
  the zero padding some writers put after them (as GzipFile does). The
  members' CRC-32 is left out: the layer's sha256 is checked against the
  config whatever happens (see the class). When the `isal` package
  (bindings to Intel's ISA-L, PyPI) is installed, its zlib-compatible
  inflater is used: the same format, ~1.5x faster on compressible layers.
  Without it: the standard zlib, the same bytes.
- `Forward` is the file object tarfile reads (in its seeking mode, `r:`):
  forward-only, buffered for the 512-byte headers, while a file's contents
  are handed through as the decompressor produced them (`read_some`).

Neither decides anything: the unpacker's checks (unpack.py) and the
digests (archive.py) see the same bytes as before.
"""

from __future__ import annotations

import io
import zlib
from types import ModuleType
from typing import Any, Protocol, cast

# Compressed bytes read at a time: large enough that the per-call cost
# vanishes, small enough that a chunk and what it inflates to stay in a
# core's cache between the copies (decompress, hash, write).
CHUNK = 256 << 10
# At most this much inflated per call (a bound whatever the ratio: a
# gzip bomb yields it a chunk at a time, each counted against the limits).
OUT_MAX = 1 << 20
# A gzip member's header with its optional fields (RFC 1952, 2.3).
_GZIP_MAGIC = b"\x1f\x8b"
_DEFLATE = 8
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _FRESERVED = 0x02, 0x04, 0x08, 0x10, 0xE0
_TRAILER = 8
# A member's name and comment together (gzip writes a file name; real ones are short).
HEADER_MAX = 64 << 10
_WBITS_RAW = -zlib.MAX_WBITS


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class GzipError(ValueError):
    """The gzip data is corrupt or truncated (the message is the inflater's)."""


def _inflater() -> tuple[ModuleType, tuple[type[BaseException], ...]]:
    """isal's zlib when installed (same format, faster), else the standard one."""
    try:
        from isal import isal_zlib  # noqa: PLC0415 - optional, looked up once
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (zlib.error, cast(type[BaseException], isal_zlib.error))


_ZLIB, _ZLIB_ERRORS = _inflater()


class Gunzip:
    """The inflated bytes of the gzip stream `raw` (every member); errors are GzipError.

    Each member's header is read here (RFC 1952: the optional extra field,
    name and comment skipped, within HEADER_MAX) and its deflate data
    inflated raw: the member's CRC-32 is not computed, as the layer's
    sha256 (its diff id) is checked against the image config whatever
    happens, and a CRC could only refuse bytes that check refuses anyway
    (the standard zlib's CRC is ~15% of what unpacking a layer costs).
    """

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self._d: Any = None       # the member's inflater; None between members
        self._pending = b""       # input read but not yet given to the inflater
        self._eof = False

    def _more(self) -> bool:
        data = self.raw.read(CHUNK)
        self._pending += data
        return bool(data)

    def _need(self, n: int, what: str) -> None:
        while len(self._pending) < n:
            if not self._more():
                raise GzipError(f"the data ends inside a gzip {what}")

    def _header(self) -> None:
        """Reads a member's header from _pending (which starts with it)."""
        self._need(10, "header")
        head = self._pending
        if head[:2] != _GZIP_MAGIC:
            raise GzipError("not a gzip member after the previous one")
        if head[2] != _DEFLATE:
            raise GzipError(f"unknown compression method {head[2]}")
        flags = head[3]
        if flags & _FRESERVED:
            raise GzipError("unknown header flags set")
        at = 10
        if flags & _FEXTRA:
            self._need(at + 2, "header")
            at += 2 + int.from_bytes(self._pending[at:at + 2], "little")
        for flag in (_FNAME, _FCOMMENT):        # each zero-terminated
            if flags & flag:
                while (end := self._pending.find(b"\0", at)) < 0:
                    if len(self._pending) > HEADER_MAX or not self._more():
                        raise GzipError("a gzip header that does not end")
                at = end + 1
        if flags & _FHCRC:
            at += 2
        self._need(at, "header")
        self._pending = self._pending[at:]
        self._d = _ZLIB.decompressobj(_WBITS_RAW)

    def read(self, n: int = -1) -> bytes:
        n = OUT_MAX if n is None or n < 0 else min(n, OUT_MAX)
        try:
            return self._read(n)
        except _ZLIB_ERRORS as e:
            raise GzipError(str(e)) from None

    def _read(self, n: int) -> bytes:
        while not self._eof and n > 0:
            if self._d is None:
                # Before a member: zero padding, a member, or the end.
                self._pending = self._pending.lstrip(b"\0")
                while not self._pending:
                    data = self.raw.read(CHUNK)
                    if not data:
                        self._eof = True
                        return b""
                    self._pending = data.lstrip(b"\0")
                self._header()
            tail = self._d.unconsumed_tail
            if tail:
                data = tail
            else:
                data, self._pending = self._pending or self.raw.read(CHUNK), b""
            if not data:
                raise GzipError("the data ends inside a gzip member")
            out: bytes = self._d.decompress(data, n)
            if self._d.eof:
                # The trailer (CRC-32 and size: see the class doc) must be there.
                self._pending = self._d.unused_data
                self._need(_TRAILER, "trailer")
                self._pending = self._pending[_TRAILER:]
                self._d = None
            if out:
                return out
        return b""


class Forward:
    """A forward-only file object over `raw` for tarfile's seeking mode; see the module doc.

    `read(n)` returns exactly n bytes unless the stream ends (tarfile needs
    whole headers); `read_some(n)` returns what is at hand, up to n, without
    joining pieces; `seek` skips forward and refuses to go back.
    """

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self._buf = b""
        self._at = 0              # where in _buf the next byte is
        self._pos = 0             # bytes handed out (or skipped) so far

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or pos < self._pos:
            raise io.UnsupportedOperation("a layer stream is read once, front to back")
        while self._pos < pos and self.read_some(min(pos - self._pos, OUT_MAX)):
            pass
        return self._pos

    def read_some(self, n: int) -> bytes:
        """Up to `n` (> 0) bytes, b"" only at the end."""
        left = len(self._buf) - self._at
        if left <= 0:
            # Never more than OUT_MAX asked at once: tarfile asks for a
            # PAX header's whole size, which the archive says.
            data = self.raw.read(min(max(n, CHUNK), OUT_MAX))
            if len(data) > n:
                self._buf, self._at = data, n
                data = data[:n]
            else:
                self._buf, self._at = b"", 0
        elif self._at == 0 and left <= n:
            data, self._buf = self._buf, b""
        else:
            k = min(n, left)
            data = self._buf[self._at:self._at + k]
            self._at += k
        self._pos += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read_some(OUT_MAX), b""))
        parts = []
        while n > 0 and (data := self.read_some(n)):
            parts.append(data)
            n -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)
