"""The agent's image import: chunks in, limits, leftovers of a killed import; the image User."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.images import user as imageuser  # noqa: E402
from mctl.agent.images.archive import ArchiveError, Limits  # noqa: E402
from mctl.agent.images.importer import ImageImporter, ImportRefused  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402
from mctl.common import imageref  # noqa: E402
from mctl.v1 import agent_pb2  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and chown need root")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "store"))


def chunks(data: bytes, name: str = "", filename: str = "app.tar", size: int | None = None,
           chunk: int = 1000):
    yield agent_pb2.ImageChunk(name=name, filename=filename,
                               size=len(data) if size is None else size)
    for i in range(0, len(data), chunk):
        yield agent_pb2.ImageChunk(data=data[i:i + chunk])


def archive_bytes(tmp_path: Path, **kw) -> bytes:
    spec = ib.ImageSpec(layers=[ib.layer_tar([ib.file("etc/motd", "hi\n")])], name="t/app:2",
                        cmd=["cat", "/etc/motd"], **kw)
    return Path(ib.write_tar(ib.docker_archive([spec]), str(tmp_path / "a.tar"))).read_bytes()


@needs_root
def test_chunks_are_imported_and_listed(store, tmp_path):
    importer = ImageImporter(store)
    result, received = importer.receive(chunks(archive_bytes(tmp_path)))
    data = archive_bytes(tmp_path)
    assert received == len(data)
    assert [i.name for i in result.images] == ["t/app:2"]
    (info,) = importer.list()
    assert info.name == "t/app:2"
    assert info.size_bytes == 3
    assert list(info.cmd) == ["cat", "/etc/motd"]
    assert info.created_unix_ms == 1714979289123
    assert os.listdir(importer.tmp_dir) == []


def test_an_archive_over_the_limit_is_refused_while_it_streams(store, tmp_path):
    importer = ImageImporter(store, Limits(max_archive_bytes=5000))
    data = archive_bytes(tmp_path)
    assert len(data) > 5000
    # The announced size is refused at once; a lie is caught by counting.
    with pytest.raises(ImportRefused, match="app.tar: .* over this node's limit of 5000"):
        importer.receive(chunks(data))
    with pytest.raises(ImportRefused, match="app.tar: 6000 bytes is over"):
        importer.receive(chunks(data, size=10))
    assert os.listdir(importer.tmp_dir) == []
    assert os.listdir(store.layers_dir) == [] and os.listdir(store.images_dir) == []


def test_an_empty_upload_is_refused(store):
    with pytest.raises(ImportRefused, match="app.tar: no data received"):
        ImageImporter(store).receive(chunks(b""))


def test_a_bad_archive_names_the_file_the_user_gave(store, tmp_path):
    # Refused from its first bytes, before the archive is opened.
    with pytest.raises(ImportRefused, match="^evil.tar: not a tar archive"):
        ImageImporter(store).receive(chunks(b"junk" * 300, filename="/home/me/evil.tar"))
    assert os.listdir(store.layers_dir) == []


def test_what_is_no_archive_is_refused_after_its_first_chunk(store):
    sent = []

    def zeros():        # /dev/zero: endless, until the receiver stops reading
        yield agent_pb2.ImageChunk(filename="zero")
        while True:
            sent.append(1)
            yield agent_pb2.ImageChunk(data=bytes(1 << 20))
    importer = ImageImporter(store)
    with pytest.raises(ImportRefused, match="^zero: starts with an empty block"):
        importer.receive(zeros())
    assert len(sent) == 1
    assert os.listdir(importer.tmp_dir) == []
    # A tiny upload is judged at its end; a real tar's first block passes.
    with pytest.raises(ImportRefused, match="too short for a tar archive"):
        importer.receive(chunks(b"hi"))


def test_a_truncated_but_real_tar_gets_past_the_first_bytes(store, tmp_path):
    data = archive_bytes(tmp_path)
    with pytest.raises(ArchiveError):
        ImageImporter(store).receive(chunks(data[:2048]))


def test_leftovers_of_a_killed_import_are_removed_at_start(store):
    stale_layer = Path(store.layers_dir) / ".tmp-import-abc" / "0"
    stale_layer.mkdir(parents=True)
    (stale_layer / "f").write_text("half")
    tmp = Path(store.root) / "tmp"
    tmp.mkdir()
    (tmp / "upload-x.tar").write_bytes(b"half")
    kept = Path(store.layers_dir) / "sha256_feed"
    kept.mkdir()
    ImageImporter(store)
    assert sorted(os.listdir(store.layers_dir)) == ["sha256_feed"]
    assert os.listdir(tmp) == []


def test_the_layers_dir_is_for_root_only(store):
    # Images carry setuid-root files: no host user may reach them there.
    assert os.stat(store.layers_dir).st_mode & 0o777 == 0o700


# -- the image's User -------------------------------------------------------------------------

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:root\naudio:x:63:app\n"


def layer(root: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return str(root)


@pytest.mark.parametrize("spec, expected", [
    ("", (0, 0, ())),
    ("app", (1000, 1001, (50, 63))),
    ("1000", (1000, 1001, (50, 63))),
    ("app:staff", (1000, 50, ())),
    ("app:7", (1000, 7, ())),
    ("4242", (4242, 0, ())),
    ("4242:4243", (4242, 4243, ())),
    ("root", (0, 0, (10,))),
])
def test_user_forms(tmp_path, spec, expected):
    layers = [layer(tmp_path, {"etc/passwd": PASSWD, "etc/group": GROUP})]
    assert imageuser.resolve(spec, layers) == expected


def test_unknown_user_or_group(tmp_path):
    layers = [layer(tmp_path, {"etc/passwd": PASSWD, "etc/group": GROUP})]
    with pytest.raises(imageuser.UserError, match="image user 'nobody' is not in the image's"):
        imageuser.resolve("nobody", layers)
    with pytest.raises(imageuser.UserError, match="image group 'video' is not in"):
        imageuser.resolve("app:video", layers)


@needs_root
def test_passwd_is_read_as_the_overlay_shows_it(tmp_path):
    bottom = layer(tmp_path / "l0", {"etc/passwd": "old:x:7:7::/:/bin/sh\n"})
    middle = layer(tmp_path / "l1", {"etc/passwd": PASSWD})
    top = tmp_path / "l2"
    top.mkdir()
    assert imageuser.resolve("app", [str(top), middle, bottom])[0] == 1000
    assert imageuser.read_image_file([bottom], "etc/passwd").startswith(b"old")
    # A whiteout of /etc/passwd in the top layer: there is no passwd.
    (top / "etc").mkdir()
    os.mknod(top / "etc/passwd", 0o020000, os.makedev(0, 0))
    assert imageuser.read_image_file([str(top), middle, bottom], "etc/passwd") is None
    os.unlink(top / "etc/passwd")
    # An opaque /etc above: only that layer's /etc counts.
    os.setxattr(top / "etc", "trusted.overlay.opaque", b"y")
    assert imageuser.read_image_file([str(top), middle, bottom], "etc/passwd") is None
    (top / "etc/passwd").write_text("new:x:9:9::/:/bin/sh\n")
    assert imageuser.resolve("new", [str(top), middle, bottom]) == (9, 9, ())
    # A link is never followed (it would resolve on the host).
    link = layer(tmp_path / "l3", {})
    os.makedirs(os.path.join(link, "etc"))
    os.symlink("/etc/passwd", os.path.join(link, "etc/passwd"))
    assert imageuser.read_image_file([link], "etc/passwd") is None


# -- references -------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["busybox", "busybox:1.36", "team/app:v1.2-rc_3",
                                 "registry.local:5000/team/app:1", "localhost/a__b.c-d/e"])
def test_good_references(ref):
    assert imageref.problem(ref) is None


@pytest.mark.parametrize("ref, problem", [
    ("", "must not be empty"), ("App", "not an image reference"),
    ("app:", "not an image reference"), ("app:-x", "not an image reference"),
    ("a/../b", "not an image reference"), ("app@sha256:" + "a" * 64, "digest reference"),
    ("app\n", "not an image reference"), ("a" * 256, "longer than 255"),
])
def test_bad_references(ref, problem):
    assert problem in (imageref.problem(ref) or "")


def test_normalize():
    assert imageref.normalize("busybox") == "busybox:latest"
    assert imageref.normalize("registry:5000/app") == "registry:5000/app:latest"
    assert imageref.normalize("registry:5000/app:1") == "registry:5000/app:1"
