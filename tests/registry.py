"""A real OCI registry for tests: Debian's docker-registry with TLS and htpasswd auth.

Not a test module: integration and e2e tests import it (after putting tests/
on sys.path). `Registry` runs `docker-registry serve` (distribution 2.8) on a
free port of the address it is given (loopback, or a local cluster's host
bridge address that node namespaces reach), with a server certificate from
the CA it is given and one htpasswd user; `push` fills it with `skopeo copy`
from an image archive the test built (tests/imagebuild.py). `stop` ends the
process and removes its directory; `start` brings it back on the same port
with the same data, so a test can take the registry away and return it.
`tools_missing` says whether the programs it runs are absent (the tests
skip then); `scratch_store` is an empty image store to pull into, removed
after.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from mctl.agent.images.store import ImageStore
from mctl.common import pki

USER = "puller"
PASSWORD = "correct-horse-battery"
TOOLS = ("skopeo", "docker-registry", "htpasswd")


def tools_missing() -> bool:
    """Whether skopeo, docker-registry or htpasswd (Debian's apache2-utils) is not installed."""
    return not all(shutil.which(t) for t in TOOLS)


@contextlib.contextmanager
def scratch_store() -> Iterator[ImageStore]:
    """An empty image store in a temporary directory, removed with all it holds after."""
    root = tempfile.mkdtemp(prefix="mctl-test-pullstore-")
    try:
        yield ImageStore(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def auth_json(path: str, registry: str, user: str, password: str) -> str:
    """An auth.json as skopeo and podman write it, mode 0600."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {registry: {"auth": token}}}, f)
    return path


class Registry:
    def __init__(self, ca: pki.Issued, host: str = "127.0.0.1") -> None:
        self.dir = tempfile.mkdtemp(prefix="mctl-test-registry-")
        self.host = host
        self.port = free_port(host)
        self.address = f"{host}:{self.port}"
        self.data = os.path.join(self.dir, "data")
        leaf = pki.issue(ca, "scheduler", "registry", sans=[host])
        self.ca_file = self._write("ca.crt", ca.cert_pem)
        cert = self._write("registry.crt", leaf.cert_pem + ca.cert_pem)
        key = self._write("registry.key", leaf.key_pem)
        htpasswd = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], check=True,
                                  capture_output=True, text=True).stdout
        users = self._write("htpasswd", htpasswd.encode())
        self.config = self._write("config.yml", "\n".join([
            "version: 0.1", "log:", "  level: warn",
            "storage:", "  filesystem:", f"    rootdirectory: {self.data}",
            "  delete:", "    enabled: true",
            "http:", f"  addr: {self.address}",
            "  tls:", f"    certificate: {cert}", f"    key: {key}",
            "auth:", "  htpasswd:", "    realm: mctl-test", f"    path: {users}", ""]).encode())
        self.cert_dir = os.path.join(self.dir, "certs")
        os.makedirs(self.cert_dir)
        shutil.copyfile(self.ca_file, os.path.join(self.cert_dir, "ca.crt"))
        self.auth = auth_json(os.path.join(self.dir, "auth.json"), self.address, USER, PASSWORD)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def start(self) -> None:
        log = open(os.path.join(self.dir, "registry.log"), "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not listen on {self.address}: {self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "registry.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def halt(self) -> None:
        """Stops the process (its data stays, for `start`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def push(self, archive: str, repo_tag: str) -> str:
        """Copies the one image of an OCI archive (a tar) to REPO:TAG here; returns its digest."""
        dest = f"docker://{self.address}/{repo_tag}"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-authfile", self.auth,
                        "--dest-cert-dir", self.cert_dir, f"oci-archive:{archive}", dest],
                       check=True, capture_output=True, timeout=60)
        return self.digest(repo_tag)

    def digest(self, repo_tag: str) -> str:
        out = subprocess.run(["skopeo", "inspect", "--authfile", self.auth, "--cert-dir",
                              self.cert_dir, "--format", "{{.Digest}}",
                              f"docker://{self.address}/{repo_tag}"],
                             check=True, capture_output=True, text=True, timeout=60)
        return out.stdout.strip()

    def blob_path(self, digest: str) -> str:
        """Where the registry keeps a blob on disk (distribution's filesystem layout)."""
        hexd = digest.removeprefix("sha256:")
        return os.path.join(self.data, "docker", "registry", "v2", "blobs", "sha256",
                            hexd[:2], hexd, "data")
