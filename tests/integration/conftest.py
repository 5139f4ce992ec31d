"""A real etcd per test module, on free loopback ports with a temporary data dir.

`etcd` speaks plain text; `etcd_tls` speaks mutual TLS only, as a local
cluster's does: a CA of its own, a server certificate for 127.0.0.1 and one
client certificate (`Etcd.tls`) for the stores under test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from mctl.common import pki
from mctl.scheduler.store import EtcdTLS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    def __init__(self, tls: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="mctl-test-etcd-")
        self.port = free_port()
        scheme = "https" if tls else "http"
        peer = f"{scheme}://127.0.0.1:{free_port()}"
        client = f"{scheme}://127.0.0.1:{self.port}"
        argv = ["etcd", "--name", "t", "--data-dir", f"{self.dir}/data",
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}"]
        self.tls: EtcdTLS | None = None
        if tls:
            pki_dir = f"{self.dir}/pki"
            pki.init_ca_dir(pki_dir)
            ca = pki.ca_paths(pki_dir)[0]
            cert, key = pki.issue_to_dir(pki_dir, "scheduler", "etcd", ("127.0.0.1",))
            argv += ["--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert,
                     "--key-file", key, "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
                     "--peer-cert-file", cert, "--peer-key-file", key]
            self.tls = EtcdTLS(ca, *pki.issue_to_dir(pki_dir, "scheduler", "client"))
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.close()
        raise RuntimeError("etcd did not start")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian: etcd-server)")
    e = Etcd()
    yield e
    e.close()


@pytest.fixture(scope="module")
def etcd_tls() -> Iterator[Etcd]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian: etcd-server)")
    e = Etcd(tls=True)
    yield e
    e.close()
