"""Workloads whose image comes from a registry, on a real 3-node local cluster.

Debian's docker-registry runs on the cluster's host bridge address (the
nodes reach it from their namespaces) with a certificate from the cluster
CA and htpasswd auth (tests/registry.py); skopeo fills it from archives
built here. The agents are given an auth.json with `cluster up
--registry-auth`, which the tests rewrite to break and mend the password.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Cluster  # noqa: I001 - the e2e fixtures module

from mctl.common import pki

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set
from registry import PASSWORD, USER, Registry, auth_json, tools_missing  # noqa: E402

BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).is_file()), None)
NODES = ("node1", "node2", "node3")

pytestmark = pytest.mark.skipif(
    tools_missing() or not BUSYBOX,
    reason="needs skopeo, docker-registry, apache2-utils and busybox-static")


def image_spec(version: str) -> ib.ImageSpec:
    binary = Path(BUSYBOX or "").read_bytes()
    base = [ib.directory("bin"), ib.file("bin/busybox", binary, mode=0o755)]
    base += [ib.symlink(f"bin/{a}", "/bin/busybox") for a in ("sh", "cat", "sleep", "echo")]
    top = [ib.directory("app"), ib.file("app/version", f"{version}\n")]
    return ib.ImageSpec(layers=[ib.layer_tar(base), ib.layer_tar(top)], gzip_layers=[True, True],
                        name="app:1", env=["PATH=/bin"],
                        cmd=["sh", "-c", "echo version=$(cat /app/version); sleep 3600"])


class Setup:
    def __init__(self, cluster: Cluster, registry: Registry, auth: str, work: Path) -> None:
        self.cluster = cluster
        self.registry = registry
        self.auth = auth
        self.work = work

    def push(self, version: str, repo_tag: str) -> str:
        archive = ib.write_tar(ib.oci_layout([image_spec(version)]),
                               str(self.work / f"{version}.tar"))
        return self.registry.push(archive, repo_tag)

    def apply(self, name: str, image: str, replicas: int = 1, policy: str = "",
              wait: bool = True, pull_secret: str = "", spread: bool = True) -> None:
        text = (f"apiVersion: mctl/v1\nkind: Workload\nmetadata: {{name: {name}}}\n"
                f"spec:\n  replicas: {replicas}\n  image: {image}\n")
        if policy:
            text += f"  imagePullPolicy: {policy}\n"
        if pull_secret:
            text += f"  imagePullSecret: {pull_secret}\n"
        if not spread:
            text += "  spread: false\n"
        path = self.work / f"{name}.yaml"
        path.write_text(text)
        args = ["apply", "-f", str(path)] + (["--wait", "--timeout", "90"] if wait else [])
        self.cluster.mctl(*args)

    def secret(self, name: str, user: str, password: str) -> None:
        path = self.work / f"secret-{name}.yaml"
        path.write_text(f"apiVersion: mctl/v1\nkind: Secret\nmetadata: {{name: {name}}}\n"
                        f"data: {{username: {user}, password: {password}}}\n")
        self.cluster.mctl("apply", "-f", str(path))

    def delete(self, name: str) -> None:
        self.cluster.mctl("delete", "workload", name)

    def versions(self, name: str) -> dict[str, str]:
        """replica -> the version its log printed."""
        out = {}
        for r in self.cluster.replicas(name):
            replica = r["metadata"]["name"]
            lines = self.cluster.wait_for(
                f"the log of {replica}",
                lambda replica=replica: self.cluster.mctl("logs", replica,
                                                         check=False).stdout.split(),
                timeout=30)
            out[replica] = lines[0]
        return out

    def waiting_reason(self, name: str, contains: str, timeout: float = 60) -> dict:
        def found() -> dict | None:
            for r in self.cluster.replicas(name):
                st = r.get("status", {})
                if st.get("reason") == "ImagePullError" and contains in st.get("message", ""):
                    return r
            return None
        return self.cluster.wait_for(f"ImagePullError with {contains!r}", found, timeout)

    def running(self, name: str, count: int, timeout: float = 60) -> list[dict]:
        def ok() -> list[dict] | None:
            rs = self.cluster.replicas(name)
            up = [r for r in rs if r.get("status", {}).get("phase") == "Running"]
            return up if len(up) == count else None
        return self.cluster.wait_for(f"{count} running replicas of {name}", ok, timeout)


def serve(cluster_factory: Callable[..., Cluster], work: Path, nodes: int,
          *flags: str) -> Iterator[Setup]:
    """A cluster of `nodes` (`cluster up` given `flags` too) and a registry its agents pull
    from with auth.json, for as long as the generator runs (a fixture yields from it)."""
    # The agents read the file at every pull: written properly once the
    # registry's address is known.
    auth = str(work / "auth.json")
    auth_json(auth, "placeholder:1", USER, PASSWORD)
    cluster = cluster_factory(nodes, "--registry-auth", auth, *flags)
    state = cluster.state()
    registry = Registry(pki.load_ca_dir(state["tls"]["dir"]), host=state["network"]["host_ip"])
    try:
        auth_json(auth, registry.address, USER, PASSWORD)
        yield Setup(cluster, registry, auth, work)
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def setup(cluster_factory, tmp_path_factory) -> Iterator[Setup]:
    yield from serve(cluster_factory, tmp_path_factory.mktemp("registry-e2e"), 3)


def test_a_workload_from_the_registry_runs_on_every_node(setup: Setup):
    digest = setup.push("v1", "team/app:v1")
    image = f"{setup.registry.address}/team/app:v1"
    setup.apply("web", image, replicas=3)
    replicas = setup.running("web", 3)
    assert sorted(r["node"] for r in replicas) == list(NODES)
    assert set(setup.versions("web").values()) == {"version=v1"}
    described = setup.cluster.mctl("describe", "workload", "web").stdout
    assert f"{image} (pinned to {digest})" in described


def test_a_moved_tag_leaves_running_replicas_alone_unless_always(setup: Setup):
    first = setup.push("v1", "team/app:moving")
    image = f"{setup.registry.address}/team/app:moving"
    setup.apply("moving", image, replicas=2)
    before = {r["metadata"]["name"] for r in setup.running("moving", 2)}
    moved = setup.push("v2", "team/app:moving")
    assert moved != first
    setup.apply("moving", image, replicas=2)          # the same file: unchanged
    time.sleep(2)
    assert {r["metadata"]["name"] for r in setup.running("moving", 2)} == before
    assert set(setup.versions("moving").values()) == {"version=v1"}
    # Always: the tag is resolved again, and the new digest rolls.
    setup.apply("moving", image, replicas=2, policy="Always")

    def rolled() -> bool:
        rs = setup.running("moving", 2)
        return not ({r["metadata"]["name"] for r in rs} & before)
    setup.cluster.wait_for("the roll to v2", rolled, timeout=90)
    assert set(setup.versions("moving").values()) == {"version=v2"}
    setup.delete("moving")


def test_a_missing_tag_is_explained_and_recovers_once_pushed(setup: Setup):
    image = f"{setup.registry.address}/team/app:later"
    setup.apply("later", image, wait=False)
    r = setup.waiting_reason("later", "manifest unknown")
    assert r["status"]["phase"] == "Pending"
    replica = r["metadata"]["name"]
    setup.cluster.wait_for("the ImagePullError event", lambda: "image pull failed on node" in
                           setup.cluster.mctl("describe", "replica", replica).stdout)
    setup.push("v3", "team/app:later")
    setup.running("later", 1, timeout=90)
    assert set(setup.versions("later").values()) == {"version=v3"}
    setup.delete("later")


def test_a_wrong_password_is_explained_and_recovers_once_mended(setup: Setup):
    setup.push("v4", "team/app:secret")
    auth_json(setup.auth, setup.registry.address, USER, "wrong-password")
    try:
        setup.apply("secret", f"{setup.registry.address}/team/app:secret", wait=False)
        r = setup.waiting_reason("secret", "unauthorized")
        described = setup.cluster.mctl("describe", "replica", r["metadata"]["name"]).stdout
        assert "wrong-password" not in described and PASSWORD not in described
    finally:
        auth_json(setup.auth, setup.registry.address, USER, PASSWORD)
    setup.running("secret", 1, timeout=90)
    setup.delete("secret")


def test_a_stopped_registry_is_explained_and_recovers_once_back(setup: Setup):
    setup.push("v5", "team/app:down")
    image = f"{setup.registry.address}/team/app:down"
    digest = setup.registry.digest("team/app:down")
    setup.registry.halt()
    try:
        # Pinned by hand: the scheduler could not resolve the tag either.
        setup.apply("down", f"{image}@{digest}", wait=False)
        setup.waiting_reason("down", "connection refused")
    finally:
        setup.registry.start()
    setup.running("down", 1, timeout=90)
    setup.delete("down")


def test_a_blob_altered_on_the_registrys_disk_is_refused(setup: Setup):
    spec = image_spec("evil")
    archive = ib.write_tar(ib.oci_layout([spec]), str(setup.work / "evil.tar"))
    setup.registry.push(archive, "team/evil:1")
    blob = Path(setup.registry.blob_path(ib.sha(ib.gz(spec.layers[-1]))))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    setup.apply("evil", f"{setup.registry.address}/team/evil:1", wait=False)
    setup.waiting_reason("evil", "igest")
    setup.delete("evil")
    for node in NODES:
        images = setup.cluster.dir / "nodes" / node / "images"
        assert list((images / "tmp").iterdir()) == []
        assert not [p for p in (images / "layers").iterdir() if p.name.startswith(".tmp")]
        assert not any("evil" in p.name for p in (images / "images").iterdir())
    assert os.path.exists(blob)


def test_image_pull_ls_and_rm(setup: Setup):
    cluster = setup.cluster
    setup.push("v6", "team/app:ahead")
    ref = f"{setup.registry.address}/team/app:ahead"
    out = cluster.mctl("image", "pull", ref).stdout.splitlines()
    assert sorted(line.split(":")[0] for line in out) == list(NODES), out
    assert all(f"pulled {ref} (2 layers" in line for line in out), out
    again = cluster.mctl("image", "pull", ref, "--node", "node2").stdout
    assert again.strip() == f"node2: {ref} is already present"
    bad = cluster.mctl("image", "pull", "team/app:1", check=False)
    assert bad.returncode != 0 and "names no registry host" in bad.stderr

    # web (the first test) runs its pinned digest on every node.
    web_digest = setup.registry.digest("team/app:v1")
    table = cluster.mctl("image", "ls").stdout.splitlines()
    assert table[0].split() == ["NODE", "IMAGE", "LAYERS", "SIZE", "CREATED", "DIGEST"]
    rows = [row.split() for row in table]
    pinned_rows = [r for r in rows if r[1] == f"{setup.registry.address}/team/app:v1"]
    assert sorted(r[0] for r in pinned_rows) == list(NODES)
    assert all(r[-1] == web_digest for r in pinned_rows)
    assert all(r[-1] == "-" for r in rows if r[1] == ref)      # pulled by its tag

    refused = cluster.mctl("image", "rm", f"{setup.registry.address}/team/app:v1@{web_digest}",
                           check=False)
    assert refused.returncode != 0 and "is used by replica web-" in refused.stderr
    removed = cluster.mctl("image", "rm", ref).stdout.splitlines()
    assert sorted(line.split(":")[0] for line in removed) == list(NODES)
    # Its top layer is its own; the busybox layer is shared with web's image and stays.
    assert all("(1 layers" in line for line in removed), removed
    listed = cluster.mctl("image", "ls").stdout
    assert ref not in listed
    gone = cluster.mctl("image", "rm", ref, check=False)
    assert gone.returncode != 0 and "on none of the nodes" in gone.stderr


def test_a_pull_secret_with_a_wrong_password_is_explained_and_recovers_once_mended(setup: Setup):
    setup.push("v7", "team/app:private")
    image = f"{setup.registry.address}/team/app:private"
    # The agents' own --registry-auth is right: the Secret replaces it for this workload.
    setup.secret("reg-login", USER, "not-the-password")
    refused = setup.cluster.mctl("apply", "-f", "-", check=False, input=(
        f"apiVersion: mctl/v1\nkind: Workload\nmetadata: {{name: nosecret}}\n"
        f"spec:\n  image: {image}\n  imagePullSecret: missing\n"))
    assert refused.returncode != 0
    assert 'spec.imagePullSecret: secret "missing" does not exist' in refused.stderr
    setup.apply("private", image, wait=False, pull_secret="reg-login")
    r = setup.waiting_reason("private", "unauthorized")
    replica = r["metadata"]["name"]
    described = setup.cluster.mctl("describe", "replica", replica).stdout
    events = setup.cluster.mctl("events").stdout
    for text in (described, events, str(r)):
        assert "not-the-password" not in text and PASSWORD not in text
    # A Secret in use cannot go.
    busy = setup.cluster.mctl("delete", "secret", "reg-login", check=False)
    assert busy.returncode != 0 and "private" in busy.stderr
    # Mended: the waiting replica is not replaced (a password rolls nothing);
    # its node tries the new credentials at once, whatever its back-off.
    setup.secret("reg-login", USER, PASSWORD)
    (running,) = setup.running("private", 1, timeout=60)
    assert running["metadata"]["name"] == replica
    assert set(setup.versions("private").values()) == {"version=v7"}
    shown = setup.cluster.mctl("describe", "replica", replica).stdout
    assert "Image pull:" in shown and "pulled " in shown, shown
    setup.delete("private")
    setup.cluster.wait_for("private gone", lambda: not setup.cluster.replicas("private"))
    setup.cluster.mctl("delete", "secret", "reg-login")


def test_a_scale_up_lands_where_the_image_already_is(setup: Setup):
    setup.push("v8", "team/app:local")
    image = f"{setup.registry.address}/team/app:local"
    setup.apply("first", image)
    (first,) = setup.running("first", 1)
    holder = first["node"]
    # Another workload of the same image (the same pinned digest): nothing
    # else tells the nodes apart, so it goes where the image is; scaled up
    # without spreading, it stays there while the node has room.
    setup.apply("second", image, replicas=1, spread=False)
    assert [r["node"] for r in setup.running("second", 1)] == [holder]
    setup.apply("second", image, replicas=3, spread=False)
    assert {r["node"] for r in setup.running("second", 3)} == {holder}
    setup.delete("second")
    setup.delete("first")
