"""The layer stream (agent/images/layerstream.py): gzip inflated in large reads, tar read forward.

Each case runs with the standard zlib and, when the `isal` package is
installed, with its inflater: the same bytes and the same refusals.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.images import layerstream  # noqa: E402
from mctl.agent.images.archive import ArchiveError, import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402

try:
    from isal import isal_zlib
except ImportError:
    isal_zlib = None

INFLATERS = ["zlib", pytest.param("isal", marks=pytest.mark.skipif(
    isal_zlib is None, reason="the isal package is not installed"))]


@pytest.fixture(params=INFLATERS)
def inflater(request, monkeypatch):
    if request.param == "zlib":
        monkeypatch.setattr(layerstream, "_ZLIB", zlib)
        monkeypatch.setattr(layerstream, "_ZLIB_ERRORS", (zlib.error,))
    else:
        monkeypatch.setattr(layerstream, "_ZLIB", isal_zlib)
        monkeypatch.setattr(layerstream, "_ZLIB_ERRORS", (zlib.error, isal_zlib.error))
    return request.param


def inflate_all(blob: bytes, n: int = 100_000) -> bytes:
    g = layerstream.Gunzip(io.BytesIO(blob))
    out = []
    while data := g.read(n):
        assert len(data) <= n
        out.append(data)
    return b"".join(out)


def test_every_member_and_the_zero_padding_after_them_are_read(inflater):
    a, b = os.urandom(700_000), b"text " * 300_000
    blob = gzip.compress(a) + b"\0" * 1000 + gzip.compress(b, 9) + b"\0" * 3
    assert inflate_all(blob) == a + b
    # Tiny reads: members end and begin in the middle of them.
    c, d = a[:20_000], b[:9_000]
    assert inflate_all(gzip.compress(c) + gzip.compress(b"") + gzip.compress(d), 3) == c + d


@pytest.mark.parametrize("blob", [
    gzip.compress(b"x" * 100_000)[:-6],                       # the trailer cut short
    gzip.compress(b"x" * 100_000)[:40],                       # inside the data
    gzip.compress(b"abc") + b"garbage",                       # not a member after one
    gzip.compress(b"abc") + b"\0\0\x1f",                      # half a magic number
    b"\x1f\x8b\x08\x00" + os.urandom(200),                    # a header, then noise
    gzip.compress(b"abc")[:-3],                               # inside the trailer
    b"\x1f\x8b\x09" + gzip.compress(b"abc")[3:],                # not deflate
    b"\x1f\x8b\x08\x20" + gzip.compress(b"abc")[4:],            # a reserved flag
    b"\x1f\x8b\x08\x08" + b"\0" * 6 + b"n" * (70 << 10),        # a name without end
])
def test_corrupt_or_truncated_gzip_is_refused(inflater, blob):
    with pytest.raises(layerstream.GzipError):
        inflate_all(blob)


def member(data: bytes, flags: int, fields: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return (b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff" + fields
            + z.compress(data) + z.flush()
            + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))


def test_the_optional_header_fields_are_skipped(inflater):
    data = os.urandom(5000) + b"z" * 5000
    fields = b"\x03\x00abc" + b"name.tar\0" + b"a comment\0" + b"\x12\x34"
    blob = member(data, 0x04 | 0x08 | 0x10 | 0x02, fields) + member(b"more", 0x08, b"n\0")
    assert inflate_all(blob) == data + b"more"
    assert inflate_all(blob, 7) == data + b"more"


def test_the_crc_is_left_to_the_diff_id(inflater, tmp_path, monkeypatch):
    # A wrong CRC over the right bytes harms nothing; wrong bytes (here in a
    # stored block, which inflates whatever it holds) fail the diff id.
    tar = ib.layer_tar([ib.file("a", b"x" * 4000)])
    good = gzip.compress(tar, 0)
    assert inflate_all(good[:-8] + b"\0" * 4 + good[-4:]) == tar

    def altered(data: bytes) -> bytes:
        blob = bytearray(gzip.compress(data, 0))
        blob[len(blob) // 2] ^= 0xFF
        return bytes(blob)
    monkeypatch.setattr(ib, "gz", altered)
    with pytest.raises(ArchiveError, match="diff id mismatch"):
        import_one(tmp_path, tar)
    assert os.listdir(tmp_path / "store" / "layers") == []


def test_a_gzip_bomb_is_inflated_a_bounded_piece_at_a_time(inflater):
    g = layerstream.Gunzip(io.BytesIO(gzip.compress(b"\0" * (16 << 20), 9)))
    sizes = [len(g.read(1 << 30)) for _ in range(3)]
    assert 0 < max(sizes) <= layerstream.OUT_MAX


def test_forward_reads_exactly_skips_forward_and_never_goes_back():
    data = os.urandom(3 * layerstream.CHUNK + 123)

    class Pieces:
        """Hands out odd-sized pieces, as a decompressor does."""
        def __init__(self) -> None:
            self.at = 0

        def read(self, n: int = -1) -> bytes:
            piece = data[self.at:self.at + min(n, 77_777)]
            self.at += len(piece)
            return piece
    f = layerstream.Forward(Pieces())
    assert f.read(512) == data[:512] and f.tell() == 512
    some = f.read_some(1 << 20)
    assert some == data[512:512 + len(some)] and 0 < len(some) <= 77_777
    f.seek(300_000)
    assert f.read(200_000) == data[300_000:500_000]
    with pytest.raises(io.UnsupportedOperation):
        f.seek(10)
    assert f.read() == data[500_000:] and f.read(1) == b"" and f.read_some(5) == b""


def import_one(tmp_path: Path, tar: bytes) -> Path:
    """Imports an OCI layout of one gzip layer; the unpacked layer's directory."""
    store = ImageStore(str(tmp_path / "store"))
    spec = ib.ImageSpec(layers=[tar], name="x/y:1", gzip_layers=[True])
    import_archive(store, ib.write_dir(ib.oci_layout([spec]), str(tmp_path / "l")),
                   name="x/y:1")
    (diff_id,) = store.get("x/y:1").layers
    assert diff_id == ib.sha(tar)
    return Path(store.layer_path(diff_id))


