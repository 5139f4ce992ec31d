"""A directory layout's layers unpacked by threads at once (a pull's path): every check holds.

The hostile-layer cases of test_image_archive.py, the node's limits summed
over layers unpacked concurrently, and what `blobs_verified` (skopeo checked
the blobs) does and does not leave out.
"""

from __future__ import annotations

import gzip
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set
from test_image_archive import LAYER_CASES, leftovers, manifest_fix  # noqa: E402

from mctl.agent.images import archive as imagearchive  # noqa: E402
from mctl.agent.images.archive import ArchiveError, Limits, import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "store"))


def layout(tmp_path: Path, layers: list[bytes], gzip_layers: bool = True,
           name: str = "x/y:1") -> dict[str, bytes]:
    return ib.oci_layout([ib.ImageSpec(layers=layers, name=name,
                                       gzip_layers=[gzip_layers] * len(layers))])


def test_layers_are_unpacked_by_threads_of_their_own(store, tmp_path, monkeypatch):
    threads: set[str] = set()
    real = imagearchive.unpack_layer

    def spy(*args, **kw):
        threads.add(threading.current_thread().name)
        return real(*args, **kw)
    monkeypatch.setattr(imagearchive, "unpack_layer", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    layers = [ib.layer_tar([ib.file(f"f{i}", os.urandom(64 << 10))]) for i in range(4)]
    path = ib.write_dir(layout(tmp_path, layers), str(tmp_path / "l"))
    result = import_archive(store, path, name="x/y:1")
    assert result.layers_new == 4 and len(store.get("x/y:1").layers) == 4
    assert len(threads) > 1 and all(t.startswith("unpack") for t in threads)
    for i, digest in enumerate(store.get("x/y:1").layers):
        assert (Path(store.layer_path(digest)) / f"f{i}").stat().st_size == 64 << 10
    # A tar's members share its file position: one layer after the other there.
    threads.clear()
    import_archive(ImageStore(str(tmp_path / "s2")),
                   ib.write_tar(layout(tmp_path, layers), str(tmp_path / "l.tar")))
    assert threads == {threading.current_thread().name}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_hostile_layers_of_a_directory_are_refused_and_leave_nothing(store, tmp_path, case):
    entries, message = LAYER_CASES[case]
    good = ib.layer_tar([ib.file("fine", "a good layer, staged then thrown away")])
    files = ib.oci_layout([ib.ImageSpec(layers=[good, ib.layer_tar(entries), good + b""],
                                        name="x/y:1")])
    path = ib.write_dir(files, str(tmp_path / "evil"))
    for blobs_verified in (False, True):
        with pytest.raises(ArchiveError) as e:
            import_archive(store, path, label="evil", blobs_verified=blobs_verified)
        assert str(e.value).startswith("evil: index.json manifest 1: layer 2 of 3"), e.value
        assert message in str(e.value)
        assert leftovers(store) == []


def test_limits_hold_for_the_sum_of_layers_unpacked_at_once(store, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    layers = [ib.layer_tar([ib.file(f"d{i}/f{j}", b"x" * 1000) for j in range(8)])
              for i in range(4)]
    path = ib.write_dir(layout(tmp_path, layers), str(tmp_path / "l"))
    one = len(layers[0])
    # Each layer alone is within the limit; the four together are not.
    with pytest.raises(ArchiveError, match=f"more than {3 * one} bytes uncompressed"):
        import_archive(store, path, limits=Limits(max_unpacked_bytes=3 * one))
    with pytest.raises(ArchiveError, match="more than 30 members"):
        import_archive(store, path, limits=Limits(max_members=30))
    assert leftovers(store) == []
    assert import_archive(store, path, limits=Limits(max_members=40)).layers_new == 4


def test_blobs_verified_skips_only_the_blob_digest_never_the_diff_id(store, tmp_path):
    tar = ib.layer_tar([ib.file("a", "content\n")])
    files = layout(tmp_path, [tar])
    # The gzip header's mtime changed: a blob of the descriptor's size that
    # does not match its digest, whose content matches the config's diff id.
    blob = ib.gz(tar)
    other = blob[:4] + b"\x39\x30\x00\x00" + blob[8:]
    assert other != blob and gzip.decompress(other) == tar
    files["blobs/sha256/" + ib.sha(blob)[7:]] = other
    path = ib.write_dir(files, str(tmp_path / "l"))
    with pytest.raises(ArchiveError, match="digest mismatch"):
        import_archive(store, path)
    assert import_archive(store, path, name="x/y:1", blobs_verified=True).layers_new == 1
    # Content that is not what the config says is refused either way.
    bad = layout(tmp_path, [tar])
    manifest_fix(bad, layer=0, data=ib.gz(ib.layer_tar([ib.file("a", "changed\n")])))
    bad_path = ib.write_dir(bad, str(tmp_path / "bad"))
    for blobs_verified in (False, True):
        with pytest.raises(ArchiveError, match="diff id mismatch"):
            import_archive(ImageStore(str(tmp_path / "s3")), bad_path,
                           blobs_verified=blobs_verified)
