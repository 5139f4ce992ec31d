"""The image store: the busybox image built from the host's static busybox, and layers."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mctl.agent.images import store as images
from mctl.agent.images.store import Image, ImageError, ImageStore

HAVE_BUSYBOX = any(os.path.isfile(p) for p in images.BUSYBOX_CANDIDATES)
needs_busybox = pytest.mark.skipif(not HAVE_BUSYBOX, reason="no static busybox on this host")


@pytest.fixture
def store(tmp_path):
    return ImageStore(str(tmp_path / "store"))


@pytest.fixture
def busybox(store):
    if not HAVE_BUSYBOX:
        pytest.skip("no static busybox on this host")
    return store.ensure_busybox()


def layer_of(store, image):
    assert len(image.layers) == 1
    return store.layer_path(image.layers[0])


def tree(root):
    """Every entry under root: (relative path, mode, link target or content digest)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else st.st_size
            out.append((os.path.relpath(path, root), st.st_mode, what))
    return sorted(out)


# -- the busybox image -------------------------------------------------------------


@needs_busybox
def test_busybox_binary_is_executable(store, busybox):
    binary = os.path.join(layer_of(store, busybox), "bin", "busybox")
    st = os.lstat(binary)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o755
    host = next(p for p in images.BUSYBOX_CANDIDATES if os.path.isfile(p))
    with open(binary, "rb") as a, open(host, "rb") as b:
        assert a.read() == b.read()


@needs_busybox
@pytest.mark.parametrize("applet", ["bin/sh", "bin/ls", "bin/ps", "sbin/ip", "bin/hostname"])
def test_applets_link_to_busybox(store, busybox, applet):
    link = os.path.join(layer_of(store, busybox), applet)
    assert os.path.islink(link), applet
    assert os.readlink(link) == "/bin/busybox"


