"""The subject of an X.509 certificate, read without a crypto library (RFC 5280, X.690 DER).

A server's authorization (authz.py) needs one thing from each caller's
certificate, already verified by gRPC's TLS: the names in its subject (CN
and O carry mctl's name and role, see pki.py). Parsing it with
`cryptography` would map that library into every agent (its memory:
bench/README.md) for a few dozen bytes; this reads them with a minimal DER
walker instead.
It reads and never verifies: call it only on certificates the TLS stack
accepted.

    Certificate    ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
                                  signature SEQUENCE, issuer Name, validity SEQUENCE,
                                  subject Name, ... }
    Name           ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY (a string) }

DER encodes each value as a tag byte, a length (one byte below 128, or
0x80 + the number of length bytes that follow) and the contents.
"""

from __future__ import annotations

import binascii

SEQUENCE = 0x30
SET = 0x31
OID = 0x06
VERSION = 0xA0                   # [0] EXPLICIT, constructed

# DER encodings (contents) of the attribute types mctl reads.
COMMON_NAME = bytes([0x55, 0x04, 0x03])           # 2.5.4.3
ORGANIZATION_NAME = bytes([0x55, 0x04, 0x0A])     # 2.5.4.10

# String types and how their bytes decode (X.680; what cryptography does too).
_CODECS = {
    0x0C: "utf-8",         # UTF8String
    0x13: "utf-8",         # PrintableString (a subset of ASCII)
    0x14: "latin-1",       # TeletexString
    0x16: "utf-8",         # IA5String
    0x1A: "utf-8",         # VisibleString
    0x1C: "utf-32-be",     # UniversalString
    0x1E: "utf-16-be",     # BMPString
}

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


class CertificateFormatError(ValueError):
    """Bytes that are not a DER/PEM certificate as far as the subject goes."""


def _tlv(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the element at `offset`."""
    if offset + 2 > end:
        raise CertificateFormatError("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise CertificateFormatError("high tag numbers are not used in certificates")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # DER: 0x80 (indefinite) is forbidden; four length bytes cover any certificate.
        if count == 0 or count > 4 or offset + count > end:
            raise CertificateFormatError("bad length")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    if offset + length > end:
        raise CertificateFormatError("element longer than its container")
    return tag, offset, offset + length


def _expect(data: bytes, offset: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = _tlv(data, offset, end)
    if got != tag:
        raise CertificateFormatError(f"{what}: tag {got:#x}, expected {tag:#x}")
    return start, stop


def der_of_pem(pem: bytes) -> bytes:
    """The DER bytes of the first certificate in `pem`."""
    begin = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, begin + 1)
    if begin < 0 or end < 0:
        raise CertificateFormatError("no PEM certificate")
    try:
        return binascii.a2b_base64(pem[begin + len(_PEM_BEGIN):end])
    except binascii.Error as e:
        raise CertificateFormatError(f"bad base64: {e}") from None


def subject_of_der(der: bytes) -> list[tuple[bytes, str | None]]:
    """The subject's attributes in order: (type OID's DER contents, value or None if not text)."""
    cert_start, cert_end = _expect(der, 0, len(der), SEQUENCE, "certificate")
    tbs, tbs_end = _expect(der, cert_start, cert_end, SEQUENCE, "tbsCertificate")
    offset = tbs
    tag, _, stop = _tlv(der, offset, tbs_end)
    if tag == VERSION:
        offset = stop
    # serialNumber, signature, issuer, validity; then the subject.
    for tag_wanted, what in ((0x02, "serialNumber"), (SEQUENCE, "signature"),
                             (SEQUENCE, "issuer"), (SEQUENCE, "validity")):
        _, offset = _expect(der, offset, tbs_end, tag_wanted, what)
    start, end = _expect(der, offset, tbs_end, SEQUENCE, "subject")
    out: list[tuple[bytes, str | None]] = []
    while start < end:
        rdn, rdn_end = _expect(der, start, end, SET, "relative distinguished name")
        while rdn < rdn_end:
            atv, atv_end = _expect(der, rdn, rdn_end, SEQUENCE, "attribute")
            oid_start, oid_end = _expect(der, atv, atv_end, OID, "attribute type")
            value_tag, value_start, value_end = _tlv(der, oid_end, atv_end)
            codec = _CODECS.get(value_tag)
            value: str | None = None
            if codec is not None:
                try:
                    value = der[value_start:value_end].decode(codec)
                except UnicodeDecodeError:
                    value = None
            out.append((der[oid_start:oid_end], value))
            rdn = atv_end
        start = rdn_end
    return out


def subject_names(pem: bytes) -> tuple[list[str | None], list[str | None]]:
    """(CN values, O values) of a PEM certificate's subject, each in order."""
    attrs = subject_of_der(der_of_pem(pem))
    return ([v for oid, v in attrs if oid == COMMON_NAME],
            [v for oid, v in attrs if oid == ORGANIZATION_NAME])
