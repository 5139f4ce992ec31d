"""What containerd's runc shim (io.containerd.runc.v2, 1.6) asks of `mctl-runtime`.

The command lines below are the ones the shim ran, recorded with a wrapper
script while tests/kernel/test_containerd_kernel.py drove it: each must parse
with runc's meaning. The shim reports a failure by the last `error` line of
the --log file (JSON), so errors, usage errors included, must land there,
and the child's setup error must read as one line, not Python's repr.
"""

from __future__ import annotations

import json

import pytest

from mctl.agent.runtime.oci import cli, cli_exec
from mctl.agent.runtime.oci.cli_args import parse

B = "/s/io.containerd.runtime.v2.task/default/c1"
GLOBAL = ["--root", "/r/default", "--log", f"{B}/log.json", "--log-format", "json"]


def test_the_shims_command_lines_parse_with_runcs_meaning():
    inv = parse([*GLOBAL, "create", "--bundle", B, "--pid-file", f"{B}/init.pid",
                 "--console-socket", "/tmp/pty1/pty.sock", "c1"])
    assert (inv.root, inv.log, inv.log_format) == ("/r/default", f"{B}/log.json", "json")
    assert (inv.command, inv.bundle, inv.pid_file, inv.console_socket, inv.args) == \
        ("create", B, f"{B}/init.pid", "/tmp/pty1/pty.sock", ["c1"])
    inv = parse([*GLOBAL, "exec", "--process", "/tmp/runc-process1", "--console-socket",
                 "/tmp/pty2/pty.sock", "--detach", "--pid-file", f"{B}/e1.pid", "c1"])
    assert (inv.process, inv.console_socket, inv.detach, inv.pid_file, inv.args) == \
        ("/tmp/runc-process1", "/tmp/pty2/pty.sock", True, f"{B}/e1.pid", ["c1"])
    inv = parse([*GLOBAL, "kill", "--all", "c1", "9"])
    assert (inv.all, inv.args) == (True, ["c1", "9"])
    assert parse([*GLOBAL, "delete", "--force", "c1"]).force
    assert parse([*GLOBAL, "ps", "--format", "json", "c1"]).format == "json"
    assert parse([*GLOBAL, "update", "--resources", "-", "c1"]).resources == "-"
    assert parse([*GLOBAL, "events", "--stats", "c1"]).stats
    for verb in ("start", "state", "pause", "resume"):
        assert parse([*GLOBAL, verb, "c1"]).command == verb
    assert parse(["--systemd-cgroup", *GLOBAL, "state", "c1"]).systemd_cgroup


def test_a_usage_error_is_logged_as_a_json_error_line(tmp_path, capsys):
    log = tmp_path / "log.json"
    code = cli.main(["--root", str(tmp_path), "--log", str(log), "--log-format", "json",
                     "checkpoint", "--image-path", "/x", "c1"])
    assert code == 2
    assert "unknown command 'checkpoint'" in capsys.readouterr().err
    line = json.loads(log.read_text())
    assert line["level"] == "error"
    assert line["msg"] == "unknown command 'checkpoint'"


def test_a_usage_error_before_log_is_parsed_goes_to_stderr_only(tmp_path, capsys):
    assert cli.main(["--bogus", "--log", str(tmp_path / "log.json"), "state", "c1"]) == 2
    assert "unknown option --bogus" in capsys.readouterr().err
    assert not (tmp_path / "log.json").exists()


def test_a_bad_log_format_is_not_used_to_log_the_error(tmp_path):
    log = tmp_path / "log"
    assert cli.main(["--log", str(log), "--log-format", "yaml", "state", "c1"]) == 2
    assert not log.exists()


@pytest.mark.parametrize(("step", "error", "want"), [
    ("exec", FileNotFoundError(2, "No such file or directory", "/nonexistent"),
     "exec: '/nonexistent': No such file or directory"),
    ("process.cwd", PermissionError(13, "Permission denied"),
     "process.cwd: Permission denied"),
    ("", OSError("the container is at its pids limit (5)"),
     "the container is at its pids limit (5)"),
    ("cgroup", ValueError("bad"), "cgroup: bad"),
])
def test_a_childs_setup_error_reads_as_one_line(step, error, want):
    assert cli_exec.describe_failure(step, error) == want


def test_an_unexpected_create_error_reads_as_one_line():
    assert cli._error_text(PermissionError(13, "Permission denied", "/proc/1/ns/pid")) == \
        "'/proc/1/ns/pid': Permission denied"
    # A message of our own (console.py's OSError(problem)) passes through.
    assert cli._error_text(OSError("--console-socket /x: not a socket")) == \
        "--console-socket /x: not a socket"
