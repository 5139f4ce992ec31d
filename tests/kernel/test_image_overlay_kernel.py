"""Imported layers under a real overlay mount: deletions, opaque dirs and links show right.

Needs root. An image of three layers is imported from an OCI layout into a
store in a temporary ``mctl-test-*`` dir and mounted the way containers.py
does it (overlay.mount_overlay over the layers, top first); what the overlay
shows is then compared with what the layers say. The mount is taken down and
the directory removed in a finalizer, and the test checks nothing is left.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.bundle import overlay
from mctl.agent.images import user as imageuser
from mctl.agent.images.archive import import_archive  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402
from mctl.agent.runtime import syscalls as sc  # noqa: E402

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for overlay mounts"),
]

LAYERS = [
    [ib.directory("etc"), ib.file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
     ib.file("etc/keep", "kept\n"), ib.file("etc/old-config", "deleted in layer 2\n"),
     ib.directory("var/cache"), ib.file("var/cache/a", "hidden by opaque\n"),
     ib.file("var/cache/b", "hidden by opaque\n"), ib.directory("data"),
     ib.file("data/one", "1\n"), ib.file("bin/tool", "#!/bin/sh\necho tool\n", mode=0o755),
     ib.hardlink("bin/tool-link", "bin/tool"), ib.symlink("bin/sh", "/bin/tool"),
     ib.directory("gone-dir"), ib.file("gone-dir/inner", "x\n")],
    [ib.whiteout("etc/old-config"), ib.opaque("var/cache"), ib.file("var/cache/c", "new\n"),
     ib.whiteout("gone-dir"), ib.file("data/two", "2\n"),
     ib.file("etc/passwd", "root:x:0:0::/root:/bin/sh\nsvc:x:700:700::/:/bin/sh\n")],
    # Deleted in layer 2, back in layer 3: the top layer wins.
    [ib.file("etc/old-config", "back again\n"), ib.whiteout("data/one")],
]


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="mctl-test-"))
    target = base / "rootfs"
    yield base
    while overlay.unmount(sc.libc(), str(target)):
        pass
    shutil.rmtree(base)
    with open("/proc/self/mountinfo") as f:
        assert str(base) not in f.read()


def test_overlay_of_imported_layers(workdir: Path):
    spec = ib.ImageSpec(layers=[ib.layer_tar(entries) for entries in LAYERS],
                        gzip_layers=[True, False, True], name="t/overlay:1", user="svc")
    archive = ib.write_tar(ib.oci_layout([spec]), str(workdir / "image.tar"))
    store = ImageStore(str(workdir / "store"))
    image = import_archive(store, archive).images[0]
    lower = [store.layer_path(d) for d in reversed(image.layers)]
    target = workdir / "rootfs"
    overlay.mount_overlay(sc.libc(), lower, str(workdir / "upper"), str(workdir / "work"),
                         str(target))

    def names(rel: str) -> list[str]:
        return sorted(os.listdir(target / rel))

    assert names("etc") == ["keep", "old-config", "passwd"]
    assert (target / "etc/old-config").read_text() == "back again\n"
    assert names("var/cache") == ["c"]                     # opaque: a and b are gone
    assert not (target / "gone-dir").exists()             # a whited-out directory
    assert names("data") == ["two"]                       # one deleted in the top layer
    assert not any(n.startswith(".wh.") for _, d, f in os.walk(target) for n in d + f)
    tool = os.lstat(target / "bin/tool")
    assert os.lstat(target / "bin/tool-link").st_ino == tool.st_ino
    assert stat.S_IMODE(tool.st_mode) == 0o755
    assert os.readlink(target / "bin/sh") == "/bin/tool"
    # The image user is resolved from the layers as the overlay shows them.
    assert imageuser.resolve(image.user, lower) == (700, 700, ())
    assert imageuser.read_image_file(lower, "etc/passwd") == (target / "etc/passwd").read_bytes()
    assert imageuser.read_image_file(lower, "etc/old-config") == b"back again\n"
    assert imageuser.read_image_file(lower, "var/cache/a") is None
    assert imageuser.read_image_file(lower, "data/one") is None
    # Writing goes to the upper dir; the layers stay as imported.
    (target / "var/cache/c").write_text("changed\n")
    assert (Path(lower[1]) / "var/cache/c").read_text() == "new\n"


def test_overlay_of_more_layers_than_one_page_of_options(workdir: Path):
    # Long layer paths, as under /var/lib/mctl/.../layers/sha256-<64 hex>:
    # 80 of them make ~8 KiB of lowerdir=, twice what mount(2) takes.
    lower = []
    for i in range(80):
        layer = workdir / "layers" / f"sha256-{i:064x}"
        (layer / "files").mkdir(parents=True)
        (layer / "files" / f"from-{i}").write_text(f"{i}\n")
        (layer / "top").write_text(f"layer {i}\n")
        lower.append(str(layer))
    lower.reverse()  # top layer first: layer 79 wins
    assert len(":".join(lower)) > overlay.MOUNT_DATA_MAX
    target = workdir / "rootfs"
    overlay.mount_overlay(sc.libc(), lower, str(workdir / "upper"), str(workdir / "work"),
                         str(target))
    assert sorted(os.listdir(target / "files")) == sorted(f"from-{i}" for i in range(80))
    assert (target / "top").read_text() == "layer 79\n"
    (target / "top").write_text("changed\n")  # copied up, layers untouched
    assert (workdir / "upper" / "top").read_text() == "changed\n"
    assert Path(lower[0], "top").read_text() == "layer 79\n"


def test_many_layers_with_a_missing_one_fail_naming_it(workdir: Path):
    lower = [str(workdir / f"layer-{i:0100d}") for i in range(50)]
    for layer in lower[1:]:
        os.makedirs(layer)
    with pytest.raises(OSError, match=f"lowerdir\\+={lower[0]}"):
        overlay.mount_overlay(sc.libc(), lower, str(workdir / "upper"), str(workdir / "work"),
                             str(workdir / "rootfs"))
    with open("/proc/self/mountinfo") as f:
        assert str(workdir) not in f.read()
