"""Image import: docker save and OCI layouts built in memory, unpacked into a real store.

Whiteouts (character devices 0/0), ownership and the overlay's opaque xattr
need root, as the agent has; those tests skip without it. Every refused
archive must leave the store exactly as empty as it was.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.images import archive as imagearchive  # noqa: E402
from mctl.agent.images import manifests as imagemanifests
from mctl.agent.images.archive import ArchiveError, Limits, import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and chown need root")

BASE = [
    ib.directory("etc"),
    ib.file("etc/motd", "hello from the base\n"),
    ib.directory("app", mode=0o750, uid=1000, gid=1000),
    ib.file("app/gone.txt", "deleted by the top layer\n"),
    ib.directory("cache"),
    ib.file("cache/old", "hidden by the opaque dir\n"),
    ib.file("bin/tool", "#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
    ib.hardlink("bin/tool-again", "bin/tool"),
    ib.symlink("bin/sh", "/bin/tool"),
    ib.symlink("etc/motd-link", "motd"),
    ib.Entry("run/fifo", "fifo", mode=0o600),
]
TOP = [
    ib.whiteout("app/gone.txt"),
    ib.opaque("cache"),
    ib.file("cache/new", "top\n"),
    ib.file("app/data.txt", "data\n", uid=1000, gid=1000, mode=0o640),
]


def image(**kw) -> ib.ImageSpec:
    defaults = dict(layers=[ib.layer_tar(BASE), ib.layer_tar(TOP)], name="team/app:1.0",
                    entrypoint=["/bin/tool"], cmd=["--serve"], env=["PATH=/bin", "MODE=test"],
                    working_dir="/app", user="1000:1000")
    defaults.update(kw)
    return ib.ImageSpec(**defaults)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "store"))


def leftovers(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.layers_dir)) + sorted(os.listdir(store.images_dir))


def layer_dirs(store: ImageStore, name: str) -> list[Path]:
    return [Path(store.layer_path(d)) for d in store.get(name).layers]


# -- the two formats ------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("fmt", ["oci-tar", "oci-dir", "docker-tar", "docker-blobs-dir",
                                 "docker-tar-gz"])
def test_each_format_gives_the_same_image(store, tmp_path, fmt):
    spec = image(gzip_layers=[True, False])
    if fmt.startswith("oci"):
        files = ib.oci_layout([spec])
    else:
        files = ib.docker_archive([spec], blobs_layout="blobs" in fmt)
    path = (ib.write_dir(files, str(tmp_path / "in")) if fmt.endswith("dir")
            else ib.write_tar(files, str(tmp_path / "in.tar"), compress=fmt.endswith("gz")))
    result = import_archive(store, path, label="in.tar")
    assert [i.name for i in result.images] == ["team/app:1.0"]
    img = store.get("team/app:1.0")
    assert img.layers == (ib.sha(spec.layers[0]), ib.sha(spec.layers[1]))
    assert img.entrypoint == ("/bin/tool",)
    assert img.cmd == ("--serve",)
    assert img.env == ("PATH=/bin", "MODE=test")
    assert img.working_dir == "/app"
    assert img.user == "1000:1000"
    assert img.created_unix_ms == 1714979289123      # 2024-05-06T07:08:09.123Z
    assert result.layers_new == 2 and result.layers_present == 0
    assert not [e for e in os.listdir(store.layers_dir) if e.startswith(".tmp")]


@needs_root
def test_layer_contents_modes_owners_and_links(store, tmp_path):
    import_archive(store, ib.write_tar(ib.oci_layout([image()]), str(tmp_path / "a.tar")))
    base, top = layer_dirs(store, "team/app:1.0")
    tool = os.lstat(base / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755               # setuid kept after chown
    assert os.lstat(base / "bin/tool-again").st_ino == tool.st_ino   # a hard link
    assert tool.st_nlink == 2
    assert os.readlink(base / "bin/sh") == "/bin/tool"
    assert os.readlink(base / "etc/motd-link") == "motd"
    app = os.lstat(base / "app")
    assert (stat.S_IMODE(app.st_mode), app.st_uid, app.st_gid) == (0o750, 1000, 1000)
    assert app.st_mtime == 1_700_000_000
    assert stat.S_ISFIFO(os.lstat(base / "run/fifo").st_mode)
    assert (base / "etc/motd").read_text() == "hello from the base\n"
    data = os.lstat(top / "app/data.txt")
    assert (stat.S_IMODE(data.st_mode), data.st_uid) == (0o640, 1000)


@needs_root
def test_whiteouts_become_overlay_whiteouts_and_opaque_dirs(store, tmp_path):
    import_archive(store, ib.write_tar(ib.oci_layout([image()]), str(tmp_path / "a.tar")))
    _, top = layer_dirs(store, "team/app:1.0")
    gone = os.lstat(top / "app/gone.txt")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert not (top / "app/.wh.gone.txt").exists()
    assert os.getxattr(top / "cache", "trusted.overlay.opaque") == b"y"
    assert not (top / "cache/.wh..wh..opq").exists()
    assert (top / "cache/new").read_text() == "top\n"
    with pytest.raises(OSError):
        os.getxattr(top / "app", "trusted.overlay.opaque")


@needs_root
def test_whiteout_and_entry_of_the_same_layer(store, tmp_path):
    # Either order: the layer's own file wins over its whiteout; a whited-out
    # dir that the layer also has becomes opaque (the lower contents go).
    layer = ib.layer_tar([ib.whiteout("a"), ib.file("a", "mine"), ib.directory("d"),
                          ib.file("d/x", "x"), ib.whiteout("d"), ib.whiteout("e"),
                          ib.file("e/y", "y")])
    spec = ib.ImageSpec(layers=[layer], name="t/same:1")
    import_archive(store, ib.write_tar(ib.oci_layout([spec]), str(tmp_path / "a.tar")))
    (top,) = layer_dirs(store, "t/same:1")
    assert (top / "a").read_text() == "mine"
    assert (top / "d/x").read_text() == "x"
    assert os.getxattr(top / "d", "trusted.overlay.opaque") == b"y"
    assert (top / "e/y").read_text() == "y"
    assert os.getxattr(top / "e", "trusted.overlay.opaque") == b"y"


@needs_root
def test_device_nodes_are_skipped_with_a_warning(store, tmp_path):
    layer = ib.layer_tar([ib.file("ok", "1"), ib.Entry("dev/sda", "blk"),
                          ib.Entry("dev/console", "chr")])
    spec = ib.ImageSpec(layers=[layer], name="t/dev:1")
    result = import_archive(store, ib.write_tar(ib.oci_layout([spec]), str(tmp_path / "a.tar")))
    (top,) = layer_dirs(store, "t/dev:1")
    assert not (top / "dev/sda").exists() and not (top / "dev/console").exists()
    assert (top / "ok").read_text() == "1"
    assert len(result.warnings) == 2
    assert "dev/sda (block device 8:0)" in result.warnings[0]


@needs_root
def test_duplicate_members_the_last_one_wins(store, tmp_path):
    layer = ib.layer_tar([ib.file("x", "first"), ib.file("x", "second"), ib.directory("y"),
                          ib.file("y/in", "1"), ib.file("y", "now a file"),
                          ib.symlink("z", "x"), ib.file("z", "no longer a link")])
    spec = ib.ImageSpec(layers=[layer], name="t/dup:1")
    import_archive(store, ib.write_tar(ib.oci_layout([spec]), str(tmp_path / "a.tar")))
    (top,) = layer_dirs(store, "t/dup:1")
    assert (top / "x").read_text() == "second"
    assert (top / "y").read_text() == "now a file"
    assert not (top / "z").is_symlink()


@needs_root
def test_reimport_reuses_layers_and_a_layer_listed_twice_is_stacked_once(store, tmp_path):
    empty = ib.layer_tar([])
    spec = ib.ImageSpec(layers=[empty, ib.layer_tar(BASE), empty], name="t/twice:1")
    path = ib.write_tar(ib.docker_archive([spec]), str(tmp_path / "a.tar"))
    first = import_archive(store, path)
    assert first.layers_new == 2
    assert store.get("t/twice:1").layers == (ib.sha(ib.layer_tar(BASE)), ib.sha(empty))
    again = import_archive(store, path, name="t/other")
    assert (again.layers_new, again.layers_present) == (0, 2)
    assert store.get("t/other:latest").layers == store.get("t/twice:1").layers


# -- names ------------------------------------------------------------------------------------


@needs_root
def test_name_option_overrides_the_archive_name(store, tmp_path):
    path = ib.write_tar(ib.docker_archive([image()]), str(tmp_path / "a.tar"))
    result = import_archive(store, path, name="mine/app")
    assert [i.name for i in result.images] == ["mine/app:latest"]
    assert [i.name for i in store.list()] == ["mine/app:latest"]


@needs_root
def test_docker_save_of_two_images_imports_both(store, tmp_path):
    path = ib.write_tar(ib.docker_archive([image(name="a/one:1"), image(name="a/two:2")]),
                        str(tmp_path / "a.tar"))
    result = import_archive(store, path)
    assert sorted(i.name for i in result.images) == ["a/one:1", "a/two:2"]
    assert result.layers_new == 2
    with pytest.raises(ArchiveError, match="holds 2 images; --name can name only one"):
        import_archive(store, path, name="x")


def test_a_tag_only_ref_name_needs_a_name(store, tmp_path):
    path = ib.write_tar(ib.oci_layout([image(name="latest")]), str(tmp_path / "a.tar"))
    with pytest.raises(ArchiveError, match=r"named only by the tag 'latest'.*--name"):
        import_archive(store, path, label="a.tar")
    assert leftovers(store) == []


def test_an_unnamed_image_needs_a_name(store, tmp_path):
    path = ib.write_tar(ib.docker_archive([image(name=None)]), str(tmp_path / "a.tar"))
    with pytest.raises(ArchiveError, match="has no name"):
        import_archive(store, path)


@pytest.mark.parametrize("name, problem", [
    ("Team/App", "not an image reference"),
    ("app@sha256:" + "0" * 64, "digest reference"),
    ("busybox", "built into every node"),
    ("busybox:latest", "built into every node"),
])
def test_bad_names_are_refused(store, tmp_path, name, problem):
    path = ib.write_tar(ib.oci_layout([image()]), str(tmp_path / "a.tar"))
    with pytest.raises(ArchiveError, match=problem):
        import_archive(store, path, name=name)
    assert leftovers(store) == []


@needs_root
def test_only_this_machines_platform_is_taken(store, tmp_path):
    arm = image(architecture="arm64" if imagemanifests.host_arch() != "arm64" else "amd64",
                layers=[ib.layer_tar([ib.file("arm", "1")])])
    here = image(architecture=imagemanifests.host_arch(), name="team/app:1.0")
    arm.name = "team/app:1.0"
    result = import_archive(store, ib.write_tar(ib.oci_layout([arm, here]),
                                                str(tmp_path / "a.tar")))
    assert [i.layers for i in result.images] == [(ib.sha(here.layers[0]),
                                                  ib.sha(here.layers[1]))]
    with pytest.raises(ArchiveError, match=f"no image for linux/{imagemanifests.host_arch()} "
                                           r"\(it has linux/"):
        import_archive(store, ib.write_tar(ib.oci_layout([arm]), str(tmp_path / "b.tar")))


# -- hostile and malformed archives -------------------------------------------------------------


def hostile_layer(entries: list[ib.Entry]) -> dict[str, bytes]:
    good = ib.layer_tar([ib.file("fine", "a good first layer, staged then thrown away")])
    return ib.oci_layout([ib.ImageSpec(layers=[good, ib.layer_tar(entries)], name="x/y:1")])


LAYER_CASES = {
    "dotdot": ([ib.file("../etc/passwd", "x")], "'../etc/passwd': path climbs out"),
    "dotdot-inside": ([ib.file("a/../../x", "x")], "'a/../../x': path climbs out"),
    "absolute": ([ib.file("/etc/passwd", "x")], "'/etc/passwd': absolute path"),
    "symlink-escape": ([ib.symlink("up", "../../../etc")], "'up': symbolic link target "
                                                          "'../../../etc' leaves"),
    "symlink-abs-escape": ([ib.symlink("a/up", "/../etc")], "'a/up': symbolic link target"),
    "write-through-symlink": ([ib.symlink("evil", "/etc"), ib.file("evil/passwd", "x")],
                              "'evil/passwd': path goes through the symbolic link 'evil'"),
    "hardlink-escape": ([ib.hardlink("h", "../outside")], "'h': hard link target "
                                                          "'../outside': path climbs out"),
    "hardlink-absolute": ([ib.hardlink("h", "/etc/shadow")], "'h': hard link target "
                                                             "'/etc/shadow': absolute path"),
    "hardlink-through-symlink": ([ib.symlink("d", "/etc"), ib.hardlink("h", "d/shadow")],
                                 "'h': path goes through the symbolic link 'd'"),
    "hardlink-missing": ([ib.hardlink("h", "nowhere")], "'h': hard link target 'nowhere' "
                                                        "is not in this layer"),
    "hardlink-dir": ([ib.directory("d"), ib.hardlink("h", "d")], "is not a file"),
    "too-deep": ([ib.file("a/" * 201 + "x", "x")], "more than 200 directories deep"),
    "root-not-dir": ([ib.file(".", "x")], "the layer root must be a directory"),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_hostile_layers_are_refused_and_leave_nothing(store, tmp_path, case):
    entries, message = LAYER_CASES[case]
    path = ib.write_tar(hostile_layer(entries), str(tmp_path / "evil.tar"))
    with pytest.raises(ArchiveError) as e:
        import_archive(store, path, label="evil.tar")
    text = str(e.value)
    assert text.startswith("evil.tar: index.json manifest 1: layer 2 of 2"), text
    assert message in text
    assert "\n" not in text
    assert leftovers(store) == []


def test_nothing_is_written_through_a_symlink_out_of_the_layer(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    # An absolute link is fine in an image (it resolves in the container's
    # root); writing through it while unpacking would land on the host.
    entries = [ib.symlink("evil", str(outside)), ib.file("evil/planted", "gotcha"),
               ib.symlink("evil2", str(outside / "x")), ib.hardlink("evil2", "evil/y")]
    with pytest.raises(ArchiveError, match="path goes through the symbolic link 'evil'"):
        import_archive(store, ib.write_tar(hostile_layer(entries), str(tmp_path / "e.tar")))
    assert list(outside.iterdir()) == []
    assert leftovers(store) == []


def test_limits_are_enforced(store, tmp_path):
    big = ib.layer_tar([ib.file("big", b"x" * 5000)])
    many = ib.layer_tar([ib.file(f"f{i}", "") for i in range(20)])
    path = ib.write_tar(ib.docker_archive([ib.ImageSpec(layers=[big], name="a/b:1")]),
                        str(tmp_path / "big.tar"))
    with pytest.raises(ArchiveError, match="'big': 5000 bytes is over the node's limit of "
                                           "4000 bytes per file"):
        import_archive(store, path, limits=Limits(max_file_bytes=4000))
    with pytest.raises(ArchiveError, match="more than 3000 bytes uncompressed"):
        import_archive(store, path, limits=Limits(max_unpacked_bytes=3000))
    path = ib.write_tar(ib.docker_archive([ib.ImageSpec(layers=[many], name="a/b:1")]),
                        str(tmp_path / "many.tar"))
    with pytest.raises(ArchiveError, match="more than 10 members"):
        import_archive(store, path, limits=Limits(max_members=10))
    assert leftovers(store) == []


def test_a_gzip_bomb_stops_at_the_unpacked_limit(store, tmp_path):
    # 64 MiB of zeros after a tiny tar compress to ~64 KiB.
    bomb = ib.gz(ib.layer_tar([ib.file("a", "1")]) + bytes(64 << 20))
    files = ib.oci_layout([ib.ImageSpec(layers=[ib.layer_tar([ib.file("a", "1")])],
                                        gzip_layers=[True], name="a/b:1")])
    manifest_fix(files, layer=0, data=bomb)
    with pytest.raises(ArchiveError, match="more than 1048576 bytes uncompressed"):
        import_archive(store, ib.write_tar(files, str(tmp_path / "bomb.tar")),
                       limits=Limits(max_unpacked_bytes=1 << 20))
    assert leftovers(store) == []


def manifest_fix(files: dict[str, bytes], layer: int, data: bytes,
                 media: str | None = None) -> None:
    """Replaces layer `layer` of the OCI layout's first manifest, keeping every digest right."""
    index = json.loads(files["index.json"])
    old = index["manifests"][0]["digest"]
    manifest = json.loads(files.pop("blobs/sha256/" + old[7:]))
    manifest["layers"][layer].update(digest=ib.sha(data), size=len(data))
    if media:
        manifest["layers"][layer]["mediaType"] = media
    files["blobs/sha256/" + ib.sha(data)[7:]] = data
    body = json.dumps(manifest).encode()
    files["blobs/sha256/" + ib.sha(body)[7:]] = body
    index["manifests"][0].update(digest=ib.sha(body), size=len(body))
    files["index.json"] = json.dumps(index).encode()


