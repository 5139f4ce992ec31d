"""Image GC (agent/images/gc.py) on a real, small filesystem: a 16 MiB tmpfs.

Needs root (the mount). Four images of 3 MiB each (random data: the
layers take what they say) are imported into a store on the tmpfs, then
used at known times; with the marks set around the filesystem's use, GC
must remove unused images least recently used first, down to the low
mark, and never the one in use or busybox; their layers and kept blobs go
with them, and a layer another image shares stays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.images.gc import Candidate, ImageGC, order, used_percent  # noqa: E402
from mctl.agent.images.importer import ImageImporter  # noqa: E402
from mctl.agent.images.store import ImageError, ImageStore  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")

SHARED = ib.layer_tar([ib.directory("base"), ib.file("base/x", os.urandom(64 << 10))])


@pytest.fixture
def store() -> Iterator[ImageStore]:
    root = tempfile.mkdtemp(prefix="mctl-test-imagegc-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "mctl-test-imagegc", root],
                   check=True)
    try:
        yield ImageStore(root)
    finally:
        subprocess.run(["umount", root], check=True)
        os.rmdir(root)


def image(name: str) -> ib.ImageSpec:
    own = ib.layer_tar([ib.directory("data"), ib.file(f"data/{name}", os.urandom(3 << 20))])
    return ib.ImageSpec(layers=[SHARED, own], name=name, gzip_layers=[False, False])


def test_order_is_least_recently_used_first_and_skips_what_is_in_use():
    cands = [Candidate("c:1", 30), Candidate("a:1", 10), Candidate("b:1", 10),
             Candidate("busybox:latest", 0), Candidate("d:1", 5)]
    assert order(cands, in_use={"d:1"}) == ["a:1", "b:1", "c:1"]


def test_gc_removes_unused_images_lru_down_to_the_low_mark(store):
    importer = ImageImporter(store)
    names = ["app/one:1", "app/two:1", "app/three:1", "app/four:1"]
    work = Path(tempfile.mkdtemp(prefix="mctl-test-imagegc-src-"))
    try:
        for n in names:
            importer.import_layout(ib.write_dir(ib.oci_layout([image(n)]), str(work / "l")), n)
            shutil.rmtree(work / "l")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Used at 1000 s (two), 2000 (one), 3000 (three), 4000 (four: in use).
    for n, t in zip(["app/two:1", "app/one:1", "app/three:1", "app/four:1"],
                    [1000, 2000, 3000, 4000], strict=True):
        os.utime(os.path.join(store.images_dir, n.replace("/", "_") + ".json"), (t, t))
    used = used_percent(store.root)
    assert used > 60, used                     # 4 x 3 MiB on 16 MiB
    per_image = 100 * 3 / 16
    # Over the high mark; the low mark is reached after two removals.
    gc = ImageGC(importer, in_use=lambda: {"app/four:1"}, high=used - 1,
                 low=used - 1.5 * per_image)
    assert gc.run_once() == ["app/two:1", "app/one:1"]
    left = {i.name for i in store.list()}
    assert left == {"app/three:1", "app/four:1"}
    with pytest.raises(ImageError):
        store.get("app/two:1")
    # The shared layer stays with the images that still name it.
    assert os.path.isdir(store.layer_path(ib.sha(SHARED)))
    assert len(os.listdir(store.layers_dir)) == 3
    # Under the high mark now: nothing more goes.
    assert gc.run_once() == []
    # With the marks at the bottom, only what is in use stays.
    lines: list[str] = []
    gc = ImageGC(importer, in_use=lambda: {"app/four:1"}, high=1, low=1, on_removed=lines.append)
    assert gc.run_once() == ["app/three:1"]
    assert {i.name for i in store.list()} == {"app/four:1"}
    # One line per removal, for the node's event: what went and what it freed.
    (line,) = lines
    assert line.startswith("removed unused image app/three:1 (1 layers, ")
    assert "freed): disk " in line and line.endswith("(high 1%, low 1%)")


def test_bad_marks_are_refused(store):
    with pytest.raises(ValueError, match="need 0 < low <= high <= 100"):
        ImageGC(ImageImporter(store), in_use=set, high=50, low=60)
