"""etcd over mutual TLS: the scheduler's store gets in with its certificate, nobody else does."""

from __future__ import annotations

import uuid

import grpc
import pyetcd
import pyetcd.exceptions
import pytest

from mctl.common import pki
from mctl.scheduler.store import EtcdTLS, Store, StoreUnavailable


def store(etcd, tls: EtcdTLS | None) -> Store:
    return Store(etcd.endpoint, prefix=f"/test-{uuid.uuid4().hex[:8]}/", timeout=2, tls=tls)


def refused(etcd, tls: EtcdTLS | None) -> bool:
    s = store(etcd, tls)
    try:
        s.put(s.prefix + "probe", b"x")
    except StoreUnavailable:
        return True
    finally:
        s.close()
    return False


def test_the_client_certificate_of_etcds_ca_reads_and_writes(etcd_tls):
    s = store(etcd_tls, etcd_tls.tls)
    try:
        s.put(s.prefix + "k", b"v")
        assert s.get(s.prefix + "k")[0] == b"v"
        s.ping()
    finally:
        s.close()


def test_plain_text_is_refused(etcd_tls):
    assert refused(etcd_tls, None)


def test_a_client_without_a_certificate_is_refused(etcd_tls):
    # It trusts etcd's CA, so it would talk to etcd; it has no identity of its own.
    assert etcd_tls.tls is not None
    client = pyetcd.client(host="127.0.0.1", port=etcd_tls.port, timeout=2,
                           ca_cert=etcd_tls.tls.ca)
    try:
        with pytest.raises((pyetcd.exceptions.Etcd3Exception, grpc.RpcError)):
            client.put("/probe", b"x")
    finally:
        client.close()


def test_a_certificate_of_another_ca_is_refused(etcd_tls, tmp_path):
    assert etcd_tls.tls is not None
    # A well-formed certificate with the very same name and role, from a CA
    # etcd does not trust (another cluster's, say).
    other = str(tmp_path / "other")
    pki.init_ca_dir(other)
    cert, key = pki.issue_to_dir(other, "scheduler", "client")
    assert refused(etcd_tls, EtcdTLS(etcd_tls.tls.ca, cert, key))


def test_a_client_that_trusts_another_ca_does_not_talk_to_etcd(etcd_tls, tmp_path):
    assert etcd_tls.tls is not None
    other = str(tmp_path / "other")
    pki.init_ca_dir(other)
    assert refused(etcd_tls, EtcdTLS(pki.ca_paths(other)[0], etcd_tls.tls.cert,
                                     etcd_tls.tls.key))
