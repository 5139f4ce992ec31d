"""Reading who a certificate names without `cryptography`, and checking TLS files in a child.

certname.py's DER reader must give the same answer as pki.identity_of over
cryptography's parser for every certificate a cluster can hold, and refuse
anything it cannot read; tls.py's isolated check must give the same
identities and the same one-line errors as the in-process one while the
calling process never imports `cryptography`. The agent's own imports are
checked too: neither pyroute2 nor cryptography.
"""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.common import certname, pki, tls


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca()


def both(pem: bytes) -> tuple[pki.Identity | None, pki.Identity | None]:
    """(the DER reader's answer, cryptography's answer) for one certificate."""
    return pki.identity_of_pem(pem), pki.identity_of(x509.load_pem_x509_certificate(pem))


def custom(attrs: list[x509.NameAttribute] | list[x509.RelativeDistinguishedName]) -> bytes:
    """A self-signed certificate with exactly this subject."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attrs)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


CN, ORG, OU = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME


@pytest.mark.parametrize(("role", "name"), [("scheduler", ""), ("scheduler", "sched-b"),
                                            ("agent", "node1"), ("admin", "alice")])
def test_issued_certificates_read_the_same(ca, role, name):
    pem = pki.issue(ca, role, name).cert_pem
    mine, theirs = both(pem)
    assert mine == theirs == pki.Identity(role, name or role)


def test_a_ca_names_no_role(ca):
    assert both(ca.cert_pem) == (None, None)


@pytest.mark.parametrize(("attrs", "expected"), [
    ([x509.NameAttribute(CN, "n1"), x509.NameAttribute(ORG, "mctl:agent")],
     pki.Identity("agent", "n1")),
    # Other attributes around them change nothing.
    ([x509.NameAttribute(OU, "ops"), x509.NameAttribute(ORG, "acme"),
      x509.NameAttribute(ORG, "mctl:admin"), x509.NameAttribute(CN, "bob")],
     pki.Identity("admin", "bob")),
    # Two CNs, two roles, no CN, an unknown role: no identity.
    ([x509.NameAttribute(CN, "a"), x509.NameAttribute(CN, "b"),
      x509.NameAttribute(ORG, "mctl:admin")], None),
    ([x509.NameAttribute(CN, "a"), x509.NameAttribute(ORG, "mctl:admin"),
      x509.NameAttribute(ORG, "mctl:scheduler")], None),
    ([x509.NameAttribute(ORG, "mctl:admin")], None),
    ([x509.NameAttribute(CN, "a"), x509.NameAttribute(ORG, "mctl:root")], None),
    ([x509.NameAttribute(CN, "a"), x509.NameAttribute(ORG, "MCTL:admin")], None),
    ([], None),
    # Multi-valued RDN, and string types other than UTF8String.
    ([x509.RelativeDistinguishedName([x509.NameAttribute(CN, "m"),
                                      x509.NameAttribute(ORG, "mctl:agent")])],
     pki.Identity("agent", "m")),
    ([x509.NameAttribute(CN, "p1", x509.name._ASN1Type.PrintableString),
      x509.NameAttribute(ORG, "mctl:agent", x509.name._ASN1Type.BMPString)],
     pki.Identity("agent", "p1")),
    ([x509.NameAttribute(CN, "ü-name", x509.name._ASN1Type.UniversalString),
      x509.NameAttribute(ORG, "mctl:admin")], pki.Identity("admin", "ü-name")),
])
def test_subjects_built_by_hand_read_the_same(attrs, expected):
    mine, theirs = both(custom(attrs))
    assert mine == theirs == expected


@settings(max_examples=examples(40), deadline=None)
@given(cn=st.text(min_size=1, max_size=20), org=st.text(min_size=1, max_size=20),
       extra=st.lists(st.tuples(st.sampled_from([CN, ORG, OU]), st.text(min_size=1, max_size=8)),
                      max_size=3))
def test_any_subject_reads_the_same(cn, org, extra):
    attrs = [x509.NameAttribute(CN, cn), x509.NameAttribute(ORG, org)]
    attrs += [x509.NameAttribute(oid, value) for oid, value in extra]
    mine, theirs = both(custom(attrs))
    assert mine == theirs


def test_long_subject_uses_long_form_lengths():
    name = "n" * 63
    pem = custom([x509.NameAttribute(CN, name), x509.NameAttribute(ORG, "mctl:agent")]
                 + [x509.NameAttribute(OU, "x" * 60) for _ in range(6)])
    assert both(pem) == (pki.Identity("agent", name), pki.Identity("agent", name))


def test_first_certificate_of_a_chain(ca):
    leaf = pki.issue(ca, "agent", "n7").cert_pem
    assert pki.identity_of_pem(leaf + ca.cert_pem) == pki.Identity("agent", "n7")


@pytest.mark.parametrize("pem", [
    b"", b"not a certificate",
    b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",       # empty SEQUENCE
    b"-----BEGIN CERTIFICATE-----\nMIAA\n-----END CERTIFICATE-----\n",       # indefinite length
])
def test_what_does_not_parse_names_nobody(pem):
    assert pki.identity_of_pem(pem) is None


def test_truncated_certificate_names_nobody(ca):
    der = certname.der_of_pem(pki.issue(ca, "agent", "n1").cert_pem)
    for cut in (1, 10, 60, 120, len(der) // 2):
        with pytest.raises(certname.CertificateFormatError):
            certname.subject_of_der(der[:cut])


# -- tls.py: the checks in a forked child ----------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("pki")
    good, other = str(base / "good"), str(base / "other")
    pki.init_ca_dir(good)
    pki.issue_to_dir(good, "agent", "node1")
    pki.issue_to_dir(good, "agent", "node2")
    pki.init_ca_dir(other)
    pki.issue_to_dir(other, "agent", "node1")
    return good, other


def test_isolated_check_answers_like_the_in_process_one(files):
    good, other = files
    ca = pki.ca_paths(good)[0]
    n1, n1_key = pki.leaf_paths(good, "node1")
    _, n2_key = pki.leaf_paths(good, "node2")
    foreign, foreign_key = pki.leaf_paths(other, "node1")
    config = tls.TLSConfig.from_files(ca, n1, n1_key, isolated=True)
    assert config == tls.TLSConfig.from_files(ca, n1, n1_key)
    assert config.identity == pki.Identity("agent", "node1")
    for cert, key in ((n1, n2_key), (foreign, foreign_key), (n1 + ".missing", n1_key)):
        with pytest.raises(tls.TLSError) as inside:
            tls.TLSConfig.from_files(ca, cert, key)
        with pytest.raises(tls.TLSError) as isolated:
            tls.TLSConfig.from_files(ca, cert, key, isolated=True)
        assert str(isolated.value) == str(inside.value)
    assert tls.from_flags(ca, n1, n1_key, insecure=False, isolated=True) == config


def test_expired_certificate_is_reported_from_the_child(tmp_path, ca):
    leaf = pki.issue(ca, "agent", "old")
    # Made valid from two days ago to one day ago by signing a copy by hand.
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    ca_key = pki.load_key(ca.key_pem, "ca")
    now = datetime.datetime.now(datetime.UTC)
    expired = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=2))
               .not_valid_after(now - datetime.timedelta(days=1))
               .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "old.crt").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "old.key").write_bytes(leaf.key_pem)
    paths = [str(tmp_path / n) for n in ("ca.crt", "old.crt", "old.key")]
    with pytest.raises(tls.TLSError, match="old.crt: certificate expired on"):
        tls.TLSConfig.from_files(*paths, isolated=True)


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_isolated_check_leaves_cryptography_out_of_the_caller(files):
    good, _ = files
    ca = pki.ca_paths(good)[0]
    cert, key = pki.leaf_paths(good, "node1")
    out = _python(f"""
import sys
from mctl.common import tls, authz
c = tls.TLSConfig.from_files({ca!r}, {cert!r}, {key!r}, isolated=True)
c.require("agent", "node1")
assert authz._identity_of_pem(c.cert) == c.identity
print(sorted(m for m in sys.modules if m.startswith("cryptography")))
""")
    assert out == "[]"


def test_the_agent_imports_neither_pyroute2_nor_cryptography():
    out = _python("import sys, mctl.agent.main; print(sorted({m.split('.')[0] for m in "
                  "sys.modules} & {'pyroute2', 'cryptography', 'fractions'}))")
    assert out == "[]"
