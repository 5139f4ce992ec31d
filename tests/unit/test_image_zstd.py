"""zstd-compressed layers (agent/images/zstd.py): imported like gzip ones, with the same checks.

Layers are compressed here with the `zstandard` package (what the agent
reads them with); a node without it must refuse them in one line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.images.archive import ArchiveError, Limits, import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402

zstandard = pytest.importorskip("zstandard")

TOP = ib.layer_tar([ib.directory("app"), ib.file("app/hello.txt", "hello from zstd\n"),
                    ib.file("app/noise", os.urandom(200 << 10))])
BASE = ib.layer_tar([ib.directory("etc"), ib.file("etc/motd", "gzip base\n")])


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "store"))


def leftovers(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.layers_dir)) + sorted(os.listdir(store.images_dir))


def layout(tmp_path: Path, top: bytes | None = None) -> str:
    """An OCI layout: a gzip base layer under a zstd one (or `top`, a blob, labelled zstd)."""
    files = ib.oci_layout([ib.ImageSpec(layers=[BASE, TOP], name="team/zstd:1",
                                        gzip_layers=[True, False], zstd_layers=[False, True])])
    if top is not None:
        index = json.loads(files["index.json"])
        old = index["manifests"][0]["digest"]
        manifest = json.loads(files.pop("blobs/sha256/" + old[7:]))
        manifest["layers"][1].update(digest=ib.sha(top), size=len(top))
        files["blobs/sha256/" + ib.sha(top)[7:]] = top
        body = json.dumps(manifest).encode()
        files["blobs/sha256/" + ib.sha(body)[7:]] = body
        index["manifests"][0].update(digest=ib.sha(body), size=len(body))
        files["index.json"] = json.dumps(index).encode()
    return ib.write_dir(files, str(tmp_path / "layout"))


def test_a_zstd_layer_is_unpacked_and_named_by_its_uncompressed_digest(store, tmp_path):
    result = import_archive(store, layout(tmp_path))
    image = store.get("team/zstd:1")
    assert image.layers == (ib.sha(BASE), ib.sha(TOP)) and result.layers_new == 2
    top = Path(store.layer_path(image.layers[1]))
    assert (top / "app" / "hello.txt").read_text() == "hello from zstd\n"
    assert (top / "app" / "noise").stat().st_size == 200 << 10


def test_several_zstd_frames_are_one_layer(store, tmp_path):
    # zstd:chunked and concatenated streams: every frame is the layer's.
    half = len(TOP) // 2
    c = zstandard.ZstdCompressor()
    import_archive(store, layout(tmp_path, c.compress(TOP[:half]) + c.compress(TOP[half:])))
    top = Path(store.layer_path(store.get("team/zstd:1").layers[1]))
    assert (top / "app" / "hello.txt").read_text() == "hello from zstd\n"


@pytest.mark.parametrize("blob, message", [
    # A frame header, then garbage: libzstd's own error.
    (b"\x28\xb5\x2f\xfd" + b"\x00" * 6 + os.urandom(64), "corrupt zstd data"),
    # Cut short inside a file, and before a last frame holding only the
    # tar's end padding: zstd stops quietly; the tar reader, then the diff
    # id, do not.
    (ib.zst(TOP)[: len(ib.zst(TOP)) // 2], "member 'app/noise': the tar stream ends inside"),
    (ib.zst(TOP[:-1024]), "diff id mismatch"),
    # A frame too many.
    (ib.zst(TOP) + ib.zst(b"\0" * 512), "diff id mismatch"),
])
def test_a_bad_zstd_layer_is_refused_and_leaves_nothing(store, tmp_path, blob, message):
    with pytest.raises(ArchiveError, match=message) as e:
        import_archive(store, layout(tmp_path, blob))
    assert "layer 2 of 2" in str(e.value) and "\n" not in str(e.value)
    assert leftovers(store) == []


def test_a_zstd_bomb_stops_at_the_unpacked_limit(store, tmp_path):
    bomb = ib.layer_tar([ib.file("zeros", b"\0" * (8 << 20))])
    with pytest.raises(ArchiveError, match="more than 1048576 bytes uncompressed"):
        import_archive(store, layout(tmp_path, ib.zst(bomb)),
                       limits=Limits(max_unpacked_bytes=1 << 20))
    assert leftovers(store) == []


def test_a_window_over_the_bound_is_refused(store, tmp_path, monkeypatch):
    from mctl.agent.images import zstd
    monkeypatch.setattr(zstd, "MAX_WINDOW_BYTES", 1 << 20)
    params = zstandard.ZstdCompressionParameters(window_log=24, compression_level=3)
    blob = zstandard.ZstdCompressor(compression_params=params).compress(
        TOP + b"\0" * (16 << 20))
    with pytest.raises(ArchiveError, match="corrupt zstd data: .*too much memory"):
        import_archive(store, layout(tmp_path, blob))
    assert leftovers(store) == []


def test_without_the_package_a_zstd_layer_is_refused_in_one_line(store, tmp_path, monkeypatch):
    path = layout(tmp_path)
    monkeypatch.setitem(sys.modules, "zstandard", None)     # import raises ImportError
    with pytest.raises(ArchiveError, match="need the Python package zstandard") as e:
        import_archive(store, path)
    assert "layer 2 of 2" in str(e.value) and "\n" not in str(e.value)
    assert leftovers(store) == []