def test_a_layer_round_trips_through_chunk_boundaries(inflater, tmp_path, monkeypatch):
    files = {f"d/small-{i}": os.urandom(i * 37) for i in range(200)}
    files["d/big"] = os.urandom(3 * layerstream.CHUNK + 5)
    files["d/" + "long-name-" * 20] = b"a PAX or GNU long name"
    tar = ib.layer_tar([ib.directory("d")] + [ib.file(n, d) for n, d in files.items()])
    # Two gzip members and zero padding: valid gzip, as some writers make it.
    monkeypatch.setattr(ib, "gz", lambda data: gzip.compress(data[:len(data) // 2])
                        + gzip.compress(data[len(data) // 2:]) + b"\0" * 64)
    root = import_one(tmp_path, tar)
    for name, data in files.items():
        assert (root / name).read_bytes() == data


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_a_sparse_member_is_unpacked_with_its_holes(inflater, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(5 << 20)
        f.write(b"tail")
    tar = subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(src), "-cf", "-",
                          "sparse"], check=True, capture_output=True).stdout
    data = (import_one(tmp_path, tar) / "sparse").read_bytes()
    assert data == b"head" + b"\0" * ((5 << 20) - 4) + b"tail"


def test_a_layer_cut_inside_a_file_is_refused(inflater, tmp_path, monkeypatch):
    tar = ib.layer_tar([ib.file("a", b"x" * 2000), ib.file("b", os.urandom(1 << 20))])

    def cut(data: bytes) -> bytes:
        # Flushed, not finished: a valid gzip start that ends half-way through "b".
        z = zlib.compressobj(wbits=31)
        return z.compress(data[:len(data) // 2]) + z.flush(zlib.Z_SYNC_FLUSH)
    monkeypatch.setattr(ib, "gz", cut)
    with pytest.raises(ArchiveError, match="corrupt gzip data") as e:
        import_one(tmp_path, tar)
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path / "store" / "layers") == []


@pytest.mark.parametrize("compressed", [False, True])
def test_a_pax_header_claiming_gigabytes_is_not_read_into_memory_at_once(
        inflater, tmp_path, monkeypatch, compressed):
    # tarfile asks for a PAX header's whole claimed size in one read: the
    # stream hands it over a bounded piece at a time, as far as there is data.
    asked: list[int] = []
    real_init = layerstream.Forward.__init__

    class Recorder:
        def __init__(self, raw) -> None:
            self.raw = raw

        def read(self, n: int = -1) -> bytes:
            asked.append(n)
            return self.raw.read(n)
    monkeypatch.setattr(layerstream.Forward, "__init__",
                        lambda self, raw: real_init(self, Recorder(raw)))
    tar = ib.raw_member_tar("x", tarfile.XHDTYPE, 7 << 30, b"9 a=b\n" * 10)
    spec = ib.ImageSpec(layers=[tar], name="x/y:1", gzip_layers=[compressed])
    store = ImageStore(str(tmp_path / "store"))
    with pytest.raises(ArchiveError, match="layer 1 of 1") as e:
        import_archive(store, ib.write_dir(ib.oci_layout([spec]), str(tmp_path / "l")),
                       name="x/y:1")
    assert "\n" not in str(e.value)
    assert asked and max(asked) <= layerstream.OUT_MAX