def oci_files() -> dict[str, bytes]:
    return ib.oci_layout([ib.ImageSpec(layers=[ib.layer_tar([ib.file("a", "1")])],
                                       name="a/b:1")])


def blob_of_layer(files: dict[str, bytes]) -> str:
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    return "blobs/sha256/" + manifest["layers"][0]["digest"][7:]


def archive_cases() -> dict[str, tuple[object, str]]:
    def tampered_blob(f):
        f[blob_of_layer(f)] = ib.layer_tar([ib.file("a", "2")])

    def missing_blob(f):
        del f[blob_of_layer(f)]

    def unknown_layer_type(f):
        manifest_fix(f, 0, f[blob_of_layer(f)], media="application/x-mystery")

    def unknown_index_type(f):
        index = json.loads(f["index.json"])
        index["manifests"][0]["mediaType"] = "application/x-mystery"
        f["index.json"] = json.dumps(index).encode()

    def wrong_diff_id(f):
        other = ib.layer_tar([ib.file("a", "other")])
        manifest_fix(f, 0, other)

    def truncated_layer(f):
        manifest_fix(f, 0, ib.layer_tar([ib.file("a", b"z" * 4096)])[:1500])

    def corrupt_gzip(f):
        manifest_fix(f, 0, ib.gz(ib.layer_tar([ib.file("a", "1")]))[:-12] + b"garbage!" * 2)

    def lying_size(f):
        manifest_fix(f, 0, ib.raw_member_tar("huge", b"0", 1 << 30, b"tiny"))

    def bad_index_json(f):
        f["index.json"] = b"{not json"

    def sha512(f):
        index = json.loads(f["index.json"])
        index["manifests"][0]["digest"] = "sha512:" + "0" * 128
        f["index.json"] = json.dumps(index).encode()

    return {
        "tampered-blob": (tampered_blob, "digest mismatch: the manifest says sha256:"),
        "missing-blob": (missing_blob, "layer 1 of 1 (sha256:"),
        "unknown-layer-type": (unknown_layer_type, "unknown layer media type "
                                                   "'application/x-mystery'"),
        "unknown-index-type": (unknown_index_type, "index.json manifest 1: unknown media type"),
        "wrong-diff-id": (wrong_diff_id, "diff id mismatch: the config says sha256:"),
        "truncated-layer": (truncated_layer, "layer 1 of 1"),
        "corrupt-gzip": (corrupt_gzip, "corrupt gzip data"),
        "lying-size": (lying_size, "'huge'"),
        "bad-index-json": (bad_index_json, "index.json: index.json is not valid JSON"),
        "sha512": (sha512, "unsupported digest algorithm"),
    }


