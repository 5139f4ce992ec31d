"""`mctl image import` / `mctl image ls` on a real 2-node cluster, and workloads using the image.

The image is built in the test: a static busybox in one layer with a few
files, a second (gzipped) layer deleting one of them and adding another, and
a config with Env, WorkingDir, Cmd and User. It is sent as an OCI layout
directory (tarred on the fly by the CLI) to both nodes, and as a gzipped
`docker save` archive under another name to one node; a hostile archive is
refused on every node with nothing left in their stores.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import grpc
import pytest
from conftest import Cluster  # noqa: I001 - the e2e fixtures module

from mctl.common import pki, rpc, tls
from mctl.v1 import agent_pb2, agent_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import imagebuild as ib  # noqa: E402 - tests/ helper, after the path is set

BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).is_file()), None)
APPLETS = ["sh", "cat", "ls", "id", "echo", "sleep", "pwd"]

WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: imported
spec:
  replicas: 2
  image: mctl-test/app:1.0
"""

OVERRIDE = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: override
spec:
  image: mctl-test/app:1.0
  args: ["sh", "-c", "echo args=$GREETING in $(pwd); sleep 3600"]
  env: {GREETING: from-spec}
  workingDir: /
"""


def image_spec(name: str | None) -> ib.ImageSpec:
    binary = Path(BUSYBOX).read_bytes()
    base = [ib.directory("bin"), ib.file("bin/busybox", binary, mode=0o755)]
    base += [ib.symlink(f"bin/{a}", "/bin/busybox") for a in APPLETS]
    base += [ib.directory("etc"),
             ib.file("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"),
             ib.file("etc/group", "root:x:0:\napp:x:1000:\n"),
             ib.directory("app"), ib.file("app/hello.txt", "hello from layer 1\n"),
             ib.file("app/gone.txt", "deleted by layer 2\n")]
    top = [ib.whiteout("app/gone.txt"), ib.file("app/data.txt", "from layer 2\n")]
    return ib.ImageSpec(
        layers=[ib.layer_tar(base), ib.layer_tar(top)], gzip_layers=[False, True], name=name,
        env=["PATH=/bin", "GREETING=hello-from-image"], working_dir="/app", user="app",
        cmd=["sh", "-c", "echo pwd=$(pwd) uid=$(id -u) greeting=$GREETING; ls; "
                         "cat hello.txt data.txt; sleep 3600"])


@pytest.fixture(scope="module")
def cluster(cluster_factory) -> Cluster:
    if BUSYBOX is None:
        pytest.skip("no static busybox on this host")
    return cluster_factory(2)


def logs_of(cluster: Cluster, replica: str, lines: int) -> list[str]:
    def ready() -> list[str] | None:
        out = cluster.mctl("logs", replica, check=False).stdout.splitlines()
        return out if len(out) >= lines else None
    return cluster.wait_for(f"{lines} log lines of {replica}", ready, timeout=20)


def images_by_node(cluster: Cluster) -> dict[str, dict[str, dict]]:
    items = json.loads(cluster.mctl("image", "ls", "-o", "json").stdout)["items"]
    out: dict[str, dict[str, dict]] = {}
    for item in items:
        out.setdefault(item["node"], {})[item["name"]] = item
    return out


def store_leftovers(cluster: Cluster) -> list[str]:
    found = []
    for node in ("node1", "node2"):
        images = cluster.dir / "nodes" / node / "images"
        found += [f"{node}: layers/{p.name}" for p in (images / "layers").iterdir()
                  if p.name.startswith(".tmp")]
        found += [f"{node}: tmp/{p.name}" for p in (images / "tmp").iterdir()]
    return found


def test_import_a_layout_directory_onto_every_node_and_run_it(cluster: Cluster, tmp_path):
    layout = ib.write_dir(ib.oci_layout([image_spec("mctl-test/app:1.0")]),
                          str(tmp_path / "layout"))
    t0 = time.monotonic()
    proc = cluster.mctl("image", "import", layout)
    took = time.monotonic() - t0
    pattern = re.compile(r"^(node[12]): imported mctl-test/app:1.0 \(2 layers, 2 new; "
                         r"[0-9.]+Mi\)$")
    lines = proc.stdout.splitlines()
    assert sorted(pattern.match(line).group(1) for line in lines) == ["node1", "node2"], lines
    print(f"import of a {Path(BUSYBOX).stat().st_size >> 10} KiB image onto 2 nodes: "
          f"{took:.2f}s")

    listed = images_by_node(cluster)
    for node in ("node1", "node2"):
        assert set(listed[node]) == {"busybox:latest", "mctl-test/app:1.0"}
        app = listed[node]["mctl-test/app:1.0"]
        assert len(app["layers"]) == 2
        assert app["workingDir"] == "/app" and app["user"] == "app"
    table = cluster.mctl("image", "ls").stdout.splitlines()
    assert table[0].split() == ["NODE", "IMAGE", "LAYERS", "SIZE", "CREATED"]
    assert sum("mctl-test/app:1.0" in row for row in table) == 2

    path = tmp_path / "imported.yaml"
    path.write_text(WORKLOAD)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    replicas = cluster.replicas("imported")
    assert sorted(r["node"] for r in replicas) == ["node1", "node2"]
    for r in replicas:
        out = logs_of(cluster, r["metadata"]["name"], 5)
        # WorkingDir, User and Env from the image config; Cmd as the command;
        # gone.txt deleted by the second layer's whiteout.
        assert out == ["pwd=/app uid=1000 greeting=hello-from-image", "data.txt", "hello.txt",
                       "hello from layer 1", "from layer 2"], out
    cluster.mctl("delete", "-f", str(path))


def test_import_a_docker_save_archive_under_a_name_onto_one_node(cluster: Cluster, tmp_path):
    archive = ib.write_tar(ib.docker_archive([image_spec("ignored/name:0")]),
                           str(tmp_path / "app.tar.gz"), compress=True)
    proc = cluster.mctl("image", "import", archive, "--name", "mctl-test/other:7",
                        "--node", "node2")
    (line,) = proc.stdout.splitlines()
    assert line.startswith("node2: imported mctl-test/other:7 "), line
    # The layers were there already from the first import: nothing new unpacked.
    assert "(2 layers, 0 new;" in line
    listed = images_by_node(cluster)
    assert "mctl-test/other:7" in listed["node2"]
    assert "mctl-test/other:7" not in listed["node1"]
    assert "ignored/name:0" not in listed["node2"]

    path = tmp_path / "override.yaml"
    path.write_text(OVERRIDE)
    cluster.mctl("apply", "-f", str(path), "--wait", "--timeout", "60")
    (replica,) = cluster.replicas("override")
    # args replace the image's Cmd; env and workingDir of the spec win.
    assert logs_of(cluster, replica["metadata"]["name"], 1) == ["args=from-spec in /"]
    cluster.mctl("delete", "-f", str(path))


def test_a_hostile_archive_is_refused_on_every_node(cluster: Cluster, tmp_path):
    evil = ib.layer_tar([ib.file("../../../../etc/mctl-test-evil", "pwned")])
    archive = ib.write_tar(ib.oci_layout([ib.ImageSpec(layers=[evil], name="evil/x:1")]),
                           str(tmp_path / "evil.tar"))
    proc = cluster.mctl("image", "import", archive, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    for node in ("node1", "node2"):
        line = next(x for x in lines if x.startswith(f"{node}: failed: "))
        assert ("evil.tar: index.json manifest 1: layer 1 of 1" in line
                and "member '../../../../etc/mctl-test-evil': path climbs out" in line), line
    assert lines[-1] == "mctl: import failed on 2 of 2 nodes"
    assert "Traceback" not in proc.stderr
    assert not Path("/etc/mctl-test-evil").exists()
    assert all("evil/x:1" not in images for images in images_by_node(cluster).values())
    assert store_leftovers(cluster) == []


def test_bad_input_is_one_line(cluster: Cluster, tmp_path):
    proc = cluster.mctl("image", "import", str(tmp_path / "missing.tar"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"mctl: {tmp_path / 'missing.tar'}: No such file or directory"
    proc = cluster.mctl("image", "import", str(tmp_path), "--name", "Bad Name", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("mctl: --name: 'Bad Name' is not an image reference")
    proc = cluster.mctl("image", "ls", "--node", "node9", check=False)
    assert proc.stderr.strip() == "mctl: node node9 not found"


def test_only_admins_and_the_scheduler_may_import(cluster: Cluster, tmp_path):
    d = cluster.state()["tls"]["dir"]
    node1 = tls.TLSConfig.from_files(pki.ca_paths(d)[0], *pki.leaf_paths(d, "node1"))
    nodes = json.loads(cluster.mctl("get", "nodes", "-o", "json").stdout)["items"]
    address = next(n["address"] for n in nodes if n["name"] == "node2")
    archive = ib.write_tar(ib.oci_layout([image_spec("mctl-test/sneaky:1")]),
                           str(tmp_path / "a.tar"))
    with rpc.make_channel(address, node1, pki.node_server_name("node2")) as channel:
        chunks = iter([agent_pb2.ImageChunk(filename="a.tar", data=Path(archive).read_bytes())])
        with pytest.raises(grpc.RpcError) as e:
            agent_pb2_grpc.AgentStub(channel).ImportImage(chunks, timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "agent node1 may not call /mctl.v1.Agent/ImportImage" in e.value.details()
    assert "mctl-test/sneaky:1" not in images_by_node(cluster)["node2"]
