"""TLS credentials of one process: the cluster CA, its own certificate and key.

A process either has all three (mutual TLS: it proves who it is and accepts
only peers signed by the same CA) or runs insecure, which must be asked for
explicitly (`--insecure`); half a configuration is an error, never a silent
fall-back to plain text. Files are checked at start-up, so a wrong path, a
key that does not match its certificate, an expired certificate or one from
another CA is one clear line naming the file instead of failed handshakes later.

Those checks need `cryptography`, which a long-lived server that needs it for
nothing else (the agent) should not keep mapped (what it costs:
bench/README.md, "Memory"): with `isolated`, they run in a forked child that
exits afterwards, and this process only reads the files and hands the bytes
to gRPC.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

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
    def from_files(cls, ca_path: str, cert_path: str, key_path: str,
                   isolated: bool = False) -> TLSConfig:
        """Reads and checks the three files; `isolated`: check in a child (see above)."""
        try:
            ca = pki.read_file(ca_path, "the CA certificate")
            cert = pki.read_file(cert_path, "the certificate")
            key = pki.read_file(key_path, "the key")
        except pki.PKIError as e:
            raise TLSError(str(e)) from None
        paths = (ca_path, cert_path, key_path)
        identity = (_check_in_child if isolated else check)(ca, cert, key, paths)
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


def check(ca: bytes, cert: bytes, key: bytes, paths: tuple[str, str, str]) -> pki.Identity:
    """Who `cert` names, once it parses, matches `key` and is valid from the CA `ca`.

    `paths` (CA, certificate, key) name the files in the TLSError.
    """
    from cryptography.hazmat.primitives import serialization

    ca_path, cert_path, key_path = paths
    try:
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
        return pki.verify(cert, ca)
    except pki.PKIError as e:
        raise TLSError(f"{cert_path}: {e} ({ca_path})") from None


def _check_in_child(ca: bytes, cert: bytes, key: bytes,
                    paths: tuple[str, str, str]) -> pki.Identity:
    """check() in a forked child, which alone imports `cryptography`, then exits.

    Call it while the process has one thread (fork copies only the caller's):
    the agent does, before gRPC or any worker starts. The answer comes back
    as one JSON line on a pipe.
    """
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        # No process to spare (EAGAIN, ENOMEM): check here, at the cost of
        # the memory this was meant to save.
        os.close(read_end)
        os.close(write_end)
        return check(ca, cert, key, paths)
    if pid == 0:                                            # the child
        try:
            os.close(read_end)
            try:
                who = check(ca, cert, key, paths)
                answer = {"role": who.role, "name": who.name}
            except TLSError as e:
                answer = {"error": str(e)}
            except BaseException as e:  # noqa: BLE001 - reported to the parent, as it would fail
                answer = {"error": f"{paths[1]}: cannot be checked: {type(e).__name__}: {e}"}
            data = json.dumps(answer).encode()
            while data:
                data = data[os.write(write_end, data):]
        finally:
            # No atexit handlers, no flushing of buffers copied from the parent.
            os._exit(0)
    os.close(write_end)
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise TLSError(f"{paths[1]}: the certificate check did not answer (its process "
                       f"ended with wait status {status})") from None
    if "error" in answer:
        raise TLSError(answer["error"])
    return pki.Identity(role=answer["role"], name=answer["name"])


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every mctl daemon takes for its transport."""
    g = parser.add_argument_group("transport security")
    g.add_argument("--tls-ca", default="", help="the cluster CA certificate (PEM)")
    g.add_argument("--tls-cert", default="", help="this process's certificate (PEM)")
    g.add_argument("--tls-key", default="", help="this process's private key (PEM)")
    g.add_argument("--insecure", action="store_true",
                   help="plain-text gRPC without authentication (tests and demos only)")


def from_flags(ca: str, cert: str, key: str, insecure: bool,
               isolated: bool = False) -> TLSConfig | None:
    """TLS credentials from the three paths, or None when `insecure` was asked for.

    `isolated`: check them in a forked child (TLSConfig.from_files).
    """
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
    return TLSConfig.from_files(ca, cert, key, isolated=isolated)


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
