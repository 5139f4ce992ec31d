"""The cluster's certificates: one CA, and leaf certificates that carry a role.

Every gRPC connection in a secured cluster is mutual TLS against one cluster
CA. A certificate says *who* its holder is in its subject, the way
Kubernetes does (CN is the user, O the group, e.g. ``O=system:nodes``):

    CN=<name>, O=mctl:<role>      role is one of scheduler, agent, admin

- ``scheduler``: CN any name (default ``scheduler``); always carries the DNS
  name ``mctl-scheduler``, which agents and the CLI verify, whatever address
  they dial (loopback, a bridge address, a VM's IP).
- ``agent``: CN is the node's name; carries the DNS name ``<node>.node.mctl``,
  which the scheduler verifies when it dials that node. Names in ``.mctl``
  are reserved for these roles, so no certificate can claim another's
  (a node named ``mctl-scheduler`` would still be ``mctl-scheduler.node.mctl``).
- ``admin``: a CLI user; a client certificate only.

Given IP addresses and host names are added as SANs too, for tools that verify
by address. Keys are EC P-256 (what every TLS stack accepts); the CA is valid
for 10 years, leaves for one. Files follow Kubernetes' pki folder: ``ca.crt``,
``ca.key``, ``<name>.crt``, ``<name>.key``; keys are written mode 0600.

`cryptography` is imported by the functions that make or check certificates,
not by this module: a server that only reads who its callers are
(`identity_of_pem`, a DER reader of its own) never maps it (what that
saves: bench/README.md, "Memory").
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import boundedread, certname
from .names import validate_dns_label

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

ROLES = ("scheduler", "agent", "admin")
ROLE_PREFIX = "mctl:"
SCHEDULER_SERVER_NAME = "mctl-scheduler"
RESERVED_SUFFIX = ".mctl"
CA_DAYS = 3650
LEAF_DAYS = 365
# Clocks of VMs drift; a certificate made a moment ago must already be valid there.
BACKDATE = datetime.timedelta(minutes=5)


class PKIError(Exception):
    """A certificate, key or request that cannot be used; the message names which."""


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is."""

    role: str
    name: str

    def __str__(self) -> str:
        return f"{self.role} {self.name}"


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def node_server_name(node: str) -> str:
    """The DNS name an agent's certificate carries and the scheduler verifies."""
    return f"{node}.node{RESERVED_SUFFIX}"


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str = "", days: int = CA_DAYS) -> Issued:
    # secrets here, not at the top: it imports hmac and with it OpenSSL's
    # libcrypto, megabytes in the agent, which only reads names from here.
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    # A CN of its own per CA, so that a certificate from another cluster's CA
    # is told apart by name in every error, not only by a failed signature.
    common_name = common_name or f"mctl-ca-{secrets.token_hex(4)}"
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mctl")])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def default_name(role: str) -> str:
    """The CN when none is given: the role itself (agents must name their node)."""
    if role == "agent":
        raise PKIError("an agent certificate needs --name NODE (the node's name)")
    return role


def _san(value: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value.lower().rstrip(".")
    if name == SCHEDULER_SERVER_NAME or name.endswith(RESERVED_SUFFIX):
        raise PKIError(f"SAN {value!r}: names {SCHEDULER_SERVER_NAME!r} and '*{RESERVED_SUFFIX}' "
                       "are reserved for the roles; they are added by --role")
    labels = name.split(".")
    for label in labels:
        problem = validate_dns_label(label)
        if problem:
            raise PKIError(f"SAN {value!r} is neither an IP address nor a DNS name: {problem}")
    if labels[-1].isdigit():
        # No top-level domain is all digits: this is a mistyped address.
        raise PKIError(f"SAN {value!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def issue(ca: Issued, role: str, name: str = "", sans: list[str] | tuple[str, ...] = (),
          days: int = LEAF_DAYS) -> Issued:
    """A leaf certificate for `role` and `name`, signed by `ca`, with its new key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if role not in ROLES:
        raise PKIError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    name = name or default_name(role)
    problem = validate_dns_label(name)
    if problem:
        raise PKIError(f"name {name!r}: {problem}")
    if days <= 0:
        raise PKIError(f"days {days}: must be positive")
    ca_cert, ca_key = load_cert(ca.cert_pem, "CA certificate"), load_key(ca.key_pem, "CA key")
    names: list[x509.GeneralName] = []
    if role == "scheduler":
        names.append(x509.DNSName(SCHEDULER_SERVER_NAME))
    elif role == "agent":
        names.append(x509.DNSName(node_server_name(name)))
    for value in sans:
        general = _san(value)
        if general not in names:
            names.append(general)
    # Schedulers and agents both serve and dial; an admin only dials.
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role != "admin":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    key = _new_key()
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([
                   x509.NameAttribute(NameOID.COMMON_NAME, name),
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, ROLE_PREFIX + role)]))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                            crl_sign=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# -- reading ----------------------------------------------------------------------


def load_cert(pem: bytes, what: str) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise PKIError(f"{what}: not a PEM certificate ({e})") from None


def load_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise PKIError(f"{what}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{what}: not an EC key")
    return key


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The role and name a certificate claims, or None if it claims no mctl role."""
    from cryptography.x509.oid import NameOID

    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)]
    return _identity(names, orgs)


