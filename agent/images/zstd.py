"""Reading zstd-compressed layers (`application/vnd.oci.image.layer.v1.tar+zstd`).

Python 3.11's standard library has no zstd, so the `zstandard` package
(PyPI, bindings to the reference libzstd) reads them. It is imported the
first time a zstd layer is met, not when the agent starts: most images are
gzip, and the import costs ~7 ms and ~1 MiB that those never pay. A node
without the package refuses zstd layers with one line saying what to
install, as it did before it could read them.

A layer may be several zstd frames one after another (skopeo's
`zstd:chunked` writes many, with skippable frames of metadata between
them): all are read. The decoder keeps a window of history whose size the
frame header asks for; a hostile header could ask for gigabytes, so the
window is bounded by what `zstd -d` itself accepts without `--long`.

zstd stops quietly at a truncated or (without a frame checksum) altered
frame; that is not a hole: the uncompressed stream is hashed and checked
against the config's diff id, as a gzip layer's is.
"""

from __future__ import annotations

from typing import Any, BinaryIO

# libzstd's default limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27): every frame
# written without --long fits; each layer read at once may hold this much.
MAX_WINDOW_BYTES = 1 << 27


class ZstdError(ValueError):
    """The compressed data is not valid zstd (the message is libzstd's)."""


class ZstdUnavailable(Exception):
    """The node lacks the `zstandard` package; the message says what to install."""


class _Reader:
    """A file object over the decompressed bytes whose errors are ZstdError."""

    def __init__(self, inner: Any, error: type[Exception]) -> None:
        self._inner = inner
        self._error = error

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._inner.read(n)
        except self._error as e:
            raise ZstdError(str(e)) from None
        return data

    def close(self) -> None:
        self._inner.close()


def reader(compressed: BinaryIO) -> _Reader:
    """The decompressed stream of `compressed` (every frame); raises ZstdUnavailable."""
    try:
        import zstandard  # noqa: PLC0415 - lazily: only zstd layers pay for it
    except ImportError:
        raise ZstdUnavailable("zstd-compressed layers need the Python package zstandard "
                              "on the node (pip install zstandard), or copy the image "
                              "with gzip layers (skopeo copy --dest-compress-format gzip)"
                              ) from None
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
    return _Reader(decompressor.stream_reader(compressed, read_across_frames=True,
                                              closefd=False), zstandard.ZstdError)