@needs_busybox
def test_every_listed_applet_has_a_link(store, busybox):
    import subprocess

    host = next(p for p in images.BUSYBOX_CANDIDATES if os.path.isfile(p))
    applets = subprocess.run([host, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    root = layer_of(store, busybox)
    missing = [a for a in applets if not os.path.lexists(os.path.join(root, a))]
    assert missing == []


@needs_busybox
def test_base_directories_and_modes(store, busybox):
    root = layer_of(store, busybox)
    assert stat.S_IMODE(os.stat(os.path.join(root, "tmp")).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(os.path.join(root, "root")).st_mode) == 0o700
    # The layer directory itself is readable by all (mkdtemp makes it 0700).
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    for d in ("proc", "sys", "dev", "etc", "usr/bin", "var", "run", "home"):
        assert os.path.isdir(os.path.join(root, d)), d
    with open(os.path.join(root, "etc", "passwd")) as f:
        assert f.readline().startswith("root:x:0:0:")
    for name in ("hostname", "hosts", "resolv.conf"):
        assert os.path.isfile(os.path.join(root, "etc", name)), name


@needs_busybox
def test_busybox_image_record(busybox):
    assert busybox.name == "busybox:latest"
    assert busybox.cmd == ("sh",)
    assert busybox.entrypoint == ()
    assert busybox.env == (f"PATH={images.DEFAULT_PATH}",)
    assert busybox.working_dir == "/"
    assert busybox.layers[0].startswith("sha256:")
    assert len(busybox.layers[0]) == len("sha256:") + 64


@needs_busybox
def test_digest_stable_across_builds(tmp_path):
    one = ImageStore(str(tmp_path / "one"))
    two = ImageStore(str(tmp_path / "two"))
    a, b = one.ensure_busybox(), two.ensure_busybox()
    assert a.layers == b.layers
    assert tree(layer_of(one, a)) == tree(layer_of(two, b))
    # Building again in the same store reuses the layer.
    assert one.ensure_busybox() == a
    assert sorted(os.listdir(one.layers_dir)) == [a.layers[0].replace(":", "_")]


@needs_busybox
def test_get_normalizes_the_tag(store, busybox):
    assert store.get("busybox") == store.get("busybox:latest") == busybox
    # A fresh store over the same directory reads the record from disk.
    fresh = ImageStore(store.root)
    assert fresh.get("busybox") == fresh.get("busybox:latest") == busybox
    assert fresh.list() == [busybox]


# -- get / put / list -----------------------------------------------------------------


def test_missing_image_raises(store):
    with pytest.raises(ImageError, match="'nginx' is not on this node"):
        store.get("nginx")
    with pytest.raises(ImageError):
        store.get("busybox:1.36")


def test_image_with_missing_layer_raises(store):
    store.put(Image(name="app:v1", layers=("sha256:" + "0" * 64,)))
    fresh = ImageStore(store.root)  # no cache: read from disk
    with pytest.raises(ImageError, match="layer sha256:0+ is missing"):
        fresh.get("app:v1")


def test_put_then_get_round_trips(store):
    store.add_layer("sha256:aa", lambda d: None)
    image = Image(name="registry.local:5000/team/app:v2", layers=("sha256:aa",),
                  entrypoint=("/app",), cmd=("--serve",), env=("A=1",), working_dir="/srv",
                  user="65534")
    store.put(image)
    assert ImageStore(store.root).get("registry.local:5000/team/app:v2") == image
    assert not any(n.endswith(".tmp") for n in os.listdir(store.images_dir))


def test_list_skips_unreadable_records(store):
    store.add_layer("sha256:aa", lambda d: None)
    store.put(Image(name="good:latest", layers=("sha256:aa",)))
    with open(os.path.join(store.images_dir, "bad.json"), "w") as f:
        f.write("{not json")
    with open(os.path.join(store.images_dir, "gone.json"), "w") as f:
        json.dump({"name": "gone:latest", "layers": ["sha256:bb"]}, f)
    assert [i.name for i in ImageStore(store.root).list()] == ["good:latest"]


@pytest.mark.parametrize(("ref", "name"), [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1"),
])
def test_normalize_name(ref, name):
    assert images.normalize_name(ref) == name


# -- add_layer -------------------------------------------------------------------------


def leftovers(store):
    return [n for n in os.listdir(store.layers_dir) if n.startswith(".tmp-")]


@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError(28, "no space"),
                                   KeyboardInterrupt()])
def test_add_layer_leaves_no_temp_dir_when_build_raises(store, error):
    def build(d):
        with open(os.path.join(d, "half"), "w") as f:
            f.write("x")
        raise error

    with pytest.raises(type(error)):
        store.add_layer("sha256:cc", build)
    assert leftovers(store) == []
    assert not os.path.exists(store.layer_path("sha256:cc"))


def test_add_layer_builds_once(store):
    calls = []

    def build(d):
        calls.append(d)
        with open(os.path.join(d, "file"), "w") as f:
            f.write("content")

    first = store.add_layer("sha256:dd", build)
    second = store.add_layer("sha256:dd", build)
    assert first == second == store.layer_path("sha256:dd")
    assert len(calls) == 1
    assert calls[0] != first  # built elsewhere, then renamed into place
    with open(os.path.join(first, "file")) as f:
        assert f.read() == "content"
    assert leftovers(store) == []


def test_add_layer_lost_race_keeps_the_winner(store):
    final = store.layer_path("sha256:ee")

    def build(d):
        # Another builder finishes first while this one runs.
        os.makedirs(os.path.join(final, "winner"))
        with open(os.path.join(d, "loser"), "w") as f:
            f.write("x")

    assert store.add_layer("sha256:ee", build) == final
    assert os.listdir(final) == ["winner"]
    assert leftovers(store) == []


def test_missing_host_busybox(store, monkeypatch):
    monkeypatch.setattr(images, "BUSYBOX_CANDIDATES", ("/nonexistent/busybox",))
    with pytest.raises(ImageError, match="busybox"):
        store.ensure_busybox()
