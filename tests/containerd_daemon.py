"""A containerd of a test's or benchmark's own, an OCI image for it, and `ctr` against it.

Used by tests/kernel/test_containerd_kernel.py and bench/containerd_run.py.
Everything is under one directory the caller owns: containerd's config,
root, state, the gRPC socket and the runtimes' --root (`ctr run
--runc-root`); the CRI plugin and the snapshotters that need extra setup
are off. The image is busybox-static as a one-layer OCI archive, imported
with `ctr images import` (no registry). The caller stops containerd by its
pid (`stop`) after removing its containers, and removes /run/containerd if
it was not there before: containerd 1.6 puts the shims' sockets there
whatever its config says.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time

from busybox_tty import add_busybox_root

from mctl.agent.runtime.oci import client as ociclient

IMAGE = "localhost/mctl-busybox:test"
NAMESPACE = "mctl-test"


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def oci_archive(path: str) -> None:
    """busybox-static as a one-layer OCI image archive (image-spec's layout in a tar)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        add_busybox_root(tar)
    layer_data = layer.getvalue()
    with tarfile.open(path, "w") as tar:
        layer_digest = _blob(tar, layer_data)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _blob(tar, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": len(layer_data)}],
        }).encode()
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _blob(tar, manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            # containerd names the imported image by this annotation.
            "annotations": {"io.containerd.image.name": IMAGE,
                            "org.opencontainers.image.ref.name": "test"},
        }]}).encode()
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", index)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class Containerd:
    """A containerd of the test's own, and `ctr` against it."""

    def __init__(self, tmp: str, cgroup_parent: str) -> None:
        self.tmp = tmp
        self.socket = f"{tmp}/containerd.sock"
        self.cgroup_parent = cgroup_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.binaries = {"mctl-runtime": ociclient.resolve("mctl-runtime"),
                         "runc": shutil.which("runc") or ""}

    def start(self) -> None:
        config = f"{self.tmp}/config.toml"
        with open(config, "w") as f:
            f.write(f'''version = 2
root = "{self.tmp}/root"
state = "{self.tmp}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.tmp}/opt"
''')
        with open(f"{self.tmp}/containerd.log", "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while self("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(f"{self.tmp}/containerd.log") as f:
                    raise AssertionError(f"containerd did not start: {f.read()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.socket, "--namespace", NAMESPACE, *args]

    def __call__(self, *args: str, check: bool = True, input: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr}")
        return proc

    def runtime_root(self, runtime: str) -> str:
        return f"{self.tmp}/{runtime}"

    def run_options(self, runtime: str, cid: str) -> list[str]:
        """ctr run's options for container `cid` under `runtime` (mctl-runtime or runc)."""
        return ["--runc-binary", self.binaries[runtime],
                "--runc-root", self.runtime_root(runtime),
                "--cgroup", f"/{self.cgroup_parent}/{cid}"]

    def remove(self, cid: str) -> None:
        self("task", "kill", "--all", "--signal", "SIGKILL", cid, check=False)
        self("task", "delete", "--force", cid, check=False)
        self("container", "delete", cid, check=False)

    def tasks(self) -> dict[str, tuple[int, str]]:
        """The task list: id -> (pid, status)."""
        out = self("task", "list").stdout.splitlines()[1:]
        return {f[0]: (int(f[1]), f[2]) for f in (line.split() for line in out)}
