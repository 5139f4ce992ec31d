"""The agent's pull (agent/images/pull.py) against a real registry.

Debian's docker-registry runs with TLS from a CA of the test's own and
htpasswd auth (tests/registry.py), filled by skopeo from archives built
here; the puller pulls into a store in a temporary directory. Every failure
the issue names (unknown tag, wrong password, registry down, unknown CA, a
blob altered on the registry's disk) is made for real and must come out as
one line, leave nothing in the store's scratch directory, and clear once
the cause is fixed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mctl.agent.images.importer import ImageImporter
from mctl.agent.images.pull import Puller, PullError, RegistryConfig
from mctl.agent.images.store import ImageError, ImageStore
from mctl.common import pki, registryauth

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402
from registry import PASSWORD, USER, Registry, auth_json, scratch_store, tools_missing  # noqa: E402

pytestmark = pytest.mark.skipif(tools_missing(),
                                reason="needs skopeo, docker-registry and apache2-utils")

# Random, so it does not compress: a second pull that fetched it again would show.
BASE = ib.layer_tar([ib.directory("bin"), ib.file("bin/base.txt", "base layer\n"),
                     ib.file("bin/noise", os.urandom(256 << 10))])


def image(tag_text: str, extra_layers: int = 1) -> ib.ImageSpec:
    layers = [BASE] + [ib.layer_tar([ib.file(f"app/{tag_text}-{i}.txt", f"{tag_text} {i}\n")])
                       for i in range(extra_layers)]
    return ib.ImageSpec(layers=layers, name="app:1", gzip_layers=[True] * len(layers),
                        cmd=["/bin/sh"], env=[f"VERSION={tag_text}"])


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry(pki.make_ca("mctl-test-registry-ca"))
    work = tempfile.mkdtemp(prefix="mctl-test-archives-")
    try:
        for tag, spec in (("v1", image("v1")), ("v2", image("v2", 2))):
            archive = ib.write_tar(ib.oci_layout([spec]), os.path.join(work, f"{tag}.tar"))
            reg.push(archive, f"team/app:{tag}")
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def store() -> Iterator[ImageStore]:
    with scratch_store() as s:
        yield s


def puller(store: ImageStore, registry: Registry, **kw: object) -> Puller:
    config = dict(auth_file=registry.auth, ca_files=(registry.ca_file,))
    config.update(kw)
    return Puller(ImageImporter(store), RegistryConfig(**config))  # type: ignore[arg-type]


def scratch_left(store: ImageStore) -> list[str]:
    return os.listdir(os.path.join(store.root, "tmp")) + [
        e for e in os.listdir(store.layers_dir) if e.startswith(".tmp-")]


def test_pull_puts_the_image_in_the_store_with_its_defaults(store, registry):
    ref = f"{registry.address}/team/app:v1"
    pulled = puller(store, registry).pull(ref)
    image = pulled.image
    assert image.name == ref and not pulled.present and pulled.layers_new == 2
    assert pulled.fetched_bytes > 0 and pulled.elapsed_ms >= 0
    assert len(image.layers) == 2
    assert image.env == ("VERSION=v1",) and image.cmd == ("/bin/sh",)
    top = Path(store.layer_path(image.layers[-1]))
    assert (top / "app" / "v1-0.txt").read_text() == "v1 0\n"
    assert store.get(ref) == image
    assert scratch_left(store) == []


def test_a_second_image_sharing_a_layer_unpacks_only_its_new_ones(store, registry, caplog):
    p = puller(store, registry)
    first = p.pull(f"{registry.address}/team/app:v1").image
    with caplog.at_level(logging.INFO, logger="mctl.agent.images"):
        second = p.pull(f"{registry.address}/team/app:v2").image
    assert p.pull(f"{registry.address}/team/app:v2").present
    # A fresh store fetches it all, the shared layer included.
    fresh = tempfile.mkdtemp(prefix="mctl-test-pullstore-")
    try:
        whole = puller(ImageStore(fresh), registry).pull(f"{registry.address}/team/app:v2")
        assert whole.fetched_bytes > 256 << 10
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    assert first.layers[0] == second.layers[0]
    [done] = [r.getMessage() for r in caplog.records if "image pulled" in r.getMessage()]
    assert "new_layers=2" in done
    # The shared layer's blob was kept from the first pull: not fetched again.
    fetched = int(done.split("bytes=")[1].split()[0])
    assert fetched < 64 << 10, done
    assert "layer unpacked" not in " ".join(
        r.getMessage() for r in caplog.records if first.layers[0] in r.getMessage())


@pytest.mark.parametrize("tag", ["", ":v1"])
def test_a_pinned_reference_is_pulled_by_its_digest(store, registry, tag):
    digest = registry.digest("team/app:v1")
    # With its tag, as the scheduler pins it: stored under both, fetched by digest.
    ref = f"{registry.address}/team/app{tag}@{digest}"
    image = puller(store, registry).pull(ref).image
    assert image.name == ref
    assert store.get(ref).layers == image.layers


@pytest.mark.parametrize("change, expected", [
    (lambda reg, d: dict(ref_tag="team/app:nope"), "manifest unknown"),
    (lambda reg, d: dict(ref_tag="team/nothing:v1"), "unknown"),
    (lambda reg, d: dict(auth_file=auth_json(os.path.join(d, "bad.json"), reg.address, USER,
                                             "wrong")), "unauthorized"),
    (lambda reg, d: dict(auth_file=""), "unauthorized"),
    (lambda reg, d: dict(ca_files=()), "certificate signed by unknown authority"),
])
def test_failures_are_one_line_and_leave_nothing(store, registry, change, expected, tmp_path):
    kw = change(registry, str(tmp_path))
    ref = f"{registry.address}/{kw.pop('ref_tag', 'team/app:v1')}"
    with pytest.raises(PullError) as err:
        puller(store, registry, **kw).pull(ref)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert PASSWORD not in message and "wrong" not in message.replace("wrong password", "")
    assert scratch_left(store) == []
    with pytest.raises(ImageError):
        store.get(ref)


def test_an_insecure_registry_is_reached_without_verifying_its_certificate(store, registry):
    ref = f"{registry.address}/team/app:v1"
    with pytest.raises(PullError, match="unknown authority"):
        puller(store, registry, ca_files=()).pull(ref)
    p = puller(store, registry, ca_files=(), insecure=frozenset({registry.address}))
    assert p.pull(ref).image.name == ref


def test_credentials_never_reach_the_command_line(store, registry):
    p = puller(store, registry)
    argv = p._command(f"{registry.address}/team/app:v1", "/tmp/x", registry.auth)
    assert PASSWORD not in " ".join(argv)
    assert "--src-authfile" in argv and registry.auth in argv
    assert "--src-tls-verify=false" not in argv


def test_a_stopped_registry_fails_the_pull_until_it_is_back(store, registry):
    ref = f"{registry.address}/team/app:v1"
    registry.halt()
    try:
        with pytest.raises(PullError, match="connection refused"):
            puller(store, registry).pull(ref)
    finally:
        registry.start()
    assert puller(store, registry).pull(ref).image.name == ref


def test_a_blob_altered_on_the_registrys_disk_is_refused(store, tmp_path):
    # A registry of its own: the alteration must not reach the other tests.
    reg = Registry(pki.make_ca("mctl-test-registry-ca"))
    try:
        spec = image("evil")
        archive = ib.write_tar(ib.oci_layout([spec]), str(tmp_path / "evil.tar"))
        reg.push(archive, "team/evil:1")
        blob = reg.blob_path(ib.sha(ib.gz(spec.layers[-1])))
        data = bytearray(Path(blob).read_bytes())
        data[len(data) // 2] ^= 0xFF
        Path(blob).write_bytes(bytes(data))
        ref = f"{reg.address}/team/evil:1"
        with pytest.raises(PullError, match="(?i)digest"):
            puller(store, reg).pull(ref)
        assert scratch_left(store) == []
        assert [e for e in os.listdir(store.layers_dir) if not e.startswith(".")] == []
    finally:
        reg.stop()


def test_replicas_waiting_for_one_image_share_one_pull(store, registry, caplog):
    woke = threading.Event()
    p = Puller(ImageImporter(store), RegistryConfig(auth_file=registry.auth,
                                                    ca_files=(registry.ca_file,)),
               on_change=woke.set)
    ref = f"{registry.address}/team/app:v2"
    with caplog.at_level(logging.INFO, logger="mctl.agent.images.pull"):
        waits = [p.wait_for(ref) for _ in range(5)]
        assert all(w == (False, f"pulling image {ref}") for w in waits)
        deadline = time.monotonic() + 60
        while p.wait_for(ref) is not None:
            assert time.monotonic() < deadline, "the pull did not finish"
            woke.wait(1)
            woke.clear()
    pulls = [r for r in caplog.records if r.getMessage().startswith("pulling image")]
    assert len(pulls) == 1
    assert p.wait_for("busybox") is None       # not a registry's: nothing to pull


def test_a_failed_pull_backs_off_and_recovers_once_fixed(store, registry, tmp_path):
    bad = auth_json(str(tmp_path / "auth.json"), registry.address, USER, "wrong")
    woke = threading.Event()
    p = Puller(ImageImporter(store), RegistryConfig(auth_file=bad,
                                                    ca_files=(registry.ca_file,)),
               on_change=woke.set)
    ref = f"{registry.address}/team/app:v1"

    def settled() -> tuple[bool, str] | None:
        deadline = time.monotonic() + 30
        while True:
            w = p.wait_for(ref)
            if w is None or w[0]:
                return w
            assert time.monotonic() < deadline
            woke.wait(0.5)
            woke.clear()

    first = settled()
    assert first is not None and first[0] and "unauthorized" in first[1]
    assert "attempt 1; next in 1s" in first[1]
    time.sleep(1.1)
    second = settled()
    assert second is not None and "attempt 2; next in 2s" in second[1]
    # The password is fixed in the file the agent reads: the next try succeeds.
    auth_json(bad, registry.address, USER, PASSWORD)
    time.sleep(2.1)
    assert settled() is None
    assert store.get(ref).name == ref


def secret_auth(registry: Registry, password: str) -> bytes:
    return registryauth.auth_json({"username": USER.encode(), "password": password.encode()},
                                  registry.address)


def test_a_pull_secret_replaces_the_nodes_credentials_and_a_mended_one_is_tried_at_once(
        store, registry, tmp_path):
    # The node's own file is wrong: only the Secret's credentials can pull.
    bad = auth_json(str(tmp_path / "auth.json"), registry.address, USER, "wrong")
    woke = threading.Event()
    p = Puller(ImageImporter(store), RegistryConfig(auth_file=bad, ca_files=(registry.ca_file,)),
               on_change=woke.set)
    ref = f"{registry.address}/team/app:v1"

    def settled(auth: bytes) -> tuple[bool, str] | None:
        deadline = time.monotonic() + 30
        while True:
            w = p.wait_for(ref, auth)
            if w is None or w[0]:
                return w
            assert time.monotonic() < deadline
            woke.wait(0.5)
            woke.clear()

    wrong = settled(secret_auth(registry, "also-wrong"))
    assert wrong is not None and wrong[0] and "unauthorized" in wrong[1]
    assert "also-wrong" not in wrong[1]
    # The same credentials wait out their back-off; mended ones do not.
    assert p.wait_for(ref, secret_auth(registry, "also-wrong")) == wrong
    assert "attempt 1;" in wrong[1]
    # Other credentials count their failures apart: neither resets the other.
    other = settled(secret_auth(registry, "wrong-too"))
    assert other is not None and "attempt 1;" in other[1]
    time.sleep(1.1)
    again = settled(secret_auth(registry, "also-wrong"))
    assert again is not None and "attempt 2;" in again[1]
    assert settled(secret_auth(registry, PASSWORD)) is None
    assert store.get(ref).name == ref
    # The private auth.json went with the pull.
    assert scratch_left(store) == []
    done = p.progress(ref)
    assert done is not None and done.done and done.bytes > 0 and done.elapsed_ms > 0


def test_progress_shows_bytes_and_the_total_while_pulling(store, registry):
    p = puller(store, registry)
    ref = f"{registry.address}/team/app:v2"
    seen = []
    worker = threading.Thread(target=p.pull, args=(ref,))
    worker.start()
    while worker.is_alive():
        progress = p.progress(ref)
        if progress is not None and not progress.done:
            seen.append(progress)
        time.sleep(0.02)
    worker.join()
    assert seen, "no progress while pulling"
    done = p.progress(ref)
    assert done is not None and done.done and done.bytes == done.total
    assert all(0 <= s.bytes for s in seen) and seen[-1].elapsed_ms <= done.elapsed_ms
    # The total comes from the registry's manifest: the layers' compressed sizes.
    totals = {s.total for s in seen if s.total}
    assert all(t >= 256 << 10 for t in totals)
    p.retain([])
    assert p.progress(ref) is None
