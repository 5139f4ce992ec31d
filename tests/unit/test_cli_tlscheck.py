"""The CLI checks its TLS files once per set of bytes (cli/tlscheck.py), not per call."""

from __future__ import annotations

import json
import os

import pytest

from mctl.cli import tlscheck
from mctl.common import pki, tls


@pytest.fixture
def creds(tmp_path) -> tuple[str, str, str, str]:
    d = str(tmp_path / "pki")
    pki.init_ca_dir(d)
    pki.issue_to_dir(d, "admin", "alice")
    pki.issue_to_dir(d, "admin", "bob")
    return str(tmp_path / "home"), f"{d}/ca.crt", f"{d}/alice.crt", f"{d}/alice.key"


def test_a_checked_set_is_trusted_until_its_bytes_change(creds, monkeypatch):
    home, ca, cert, key = creds
    first = tlscheck.checked(home, ca, cert, key)
    assert first.identity == pki.Identity("admin", "alice")
    entries = os.listdir(os.path.join(home, "cache", "tls"))
    assert len(entries) == 1

    def no_check(*args, **kw):
        raise AssertionError("checked again")
    monkeypatch.setattr(tls, "check", no_check)
    again = tlscheck.checked(home, ca, cert, key)
    assert again == first
    # Another certificate in the same path: new bytes, a new check.
    d = os.path.dirname(cert)
    os.replace(f"{d}/bob.crt", cert)
    os.replace(f"{d}/bob.key", key)
    with pytest.raises(AssertionError, match="checked again"):
        tlscheck.checked(home, ca, cert, key)


def test_a_bad_set_is_refused_every_time_and_never_cached(creds):
    home, ca, cert, key = creds
    wrong_key = os.path.join(os.path.dirname(cert), "bob.key")
    for _ in range(2):
        with pytest.raises(tls.TLSError, match="does not belong"):
            tlscheck.checked(home, ca, cert, wrong_key)
    assert not os.path.exists(os.path.join(home, "cache", "tls"))


def test_an_entry_past_its_validity_is_checked_again(creds, monkeypatch):
    home, ca, cert, key = creds
    tlscheck.checked(home, ca, cert, key)
    (entry,) = os.scandir(os.path.join(home, "cache", "tls"))
    with open(entry.path) as f:
        doc = json.load(f)
    assert doc["not_before"] < doc["not_after"]
    doc["not_after"] = 1.0                      # long gone
    with open(entry.path, "w") as f:
        json.dump(doc, f)
    calls = []
    real = tls.check
    monkeypatch.setattr(tls, "check", lambda *a: calls.append(1) or real(*a))
    tlscheck.checked(home, ca, cert, key)
    assert calls == [1]


def test_the_cache_is_bounded(creds, monkeypatch):
    home, ca, cert, key = creds
    monkeypatch.setattr(tlscheck, "MAX_ENTRIES", 2)
    d = os.path.dirname(cert)
    for i in range(4):
        pki.issue_to_dir(d, "admin", f"user{i}")
        tlscheck.checked(home, ca, f"{d}/user{i}.crt", f"{d}/user{i}.key")
    assert len(os.listdir(os.path.join(home, "cache", "tls"))) == 2
