"""Tags pinned to digests on apply (scheduler/imagepin.py), against a real registry.

The registry (tests/registry.py) holds a tag that the test moves with
`skopeo copy`; the resolver must give the digest the registry serves, and
`pins` must keep a stored digest for an unchanged spec unless
imagePullPolicy is Always.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mctl.common import pki, registryauth
from mctl.scheduler import imagepin
from mctl.v1 import types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402
from registry import PASSWORD, USER, Registry, auth_json  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("skopeo") and shutil.which("docker-registry")
                                     and shutil.which("htpasswd")),
                                reason="needs skopeo, docker-registry and apache2-utils")


def archive(directory: str, text: str) -> str:
    spec = ib.ImageSpec(layers=[ib.layer_tar([ib.file("v.txt", text)])], name="app:1",
                        gzip_layers=[True])
    return ib.write_tar(ib.oci_layout([spec]), os.path.join(directory, f"{text}.tar"))


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[Registry, str]]:
    reg = Registry(pki.make_ca("mctl-test-pin-ca"))
    work = tempfile.mkdtemp(prefix="mctl-test-pin-")
    try:
        reg.push(archive(work, "one"), "team/app:stable")
        yield reg, work
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def resolver(registry) -> Iterator[imagepin.Resolver]:
    reg, _ = registry
    before = set(os.listdir(tempfile.gettempdir()))
    yield imagepin.Resolver(imagepin.PinConfig(auth_file=reg.auth, ca_files=(reg.ca_file,)))
    left = set(os.listdir(tempfile.gettempdir())) - before
    # The per-call directory (certificates, and credentials from a Secret).
    assert not [n for n in left if n.startswith("mctl-registry-")]


def workload(image: str, policy: str = "", env: str = "") -> types_pb2.Workload:
    w = types_pb2.Workload()
    w.metadata.namespace, w.metadata.name = "default", "web"
    w.spec.image = image
    w.spec.image_pull_policy = policy
    if env:
        w.spec.env.add(name="X", value=env)
    return w


def stored(w: types_pb2.Workload, digest: str) -> dict[tuple[str, str], types_pb2.Workload]:
    old = types_pb2.Workload()
    old.CopyFrom(w)
    old.spec.image_digest = digest
    return {("default", "web"): old}


def test_the_digest_is_the_registrys(registry, resolver):
    reg, _ = registry
    assert resolver.resolve(f"{reg.address}/team/app:stable") == reg.digest("team/app:stable")


def test_a_moved_tag_changes_nothing_unless_the_policy_is_always(registry, resolver):
    reg, work = registry
    image = f"{reg.address}/team/app:stable"
    first = imagepin.pins(resolver, [workload(image)], {})[("default", "web")]
    assert first == reg.digest("team/app:stable")
    moved = reg.push(archive(work, "two"), "team/app:stable")
    assert moved != first
    # The same file applied again: the stored digest stays, without asking.
    assert imagepin.pins(resolver, [workload(image)],
                         stored(workload(image), first)) == {("default", "web"): first}
    # A scale is no new revision either.
    scaled = workload(image)
    scaled.spec.replicas = 5
    assert imagepin.pins(resolver, [scaled], stored(workload(image), first))[
        ("default", "web")] == first
    # Always asks again; so does any other change of the spec.
    assert imagepin.pins(resolver, [workload(image, "Always")],
                         stored(workload(image, "Always"), first))[("default", "web")] == moved
    assert imagepin.pins(resolver, [workload(image, env="new")],
                         stored(workload(image), first))[("default", "web")] == moved


def test_an_unreachable_registry_leaves_the_workload_unpinned(registry, tmp_path):
    reg, _ = registry
    r = imagepin.Resolver(imagepin.PinConfig(ca_files=()))   # no CA, no credentials
    with pytest.raises(imagepin.PinError, match="unknown authority"):
        r.resolve(f"{reg.address}/team/app:stable")
    image = f"{reg.address}/team/app:stable"
    assert imagepin.pins(r, [workload(image)], {}) == {("default", "web"): ""}
    # Stored unpinned: the next apply asks again rather than keep "".
    assert imagepin.reuse(workload(image).spec, workload(image).spec) is None


def test_local_and_pinned_images_are_not_resolved():
    for image in ("busybox", "team/app:1", "reg.local/app@sha256:" + "a" * 64):
        assert imagepin.reuse(workload(image).spec, None) == ""
    assert imagepin.pins(None, [workload("busybox")], {}) == {("default", "web"): ""}


def test_a_pull_secret_is_used_instead_of_the_schedulers_credentials(registry, tmp_path):
    reg, _ = registry
    wrong = auth_json(str(tmp_path / "auth.json"), reg.address, USER, "wrong")
    before = set(os.listdir(tempfile.gettempdir()))
    resolver = imagepin.Resolver(imagepin.PinConfig(auth_file=wrong, ca_files=(reg.ca_file,)))
    ref = f"{reg.address}/team/app:stable"
    with pytest.raises(imagepin.PinError, match="unauthorized"):
        resolver.resolve(ref)
    good = registryauth.auth_json({"username": USER.encode(), "password": PASSWORD.encode()},
                                  reg.address)
    assert resolver.resolve(ref, good) == reg.digest("team/app:stable")
    bad = registryauth.auth_json({"username": USER.encode(), "password": b"nope"}, reg.address)
    with pytest.raises(imagepin.PinError, match="unauthorized") as e:
        resolver.resolve(ref, bad)
    assert "nope" not in str(e.value)
    w = workload(ref)
    w.spec.image_pull_secret = "creds"
    secret = types_pb2.Secret(data={"username": USER.encode(), "password": PASSWORD.encode()})
    pins = imagepin.pins(resolver, [w], {}, lambda ns, name: secret)
    assert pins == {("default", "web"): reg.digest("team/app:stable")}
    left = set(os.listdir(tempfile.gettempdir())) - before
    assert not [n for n in left if n.startswith("mctl-registry-")]