def identity_of_pem(pem: bytes) -> Identity | None:
    """identity_of for a PEM certificate, without `cryptography`; None if it does not parse.

    Reads only (certname.py): for certificates the TLS stack already verified.
    """
    try:
        names, orgs = certname.subject_names(pem)
    except certname.CertificateFormatError:
        return None
    if None in names or None in orgs:
        return None          # a name that is not text: no mctl certificate has one
    return _identity([str(n) for n in names], [str(o) for o in orgs])


def _identity(names: list[str], orgs: list[str]) -> Identity | None:
    """The rule: exactly one CN, and exactly one O that is "mctl:<a known role>"."""
    roles = [o[len(ROLE_PREFIX):] for o in orgs if o.startswith(ROLE_PREFIX)]
    if len(names) != 1 or len(roles) != 1 or roles[0] not in ROLES:
        return None
    return Identity(role=roles[0], name=names[0])


def sans_of(cert: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([str(v) for v in ext.get_values_for_type(x509.DNSName)]
            + [str(v) for v in ext.get_values_for_type(x509.IPAddress)])


def verify(cert_pem: bytes, ca_pem: bytes, now: datetime.datetime | None = None) -> Identity:
    """Checks that `cert_pem` was signed by the CA and is valid now; returns who it names.

    The TLS stack does this on every connection; this is for `mctl certs show`
    and for tests, and gives a reason in words when it fails.
    """
    from cryptography.exceptions import InvalidSignature

    cert, ca = load_cert(cert_pem, "certificate"), load_cert(ca_pem, "CA certificate")
    if cert.issuer != ca.subject:
        raise PKIError(f"certificate not signed by the cluster CA: issuer "
                       f"{cert.issuer.rfc4514_string()}, CA {ca.subject.rfc4514_string()}")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise PKIError("certificate not signed by the cluster CA (bad signature)") from None
    now = now or _now()
    if now < cert.not_valid_before_utc:
        raise PKIError(f"certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    if now > cert.not_valid_after_utc:
        raise PKIError(f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    who = identity_of(cert)
    if who is None:
        raise PKIError(f"certificate {cert.subject.rfc4514_string()} names no mctl role "
                       f"(O={ROLE_PREFIX}scheduler|agent|admin)")
    return who


# -- files ------------------------------------------------------------------------


def write_private(path: str, data: bytes, force: bool = False) -> None:
    """Writes `data` mode 0600 (created so, never widened meanwhile); refuses to overwrite."""
    if os.path.exists(path) and not force:
        raise PKIError(f"{path} exists; pass --force to replace it")
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_public(path: str, data: bytes, force: bool = False) -> None:
    write_private(path, data, force)
    os.chmod(path, 0o644)


def ca_paths(directory: str) -> tuple[str, str]:
    return os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")


def leaf_paths(directory: str, name: str) -> tuple[str, str]:
    return os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")


# A PEM certificate or key is a few KiB; a bundle of CAs some hundreds.
MAX_PEM_BYTES = 1 << 20


def read_file(path: str, what: str) -> bytes:
    """The file's bytes, bounded (boundedread.py: /dev/zero or a FIFO as --tls-ca)."""
    try:
        return boundedread.read_path(path, MAX_PEM_BYTES)
    except boundedread.TooLarge as e:
        raise PKIError(f"{path}: cannot read {what}: {e}") from None
    except boundedread.Stalled as e:
        raise PKIError(f"{path}: cannot read {what}: {e}") from None
    except OSError as e:
        raise PKIError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def init_ca_dir(directory: str, force: bool = False, days: int = CA_DAYS) -> Issued:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path, key_path = ca_paths(directory)
    if not force:
        for path in (cert_path, key_path):
            if os.path.exists(path):
                raise PKIError(f"{path} exists; pass --force to replace the CA "
                               "(every certificate it signed stops working)")
    ca = make_ca(days=days)
    write_private(key_path, ca.key_pem, force)
    write_public(cert_path, ca.cert_pem, force)
    return ca


def load_ca_dir(directory: str) -> Issued:
    cert_path, key_path = ca_paths(directory)
    ca = Issued(read_file(cert_path, "the CA certificate"), read_file(key_path, "the CA key"))
    load_cert(ca.cert_pem, cert_path)
    load_key(ca.key_pem, key_path)
    return ca


def issue_to_dir(directory: str, role: str, name: str = "", sans: list[str] | tuple[str, ...] = (),
                 days: int = LEAF_DAYS, force: bool = False) -> tuple[str, str]:
    """Issues a leaf with the CA in `directory` and writes it there; returns (cert, key) paths."""
    ca = load_ca_dir(directory)
    name = name or (default_name(role) if role in ROLES else name)
    leaf = issue(ca, role, name, sans, days)
    cert_path, key_path = leaf_paths(directory, name)
    if not force:
        for path in (cert_path, key_path):
            if os.path.exists(path):
                raise PKIError(f"{path} exists; pass --force to replace it")
    write_private(key_path, leaf.key_pem, force)
    write_public(cert_path, leaf.cert_pem, force)
    return cert_path, key_path
