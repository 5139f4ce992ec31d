"""`mctl-runtime ps` and `features` (oci/cli_info.py): parsing, the table cut, the document."""

from __future__ import annotations

import subprocess

import pytest

from mctl.agent.runtime import capabilities
from mctl.agent.runtime.oci import cli_info
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.cli_args import UsageError, parse


def test_ps_parses_format_id_and_ps_arguments():
    inv = parse(["ps", "--format", "json", "c1"])
    assert (inv.command, inv.format, inv.args) == ("ps", "json", ["c1"])
    inv = parse(["ps", "c1", "--", "-o", "pid,comm"])
    assert inv.args == ["c1", "-o", "pid,comm"]
    with pytest.raises(UsageError, match="ps --format"):
        parse(["ps", "--format", "yaml", "c1"])
    with pytest.raises(UsageError):
        parse(["ps"])


def test_features_takes_no_arguments():
    assert parse(["features"]).command == "features"
    with pytest.raises(UsageError):
        parse(["features", "x"])


def test_ps_table_keeps_the_header_and_the_containers_lines(monkeypatch):
    out = ("UID PID PPID C STIME TTY TIME CMD\n"
           "root 1 0 0 00:00 ? 00:00:01 /sbin/init\n"
           "root 42 1 0 00:00 ? 00:00:00 sleep 60\n"
           "root 420 1 0 00:00 ? 00:00:00 other\n")
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, out, "")
    monkeypatch.setattr(cli_info.subprocess, "run", run)
    assert cli_info.ps_table([42], []) == ("UID PID PPID C STIME TTY TIME CMD\n"
                                           "root 42 1 0 00:00 ? 00:00:00 sleep 60\n")
    assert calls == [["ps", "-ef"]]
    cli_info.ps_table([42], ["-o", "pid,comm"])
    assert calls[-1] == ["ps", "-o", "pid,comm"]


def test_ps_table_without_a_pid_column_says_so(monkeypatch):
    monkeypatch.setattr(cli_info.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 0, "COMMAND\nsleep\n", ""))
    with pytest.raises(OSError, match="no PID column"):
        cli_info.ps_table([1], ["-o", "comm"])


def test_features_says_what_the_checks_take():
    doc = cli_info.features()
    linux = doc["linux"]
    assert isinstance(linux, dict)
    assert doc["hooks"] == list(oci.HOOK_STAGES)
    assert linux["namespaces"] == list(oci.NAMESPACE_TYPES)
    assert set(linux["capabilities"]) == set(capabilities.CAPABILITIES)
    assert {"rshared", "rslave", "bind", "ro"} <= set(doc["mountOptions"])
    assert linux["cgroup"]["systemd"] is False
    assert "SCMP_ACT_ERRNO" in linux["seccomp"]["actions"]
    # The advertised versions are the ones config.json's check accepts.
    for version, ok in ((doc["ociVersionMin"], True), (doc["ociVersionMax"], True),
                        ("1.3.0", False)):
        config = oci.to_json(oci.Config(args=("true",)))
        config["ociVersion"] = version
        if ok:
            oci.parse_config(config)
        else:
            with pytest.raises(oci.ConfigError):
                oci.parse_config(config)
