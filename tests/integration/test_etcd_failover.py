"""The store on a 3-member etcd: the member in use dies and no caller notices."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import free_port

from mctl.scheduler.store import Store, StoreUnavailable, parse_endpoints


class EtcdCluster:
    """Three plain-text members on loopback, each a process with its own data dir."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mctl-test-etcd3-")
        self.ports = [free_port() for _ in range(3)]
        peers = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
        cluster = ",".join(f"m{i}={peer}" for i, peer in enumerate(peers))
        self.procs = [subprocess.Popen(
            ["etcd", "--name", f"m{i}", "--data-dir", f"{self.dir}/m{i}",
             "--listen-client-urls", f"http://127.0.0.1:{port}",
             "--advertise-client-urls", f"http://127.0.0.1:{port}",
             "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
             "--initial-cluster", cluster, "--initial-cluster-token", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, port in enumerate(self.ports)]
        probe = Store(self.endpoints, timeout=2)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    probe.ping()
                    break
                except StoreUnavailable:
                    if time.monotonic() > deadline:
                        self.close()
                        raise RuntimeError("the 3-member etcd did not form") from None
                    time.sleep(0.2)
        finally:
            probe.close()

    @property
    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd3() -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian: etcd-server)")
    c = EtcdCluster()
    yield c
    c.close()


def test_endpoints_parse_and_a_bad_one_is_named():
    assert parse_endpoints("127.0.0.1:1,:2, h:3") == [("127.0.0.1", 1), ("127.0.0.1", 2),
                                                      ("h", 3)]
    with pytest.raises(ValueError, match="'h:x'"):
        parse_endpoints("127.0.0.1:1,h:x")


def test_the_member_in_use_dies_and_reads_and_writes_go_on(etcd3: EtcdCluster):
    # The scheduler's default timeout (5 s): if the member killed leads the
    # raft group, writes wait for the next leader (about a second) and must
    # not time out meanwhile.
    store = Store(etcd3.endpoints, prefix=f"/test-{uuid.uuid4().hex[:8]}/")
    try:
        store.put(store.prefix + "k", b"1")
        # Kill whichever member the store talks to now: the worst case.
        in_use = store.client.endpoint_in_use.netloc
        victim = etcd3.procs[[f"127.0.0.1:{p}" for p in etcd3.ports].index(in_use)]
        victim.kill()
        victim.wait()
        # The call that finds the member gone is tried again on another.
        # If the dead member led the raft group, a call that reached a
        # follower while it still forwarded to the old leader can wait out
        # its whole timeout (etcd does not answer it when the new leader is
        # elected, or answers "etcdserver: request timed out" at the
        # deadline); it is not retried (it may have been applied), so at most
        # that one call fails, as a timeout. Every call after it succeeds.
        timed_out = 0
        for i in range(20):
            try:
                store.put(store.prefix + "k", str(i).encode())
            except StoreUnavailable as e:
                assert "timeout" in str(e) and i == 0 and not timed_out, e
                timed_out += 1
                store.put(store.prefix + "k", str(i).encode())
            assert store.get(store.prefix + "k")[0] == str(i).encode()
            assert store.snapshot().revision > 0
        assert store.client.endpoint_in_use.netloc != in_use
    finally:
        store.close()


def test_a_lone_member_is_never_shunned(etcd3: EtcdCluster):
    # One endpoint: a failure is reported, and the next call tries the same
    # member again at once (no five-minute shunning).
    store = Store("127.0.0.1:1", timeout=1)
    try:
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                store.get("/x")
        assert store.members == 1
        assert not store.client.endpoint_in_use.is_failed()
    finally:
        store.close()