@pytest.mark.parametrize("case", sorted(archive_cases()))
def test_malformed_oci_layouts_are_refused_and_leave_nothing(store, tmp_path, case):
    mutate, message = archive_cases()[case]
    files = oci_files()
    mutate(files)
    with pytest.raises(ArchiveError) as e:
        import_archive(store, ib.write_tar(files, str(tmp_path / "bad.tar")), label="bad.tar")
    assert str(e.value).startswith("bad.tar: "), str(e.value)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert leftovers(store) == []


def test_missing_blob_message_names_the_blob(store, tmp_path):
    files = oci_files()
    blob = blob_of_layer(files)
    del files[blob]
    with pytest.raises(ArchiveError, match=f"layer blob {blob} is not in the archive"):
        import_archive(store, ib.write_tar(files, str(tmp_path / "bad.tar")))


@pytest.mark.parametrize("layer_path, message", [
    ("../outside.tar", "leaves the archive"),
    ("/etc/passwd", "absolute path"),
])
def test_docker_manifest_paths_must_stay_in_the_archive(store, tmp_path, layer_path, message):
    files = ib.docker_archive([ib.ImageSpec(layers=[ib.layer_tar([])], name="a/b:1")])
    manifest = json.loads(files["manifest.json"])
    manifest[0]["Layers"] = [layer_path]
    files["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(ArchiveError, match=message):
        import_archive(store, ib.write_dir(files, str(tmp_path / "d")))
    assert leftovers(store) == []


def test_docker_config_digest_is_checked(store, tmp_path):
    files = ib.docker_archive([ib.ImageSpec(layers=[ib.layer_tar([])], name="a/b:1")])
    config = next(p for p in files if p.endswith(".json") and p != "manifest.json")
    files[config] = files[config].replace(b'"os": "linux"', b'"os": "plan9"')
    with pytest.raises(ArchiveError, match="digest mismatch"):
        import_archive(store, ib.write_tar(files, str(tmp_path / "a.tar")))


def test_a_symlink_out_of_a_layout_directory_is_refused(store, tmp_path):
    files = oci_files()
    blob = blob_of_layer(files)
    del files[blob]
    d = ib.write_dir(files, str(tmp_path / "layout"))
    os.symlink("/etc/hostname", os.path.join(d, blob))
    with pytest.raises(ArchiveError, match="a symbolic link leads out of the directory"):
        import_archive(store, d)
    assert leftovers(store) == []


@pytest.mark.parametrize("content, message", [
    (b"this is not a tar file at all" * 40, "not a tar archive"),
    (gzip.compress(b"\0" * 1024)[:-10], "corrupt gzip data"),
    (b"\x28\xb5\x2f\xfd" + b"\0" * 100, "zstd-compressed archives are not supported"),
])
def test_not_an_archive(store, tmp_path, content, message):
    path = tmp_path / "junk.tar"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match=message):
        import_archive(store, str(path), label="junk.tar")
    assert leftovers(store) == []


def test_neither_format(store, tmp_path):
    path = ib.write_tar({"hello.txt": b"hi"}, str(tmp_path / "a.tar"))
    with pytest.raises(ArchiveError, match="neither a docker save archive .* nor an OCI"):
        import_archive(store, path)


def test_bad_config_values_are_refused_before_unpacking(store, tmp_path):
    spec = image(extra_config={"config": {"Cmd": "not a list"}})
    with pytest.raises(ArchiveError, match="config.Cmd must be a list of strings"):
        import_archive(store, ib.write_tar(ib.docker_archive([spec]), str(tmp_path / "a.tar")))
    assert leftovers(store) == []


def test_created_is_read_from_go_timestamps():
    assert imagearchive.created_ms("2024-05-06T07:08:09.123456789Z") == 1714979289123
    assert imagearchive.created_ms("2024-05-06T09:08:09+02:00") == 1714979289000
    assert imagearchive.created_ms("yesterday") == 0
    assert imagearchive.created_ms(None) == 0

