"""Where the CLI takes its TLS credentials from: flags, environment, config file."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from mctl.cli import config
from mctl.common import pki, tls


@pytest.fixture
def home(tmp_path, monkeypatch) -> str:
    for var in ("MCTL_TLS_CA", "MCTL_TLS_CERT", "MCTL_TLS_KEY", "MCTL_INSECURE", "MCTL_SERVER"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("MCTL_HOME", str(home))
    d = str(home / "pki")
    pki.init_ca_dir(d)
    pki.issue_to_dir(d, "admin", "alice")
    pki.issue_to_dir(d, "admin", "bob")
    return str(home)


def flags(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"server": None, "tls_ca": None, "tls_cert": None,
                                 "tls_key": None, "insecure": False, **kw})


def write_config(home: str, doc: dict) -> None:
    with open(os.path.join(home, "config.json"), "w") as f:
        json.dump(doc, f)


RELATIVE = {"server": "127.0.0.1:1", "tls_ca": "pki/ca.crt", "tls_cert": "pki/alice.crt",
            "tls_key": "pki/alice.key"}


def test_config_file_paths_are_relative_to_the_config_file(home, monkeypatch, tmp_path):
    write_config(home, RELATIVE)
    monkeypatch.chdir(tmp_path)
    assert config.credentials(flags()).identity == pki.Identity("admin", "alice")


def test_flags_beat_environment_beat_config(home, monkeypatch):
    write_config(home, RELATIVE)
    bob = os.path.join(home, "pki", "bob")
    monkeypatch.setenv("MCTL_TLS_CERT", bob + ".crt")
    monkeypatch.setenv("MCTL_TLS_KEY", bob + ".key")
    assert config.credentials(flags()).identity.name == "bob"
    alice = os.path.join(home, "pki", "alice")
    creds = config.credentials(flags(tls_cert=alice + ".crt", tls_key=alice + ".key"))
    assert creds.identity.name == "alice"


def test_plain_text_only_when_asked_for(home, monkeypatch):
    # An old config (before TLS) names only the server: no silent plain text.
    write_config(home, {"server": "127.0.0.1:1", "cluster_dir": "/x"})
    with pytest.raises(tls.TLSError, match="no TLS credentials for the mctl server at "
                                           "127.0.0.1:1: .* or --insecure"):
        config.credentials(flags())
    assert config.credentials(flags(insecure=True)) is None
    monkeypatch.setenv("MCTL_INSECURE", "1")
    assert config.credentials(flags()) is None
    monkeypatch.delenv("MCTL_INSECURE")
    write_config(home, {"server": "127.0.0.1:1", "insecure": True})
    assert config.credentials(flags()) is None


def test_flags_override_the_config_file_either_way(home):
    write_config(home, RELATIVE)
    assert config.credentials(flags(insecure=True)) is None
    write_config(home, {"server": "127.0.0.1:1", "insecure": "true"})
    d = os.path.join(home, "pki")
    creds = config.credentials(flags(tls_ca=f"{d}/ca.crt", tls_cert=f"{d}/bob.crt",
                                     tls_key=f"{d}/bob.key"))
    assert creds.identity.name == "bob"
    with pytest.raises(tls.TLSError, match="contradict"):
        config.credentials(flags(insecure=True, tls_cert=f"{d}/bob.crt"))
