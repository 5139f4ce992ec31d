"""Pulls whose layers are unpacked as skopeo lands them (agent/images/early.py), and zstd layers.

A real registry (tests/registry.py) holds images built here: with zstd
layers compressed by the test, and recompressed to zstd by skopeo itself
(`--dest-compress-format zstd`, Go's encoder, as registries serve them);
with a hostile layer. Every layer must be unpacked once, while pulling,
and a refused pull must leave nothing, early staging included.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mctl.agent.images.importer import ImageImporter
from mctl.agent.images.pull import Puller, PullError, RegistryConfig
from mctl.agent.images.store import ImageError, ImageStore
from mctl.common import pki

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402
from registry import Registry, scratch_store, tools_missing  # noqa: E402

pytestmark = pytest.mark.skipif(tools_missing(),
                                reason="needs skopeo, docker-registry and apache2-utils")

BASE = ib.layer_tar([ib.directory("bin"), ib.file("bin/base.txt", "base layer\n"),
                     ib.file("bin/noise", os.urandom(512 << 10))])
TOP = ib.layer_tar([ib.directory("app"), ib.file("app/top.txt", "top layer\n"),
                    ib.file("app/noise", os.urandom(512 << 10))])
SKOPEO_LAYERS = (
    ib.layer_tar([ib.directory("bin"), ib.file("bin/noise", os.urandom(512 << 10))]),
    ib.layer_tar([ib.directory("app"), ib.file("app/top.txt", "top layer\n"),
                  ib.file("app/noise", os.urandom(512 << 10))]))
EVIL = ib.layer_tar([ib.file("../escape.txt", "out of the layer\n")])


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry(pki.make_ca("mctl-test-registry-ca"))
    work = tempfile.mkdtemp(prefix="mctl-test-archives-")
    try:
        def push(spec: ib.ImageSpec, repo_tag: str) -> None:
            archive = ib.write_tar(ib.oci_layout([spec]), os.path.join(work, "a.tar"))
            reg.push(archive, repo_tag)
        push(ib.ImageSpec(layers=[BASE, TOP], name="x:1", gzip_layers=[True, True]),
             "team/gzip:1")
        push(ib.ImageSpec(layers=[BASE, EVIL], name="x:1", gzip_layers=[True, True]),
             "team/evil:1")
        if _has_zstandard():
            push(ib.ImageSpec(layers=[BASE, TOP], name="x:1", gzip_layers=[True, False],
                              zstd_layers=[False, True]), "team/zstd-here:1")
        # skopeo recompresses every layer with Go's zstd encoder. Layers of
        # their own: a blob the registry has already (gzip) would be reused.
        archive = ib.write_tar(ib.oci_layout([ib.ImageSpec(
            layers=list(SKOPEO_LAYERS), name="x:1", gzip_layers=[True, True])]),
            os.path.join(work, "s.tar"))
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-authfile", reg.auth,
                        "--dest-cert-dir", reg.cert_dir, "--dest-compress",
                        "--dest-compress-format", "zstd", f"oci-archive:{archive}",
                        f"docker://{reg.address}/team/zstd-skopeo:1"],
                       check=True, capture_output=True, timeout=60)
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _has_zstandard() -> bool:
    try:
        import zstandard  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


@pytest.fixture
def store() -> Iterator[ImageStore]:
    with scratch_store() as s:
        yield s


def puller(store: ImageStore, registry: Registry) -> Puller:
    return Puller(ImageImporter(store), RegistryConfig(auth_file=registry.auth,
                                                       ca_files=(registry.ca_file,)))


def scratch_left(store: ImageStore) -> list[str]:
    return os.listdir(os.path.join(store.root, "tmp")) + [
        e for e in os.listdir(store.layers_dir) if e.startswith(".")]


def manifest_media_types(registry: Registry, repo_tag: str) -> set[str]:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--authfile", registry.auth,
                          "--cert-dir", registry.cert_dir,
                          f"docker://{registry.address}/{repo_tag}"],
                         check=True, capture_output=True, text=True, timeout=60)
    return {layer["mediaType"] for layer in json.loads(out.stdout)["layers"]}


def pull_logged(p: Puller, ref: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mctl.agent.images"):
        p.pull(ref)
    return [r.getMessage() for r in caplog.records]


def test_every_layer_is_unpacked_while_pulling_and_not_again(store, registry, caplog):
    ref = f"{registry.address}/team/gzip:1"
    logged = pull_logged(puller(store, registry), ref, caplog)
    early = [m for m in logged if m.startswith("layer unpacked while pulling")]
    assert len(early) == 2, logged
    # The import took them: none unpacked a second time after the fetch.
    assert not [m for m in logged if m.startswith("layer unpacked archive=")], logged
    image = store.get(ref)
    assert image.layers == (ib.sha(BASE), ib.sha(TOP))
    assert (Path(store.layer_path(image.layers[1])) / "app" / "top.txt").read_text() \
        == "top layer\n"
    assert scratch_left(store) == []


@pytest.mark.parametrize("repo, layers", [("team/zstd-here:1", (BASE, TOP)),
                                          ("team/zstd-skopeo:1", SKOPEO_LAYERS)])
def test_a_zstd_image_is_pulled(store, registry, caplog, repo, layers):
    pytest.importorskip("zstandard")
    assert "application/vnd.oci.image.layer.v1.tar+zstd" in manifest_media_types(registry, repo)
    ref = f"{registry.address}/{repo}"
    logged = pull_logged(puller(store, registry), ref, caplog)
    image = store.get(ref)
    # Named by the uncompressed stream's digest, as a gzip layer is.
    assert image.layers == tuple(ib.sha(t) for t in layers)
    top = Path(store.layer_path(image.layers[1]))
    assert (top / "app" / "top.txt").read_text() == "top layer\n"
    assert (top / "app" / "noise").stat().st_size == 512 << 10
    assert len([m for m in logged if m.startswith("layer unpacked while pulling")]) == 2
    assert scratch_left(store) == []


def test_a_zstd_pull_shares_layers_with_the_gzip_image(store, registry):
    pytest.importorskip("zstandard")
    p = puller(store, registry)
    p.pull(f"{registry.address}/team/gzip:1")
    again = p.pull(f"{registry.address}/team/zstd-here:1")
    # Another blob (zstd), the same diff id: nothing new in the store.
    assert again.layers_new == 0
    assert again.image.layers == (ib.sha(BASE), ib.sha(TOP))


def test_a_hostile_layer_unpacked_while_pulling_is_refused_and_leaves_nothing(store, registry):
    ref = f"{registry.address}/team/evil:1"
    with pytest.raises(PullError, match="climbs out of the layer") as e:
        puller(store, registry).pull(ref)
    assert "\n" not in str(e.value) and "escape.txt" in str(e.value)
    assert scratch_left(store) == []
    assert [e for e in os.listdir(store.layers_dir) if not e.startswith(".")] == []
    with pytest.raises(ImageError):
        store.get(ref)


def test_without_overlap_the_pull_is_the_same(store, registry, caplog):
    p = puller(store, registry)
    p.overlap = False
    logged = pull_logged(p, f"{registry.address}/team/gzip:1", caplog)
    assert not [m for m in logged if m.startswith("layer unpacked while pulling")]
    assert len([m for m in logged if m.startswith("layer unpacked archive=")]) == 2
    assert store.get(f"{registry.address}/team/gzip:1").layers == (ib.sha(BASE), ib.sha(TOP))
