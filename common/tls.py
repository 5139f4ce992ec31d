"""TLS credentials of one process: the cluster CA, its own certificate and key.

A process either has all three (mutual TLS: it proves who it is and accepts
only peers signed by the same CA) or runs insecure, which must be asked for
explicitly (`--insecure`); half a configuration is an error, never a silent
fall-back to plain text. Files are checked at start-up, so a wrong path, a
key that does not match its certificate, an expired certificate or one from
another CA is one clear line naming the file instead of failed handshakes later.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from . import pki


class TLSError(Exception):
    """Credentials that cannot be used; the message names the file or flag."""


@dataclass(frozen=True)
class TLSConfig:
    ca: bytes
    cert: bytes
    key: bytes
    identity: pki.Identity
    cert_path: str = ""

    @classmethod
    def from_files(cls, ca_path: str, cert_path: str, key_path: str) -> TLSConfig:
        try:
            ca = pki.read_file(ca_path, "the CA certificate")
            cert = pki.read_file(cert_path, "the certificate")
            key = pki.read_file(key_path, "the key")
            pki.load_cert(ca, ca_path)
            own = pki.load_cert(cert, cert_path)
            private = pki.load_key(key, key_path)
        except pki.PKIError as e:
            raise TLSError(str(e)) from None
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        if private.public_key().public_bytes(enc, pub) != own.public_key().public_bytes(enc, pub):
            raise TLSError(f"{key_path}: this key does not belong to the certificate {cert_path}")
        try:
            identity = pki.verify(cert, ca)
        except pki.PKIError as e:
            raise TLSError(f"{cert_path}: {e} ({ca_path})") from None
        return cls(ca=ca, cert=cert, key=key, identity=identity, cert_path=cert_path)

    def require(self, role: str, name: str = "") -> None:
        """Refuses to start with a certificate made for another role or node."""
        who = self.identity
        if who.role != role:
            raise TLSError(f"{self.cert_path}: a certificate for role {who.role}, "
                           f"but this process needs role {role}")
        if name and who.name != name:
            raise TLSError(f"{self.cert_path}: a certificate for {role} {who.name}, "
                           f"but this is {role} {name}")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every mctl daemon takes for its transport."""
    g = parser.add_argument_group("transport security")
    g.add_argument("--tls-ca", default="", help="the cluster CA certificate (PEM)")
    g.add_argument("--tls-cert", default="", help="this process's certificate (PEM)")
    g.add_argument("--tls-key", default="", help="this process's private key (PEM)")
    g.add_argument("--insecure", action="store_true",
                   help="plain-text gRPC without authentication (tests and demos only)")


def from_flags(ca: str, cert: str, key: str, insecure: bool) -> TLSConfig | None:
    """TLS credentials from the three paths, or None when `insecure` was asked for."""
    given = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
    if insecure:
        if any(given.values()):
            raise TLSError("--insecure and --tls-* contradict each other; give one or the other")
        return None
    missing = [flag for flag, value in given.items() if not value]
    if len(missing) == len(given):
        raise TLSError("no transport security configured: give --tls-ca, --tls-cert and "
                       "--tls-key (see `mctl certs`), or --insecure")
    if missing:
        raise TLSError(f"{', '.join(missing)} missing: --tls-ca, --tls-cert and --tls-key "
                       "go together")
    return TLSConfig.from_files(ca, cert, key)


def explain_failure(details: str, tls: bool) -> str | None:
    """Why a connection failed in words, if gRPC's details show a TLS problem; else None.

    gRPC reports handshake failures as UNAVAILABLE with OpenSSL's reason in the
    details; a server that refuses a client's certificate just closes the
    socket once the handshake is done (TLS 1.3), so "Socket closed" right
    after connecting means that when this side speaks TLS.
    """
    if "WRONG_VERSION_NUMBER" in details:
        return "the server does not speak TLS (an insecure cluster? then pass --insecure)"
    if "CERTIFICATE_VERIFY_FAILED" in details:
        reason = details.split("CERTIFICATE_VERIFY_FAILED", 1)[1].lstrip(": ")
        if reason.startswith("certificate has expired"):
            return "the server's certificate has expired"
        if reason.startswith(("unable to get local issuer", "self signed", "self-signed",
                              "certificate signature failure")):
            return "the server's certificate is not signed by the cluster CA"
        return f"the server's certificate was rejected: {reason.split(':')[0]}"
    if "Hostname Verification" in details or "Peer name" in details:
        return "the server's certificate is not for the name this client verifies"
    if "Socket closed" in details or "Connection reset" in details:
        if tls:
            return ("the server refused this client's certificate (not signed by the cluster "
                    "CA, expired, or missing)")
        return ("the server closed the connection; it probably requires mutual TLS: "
                "configure --tls-ca, --tls-cert and --tls-key")
    return None
