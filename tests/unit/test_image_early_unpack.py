"""Layers unpacked as a registry client lands their blobs (agent/images/early.py).

skopeo is played here: blobs are written under a temporary name and renamed
into `blobs/sha256/`, as skopeo's OCI destination does; the import then
takes what was unpacked. Every check of a plain import must still hold.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.images import early as early_mod  # noqa: E402
from mctl.agent.images.archive import ArchiveError, Limits, import_archive  # noqa: E402
from mctl.agent.images.early import EarlyUnpacker  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402

BASE = ib.layer_tar([ib.directory("etc"), ib.file("etc/motd", "base\n")])
TOP = ib.layer_tar([ib.directory("app"), ib.file("app/top.txt", "top\n")])


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "store"))


def files_of(layers: list[bytes], **kw) -> dict[str, bytes]:
    return ib.oci_layout([ib.ImageSpec(layers=layers, name="team/app:1",
                                       gzip_layers=[True] * len(layers), **kw)])


def land(layout: Path, files: dict[str, bytes], only: set[str] | None = None) -> None:
    """Writes `files` into the layout as skopeo does: a temporary name, then a rename."""
    layout.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if only is not None and name not in only:
            continue
        tmp = layout / f"oci-put-blob-{os.getpid()}"
        tmp.write_bytes(data)
        (layout / name).parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, layout / name)


def blob_names(files: dict[str, bytes]) -> set[str]:
    return {n for n in files if n.startswith("blobs/")}


def leftovers(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.layers_dir)) + sorted(os.listdir(store.images_dir))


def start(layout: Path, store: ImageStore, limits: Limits | None = None) -> EarlyUnpacker:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    early = EarlyUnpacker(str(layout), store.layers_dir, "team/app:1", limits or Limits())
    early.start()
    return early


def test_layers_landed_are_unpacked_before_the_fetch_ends_and_taken(store, tmp_path, caplog):
    files = files_of([BASE, TOP])
    layout = tmp_path / "layout"
    early = start(layout, store)
    try:
        with caplog.at_level(logging.INFO, logger="mctl.agent.images"):
            land(layout, files, only=blob_names(files))
            deadline = time.monotonic() + 10
            while len([r for r in caplog.records if "while pulling" in r.getMessage()]) < 2:
                assert time.monotonic() < deadline, "the landed layers were not unpacked"
                time.sleep(0.01)
            land(layout, files)         # index.json, oci-layout: the end of the copy
            early.fetched()
            result = import_archive(store, str(layout), name="team/app:1",
                                    blobs_verified=True, early=early)
    finally:
        early.close()
    assert result.layers_new == 2
    assert not [r for r in caplog.records if r.getMessage().startswith("layer unpacked archive")]
    image = store.get("team/app:1")
    assert (Path(store.layer_path(image.layers[1])) / "app" / "top.txt").read_text() == "top\n"
    assert [e for e in os.listdir(store.layers_dir) if e.startswith(".")] == []


def test_blobs_present_at_the_start_are_seeded_and_not_unpacked(store, tmp_path):
    files = files_of([BASE])
    layout = tmp_path / "layout"
    land(layout, files, only=blob_names(files))
    early = start(layout, store)
    try:
        early.fetched()
        assert early._jobs == []
    finally:
        early.close()


def test_a_config_that_disagrees_with_an_early_layer_is_refused_and_leaves_nothing(
        store, tmp_path):
    files = files_of([BASE, TOP], extra_config={"rootfs": {
        "type": "layers", "diff_ids": [ib.sha(BASE), ib.sha(BASE + b"\0" * 512)]}})
    layout = tmp_path / "layout"
    early = start(layout, store)
    try:
        land(layout, files)
        early.fetched()
        with pytest.raises(ArchiveError, match="layer 2 of 2 .*diff id mismatch"):
            import_archive(store, str(layout), name="team/app:1", blobs_verified=True,
                           early=early)
    finally:
        early.close()
    assert leftovers(store) == []


def test_a_failed_blob_the_manifest_does_not_name_is_ignored(store, tmp_path):
    files = files_of([BASE])
    layout = tmp_path / "layout"
    early = start(layout, store)
    try:
        stray = ib.gz(b"not a tar at all" * 100)
        land(layout, {**files, f"blobs/sha256/{ib.sha(stray)[7:]}": stray})
        early.fetched()
        import_archive(store, str(layout), name="team/app:1", blobs_verified=True, early=early)
    finally:
        early.close()
    assert store.get("team/app:1").layers == (ib.sha(BASE),)


def test_the_limits_hold_for_early_layers(store, tmp_path):
    big = ib.layer_tar([ib.file("zeros", b"\0" * (2 << 20))])
    files = files_of([big])
    layout = tmp_path / "layout"
    early = start(layout, store, Limits(max_unpacked_bytes=1 << 20))
    try:
        land(layout, files)
        early.fetched()
        with pytest.raises(ArchiveError, match="more than 1048576 bytes uncompressed"):
            import_archive(store, str(layout), name="team/app:1", blobs_verified=True,
                           limits=Limits(max_unpacked_bytes=1 << 20), early=early)
    finally:
        early.close()
    assert leftovers(store) == []


def test_close_stops_an_unpacking_in_progress_and_removes_its_staging(store, tmp_path):
    # Many small files: slow enough to be caught in the middle.
    many = ib.layer_tar([ib.file(f"f{i}", b"x" * 100) for i in range(20000)])
    files = files_of([many])
    layout = tmp_path / "layout"
    early = start(layout, store)
    land(layout, files, only=blob_names(files))
    deadline = time.monotonic() + 10
    while not any(os.scandir(early.staging)):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    t0 = time.monotonic()
    early.close()
    assert time.monotonic() - t0 < 5
    # Stopped, not finished: no layer came out of it.
    assert early._jobs and all(j.exception() is not None or j.result() is None
                               for j in early._jobs)
    assert leftovers(store) == []


def test_blobs_beyond_the_bound_are_left_to_the_import(store, tmp_path, monkeypatch):
    monkeypatch.setattr(early_mod, "MAX_BLOBS", 1)
    files = files_of([BASE, TOP])
    layout = tmp_path / "layout"
    early = start(layout, store)
    try:
        land(layout, files)
        early.fetched()
        assert len(early._jobs) == 1
        result = import_archive(store, str(layout), name="team/app:1", blobs_verified=True,
                                early=early)
    finally:
        early.close()
    assert result.layers_new == 2


def test_what_is_not_a_layer_is_not_unpacked(tmp_path):
    doc = tmp_path / "config"
    doc.write_bytes(json.dumps({"architecture": "amd64"}).encode())
    tar = tmp_path / "tar"
    tar.write_bytes(BASE)
    gz = tmp_path / "gz"
    gz.write_bytes(ib.gz(BASE))
    assert [early_mod.looks_like_layer(p.read_bytes()[:300]) for p in (doc, tar, gz)] \
        == [False, True, True]


def write_slowly(layout: Path, name: str, data: bytes, pieces: int = 8,
                 remove: bool = False) -> str:
    """As skopeo fetching from a slow registry: the temporary file grows, then is renamed."""
    tmp = layout / "oci-put-blob-slow"
    with open(tmp, "wb") as f:
        step = len(data) // pieces + 1
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(0.03)
    if remove:
        os.unlink(tmp)
    else:
        os.rename(tmp, layout / name)
    return name


def test_a_blob_is_unpacked_while_it_is_being_written(store, tmp_path, caplog):
    files = files_of([BASE, TOP])
    layout = tmp_path / "layout"
    early = start(layout, store)
    top_blob = f"blobs/sha256/{ib.sha(ib.gz(TOP))[7:]}"
    try:
        with caplog.at_level(logging.INFO, logger="mctl.agent.images"):
            write_slowly(layout, top_blob, files[top_blob])
            land(layout, files, only=set(files) - {top_blob})
            early.fetched()
            result = import_archive(store, str(layout), name="team/app:1",
                                    blobs_verified=True, early=early)
    finally:
        early.close()
    assert result.layers_new == 2
    # Read from the temporary file, as it grew: not from its final name.
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"blob=oci-put-blob-slow diff_id={ib.sha(TOP)}" in logged
    assert "layer unpacked archive" not in logged
    image = store.get("team/app:1")
    assert (Path(store.layer_path(image.layers[1])) / "app" / "top.txt").read_text() == "top\n"


def test_a_blob_the_writer_abandons_gives_nothing(store, tmp_path):
    files = files_of([TOP])
    layout = tmp_path / "layout"
    early = start(layout, store)
    top_blob = f"blobs/sha256/{ib.sha(ib.gz(TOP))[7:]}"
    try:
        write_slowly(layout, top_blob, files[top_blob], remove=True)
        early.fetched()
        layer = early_mod.LayerRef(path=top_blob, where="", diff_id=None,
                                   blob_digest=ib.sha(ib.gz(TOP)), blob_size=None)
        assert early.take(layer) is None
    finally:
        early.close()
    assert leftovers(store) == []


def test_a_file_not_renamed_into_the_blobs_is_not_taken(store, tmp_path):
    layout = tmp_path / "layout"
    early = start(layout, store)
    try:
        write_slowly(layout, "elsewhere", ib.gz(TOP))
        early.fetched()
        layer = early_mod.LayerRef(path="elsewhere", where="", diff_id=None,
                                   blob_digest=ib.sha(ib.gz(TOP)), blob_size=None)
        assert early.take(layer) is None
        assert early._jobs and all(j.result() is None for j in early._jobs)
    finally:
        early.close()
    assert leftovers(store) == []
