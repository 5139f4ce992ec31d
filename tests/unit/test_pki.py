"""The cluster CA and role certificates: subjects, names, lifetimes, verification, files."""

from __future__ import annotations

import datetime
import os
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mctl.common import pki

DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca()


def cert_of(issued: pki.Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_pem)


def lifetime(cert: x509.Certificate) -> datetime.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def test_ca_is_a_ten_year_ca_with_a_name_of_its_own(ca):
    cert = cert_of(ca)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert abs(lifetime(cert) - pki.CA_DAYS * DAY - pki.BACKDATE) < datetime.timedelta(minutes=1)
    assert cert.subject == cert.issuer
    other = cert_of(pki.make_ca())
    assert other.subject != cert.subject


@pytest.mark.parametrize("role,name,expected_name,expected_dns", [
    ("scheduler", "", "scheduler", ["mctl-scheduler"]),
    ("scheduler", "sched-b", "sched-b", ["mctl-scheduler"]),
    ("agent", "node1", "node1", ["node1.node.mctl"]),
    ("admin", "", "admin", []),
    ("admin", "alice", "alice", []),
])
def test_roles_are_written_into_the_subject_and_names(ca, role, name, expected_name,
                                                        expected_dns):
    cert = cert_of(pki.issue(ca, role, name))
    assert pki.identity_of(cert) == pki.Identity(role, expected_name)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value \
        == f"mctl:{role}"
    assert pki.sans_of(cert) == expected_dns
    assert cert.issuer == cert_of(ca).subject
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_admins_only_dial_while_schedulers_and_agents_also_serve(ca):
    def usages(role: str, name: str = "") -> set:
        cert = cert_of(pki.issue(ca, role, name))
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    both = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages("scheduler") == both
    assert usages("agent", "n1") == both
    assert usages("admin") == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_given_addresses_and_hostnames_become_sans(ca):
    cert = cert_of(pki.issue(ca, "agent", "node7", ["10.0.0.7", "Node7.Example.com.",
                                                    "fd00::7", "10.0.0.7"]))
    assert pki.sans_of(cert) == ["node7.node.mctl", "node7.example.com", "10.0.0.7", "fd00::7"]


@pytest.mark.parametrize("sans,problem", [
    (["mctl-scheduler"], "reserved"),
    (["node2.node.mctl"], "reserved"),
    (["x.MCTL"], "reserved"),
    (["bad_name.example"], "neither an IP address nor a DNS name"),
    (["10.0.0.300"], "neither an IP address nor a DNS name"),
])
def test_role_names_cannot_be_claimed_through_extra_sans(ca, sans, problem):
    with pytest.raises(pki.PKIError, match=problem):
        pki.issue(ca, "agent", "node1", sans)


@pytest.mark.parametrize("role,name,problem", [
    ("root", "x", "role 'root': must be one of scheduler, agent, admin"),
    ("agent", "", "needs --name NODE"),
    ("agent", "Node_1", "name 'Node_1'"),
])
def test_bad_requests_are_refused_with_the_reason(ca, role, name, problem):
    with pytest.raises(pki.PKIError, match=problem):
        pki.issue(ca, role, name)


def test_leaves_live_a_year_and_never_past_their_ca():
    ca = pki.make_ca(days=30)
    leaf = cert_of(pki.issue(ca, "admin"))
    assert leaf.not_valid_after_utc == cert_of(ca).not_valid_after_utc
    long_ca = pki.make_ca()
    leaf = cert_of(pki.issue(long_ca, "admin"))
    assert abs(lifetime(leaf) - pki.LEAF_DAYS * DAY - pki.BACKDATE) < datetime.timedelta(minutes=1)
    short = cert_of(pki.issue(long_ca, "admin", days=2))
    assert abs(lifetime(short) - 2 * DAY - pki.BACKDATE) < datetime.timedelta(minutes=1)


def test_verify_accepts_the_ca_own_certificates_and_names_the_holder(ca):
    leaf = pki.issue(ca, "agent", "node3")
    assert pki.verify(leaf.cert_pem, ca.cert_pem) == pki.Identity("agent", "node3")


def test_a_certificate_from_another_ca_is_rejected(ca):
    stranger = pki.issue(pki.make_ca(), "admin")
    with pytest.raises(pki.PKIError, match="not signed by the cluster CA: issuer"):
        pki.verify(stranger.cert_pem, ca.cert_pem)


def test_another_ca_with_the_same_name_is_caught_by_the_signature():
    ours, theirs = pki.make_ca("mctl-ca-same"), pki.make_ca("mctl-ca-same")
    forged = pki.issue(theirs, "admin")
    with pytest.raises(pki.PKIError, match="bad signature"):
        pki.verify(forged.cert_pem, ours.cert_pem)


def test_expired_and_not_yet_valid_certificates_are_rejected(ca):
    leaf = pki.issue(ca, "admin", days=1)
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(pki.PKIError, match="expired on"):
        pki.verify(leaf.cert_pem, ca.cert_pem, now=now + 2 * DAY)
    with pytest.raises(pki.PKIError, match="not valid before"):
        pki.verify(leaf.cert_pem, ca.cert_pem, now=now - DAY)


def test_a_ca_signed_certificate_without_a_role_is_rejected(ca):
    # The CA's own certificate is signed by the CA but names no role.
    with pytest.raises(pki.PKIError, match="names no mctl role"):
        pki.verify(ca.cert_pem, ca.cert_pem)


def test_garbage_is_one_clear_error():
    with pytest.raises(pki.PKIError, match="certificate: not a PEM certificate"):
        pki.verify(b"hello", pki.make_ca().cert_pem)
    with pytest.raises(pki.PKIError, match="k.pem: not an unencrypted PEM private key"):
        pki.load_key(b"nope", "k.pem")


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_keys_are_private_and_nothing_is_overwritten_by_accident(tmp_path):
    d = str(tmp_path / "pki")
    pki.init_ca_dir(d)
    ca_cert, ca_key = pki.ca_paths(d)
    assert mode(d) == 0o700
    assert mode(ca_key) == 0o600 and mode(ca_cert) == 0o644
    with pytest.raises(pki.PKIError, match="ca.crt exists; pass --force"):
        pki.init_ca_dir(d)

    cert, key = pki.issue_to_dir(d, "agent", "node1", ["10.1.2.3"])
    assert (cert, key) == pki.leaf_paths(d, "node1")
    assert mode(key) == 0o600 and mode(cert) == 0o644
    with open(cert, "rb") as f:
        first = f.read()
    assert pki.verify(first, pki.load_ca_dir(d).cert_pem) == pki.Identity("agent", "node1")
    with pytest.raises(pki.PKIError, match="node1.crt exists; pass --force"):
        pki.issue_to_dir(d, "agent", "node1")
    pki.issue_to_dir(d, "agent", "node1", force=True)
    with open(cert, "rb") as f:
        assert f.read() != first
    assert sorted(os.listdir(d)) == ["ca.crt", "ca.key", "node1.crt", "node1.key"]


def test_issuing_without_a_ca_names_the_missing_file(tmp_path):
    with pytest.raises(pki.PKIError, match=r"ca.crt: cannot read the CA certificate"):
        pki.issue_to_dir(str(tmp_path), "admin")
