"""deploy/systemd: the units' command lines, expanded with their example env files, parse.

The real-VM kit must not rot as flags change: each ExecStart is expanded as
systemd would with the example env file next to it and handed to the
daemon's own argument parser (agent, scheduler) or checked against
`etcd --help`; `systemd-analyze verify` checks the unit files. The settings
the units rely on for process ownership are pinned too.
tests/e2e/test_multi_vm.py runs the same command lines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import systemdunits as su  # noqa: E402 - tests/ helper, after the path is set

from mctl.agent.main import build_parser as agent_parser  # noqa: E402
from mctl.scheduler.main import build_parser as scheduler_parser  # noqa: E402

UNITS = ("mctl-etcd", "mctl-scheduler", "mctl-agent")
DEPLOY = su.DEPLOY.parent


def expanded(name: str) -> tuple[list[str], dict[str, str]]:
    unit = su.read_unit(su.DEPLOY / f"{name}.service")
    env_file = su.parse_env((su.DEPLOY / f"{name}.env").read_text(), f"{name}.env")
    env = su.service_env(unit, env_file)
    return su.exec_start(unit, env), env_file


@pytest.mark.parametrize("name", UNITS)
def test_unit_reads_its_env_file_and_restarts_on_failure(name: str):
    unit = su.read_unit(su.DEPLOY / f"{name}.service")
    assert su.value(unit, "Service", "EnvironmentFile") == f"/etc/mctl/{name}.env"
    assert su.value(unit, "Service", "Restart") == "on-failure"
    assert su.value(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("name", ("mctl-scheduler", "mctl-agent"))
def test_daemon_units_wait_for_readiness_and_have_a_watchdog(name: str):
    # The daemons send READY=1 and WATCHDOG=1 (common/sdnotify.py): `systemctl
    # start` returns when they are ready, and a hung one is restarted.
    unit = su.read_unit(su.DEPLOY / f"{name}.service")
    assert su.value(unit, "Service", "Type") == "notify"
    watchdog = int(su.value(unit, "Service", "WatchdogSec"))
    assert 10 <= watchdog <= 120
    # Only the main process may notify (the default): no NotifyAccess=all
    # letting a container's process report the agent ready.
    assert su.values(unit, "Service", "NotifyAccess") in ([], ["main"])


def test_agent_unit_leaves_monitors_and_containers_alone_on_stop():
    unit = su.read_unit(su.DEPLOY / "mctl-agent.service")
    assert su.value(unit, "Service", "KillMode") == "process"
    assert su.value(unit, "Service", "Delegate") == "yes"
    # A private mount namespace would hide the containers' mounts from the host.
    for key in ("ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateMounts"):
        assert not su.values(unit, "Service", key), key


def test_agent_command_line_parses_with_the_example_env():
    argv, env = expanded("mctl-agent")
    assert argv[0] == "/opt/mctl/bin/mctl-agent"
    args = agent_parser().parse_args(argv[1:])
    assert args.command == "run"
    assert (args.name, args.scheduler, args.listen) == (
        env["MCTL_NODE_NAME"], env["MCTL_SCHEDULERS"], env["MCTL_LISTEN"])
    assert args.cgroup_parent == f"mctl/{args.name}"
    assert args.labels == {"zone": "a"}
    assert args.tls_cert == f"/etc/mctl/pki/{args.name}.crt"
    assert args.stop_grace == 10.0          # from MCTL_AGENT_FLAGS, split into two words
    assert not args.cleanup_on_exit          # stopping the agent must not remove containers


def test_scheduler_command_line_parses_with_the_example_env():
    argv, env = expanded("mctl-scheduler")
    assert argv[0] == "/opt/mctl/bin/mctl-scheduler"
    args = scheduler_parser().parse_args(argv[1:])
    assert (args.etcd, args.listen, args.id) == (
        env["MCTL_ETCD"], env["MCTL_LISTEN"], env["MCTL_SCHEDULER_ID"])
    assert args.cluster_cidr == "10.244.0.0/16" and args.node_grace == 30.0
    assert args.tls_key == f"/etc/mctl/pki/{args.id}.key"
    # etcd: every member, and the scheduler's client certificate of etcd's own CA.
    assert len(args.etcd.split(",")) == 3
    assert (args.etcd_ca, args.etcd_cert, args.etcd_key) == (
        "/etc/mctl/pki/etcd/ca.crt", f"/etc/mctl/pki/etcd/{args.id}.crt",
        f"/etc/mctl/pki/etcd/{args.id}.key")


def test_the_scheduler_unit_leaves_the_web_view_off_by_default():
    argv, _ = expanded("mctl-scheduler")
    args = scheduler_parser().parse_args(argv[1:])
    assert (args.web_listen, args.web_token_file) == ("", "")


def test_the_scheduler_unit_serves_the_web_view_as_its_env_file_says(tmp_path: Path):
    """The env file's commented settings, set, start the view with the token file's token."""
    from mctl.scheduler.main import web_view_token

    text = (su.DEPLOY / "mctl-scheduler.env").read_text()
    shown = dict(re.findall(r"(?m)^#\s+(MCTL_WEB_[A-Z_]+)=(\S+)$", text))
    assert shown == {"MCTL_WEB_LISTEN": "127.0.0.1:7080",
                     "MCTL_WEB_TOKEN_FILE": "/etc/mctl/web.token"}
    token_file = tmp_path / "web.token"       # as docs/multi-vm.md makes it
    token_file.write_text("x" * 43 + "\n")
    token_file.chmod(0o600)
    unit = su.read_unit(su.DEPLOY / "mctl-scheduler.service")
    env = su.service_env(unit, su.parse_env(text) | shown
                         | {"MCTL_WEB_TOKEN_FILE": str(token_file)})
    args = scheduler_parser().parse_args(su.exec_start(unit, env)[1:])
    assert args.web_listen == "127.0.0.1:7080"
    assert web_view_token(args, None) == "x" * 43


def test_every_etcd_setting_is_a_flag_etcd_knows():
    argv, env = expanded("mctl-etcd")
    assert argv == ["/usr/bin/etcd"]        # everything else comes from ETCD_* variables
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    if not Path(etcd).exists():
        pytest.skip("etcd is not installed")
    help_text = subprocess.run([etcd, "--help"], capture_output=True, text=True).stdout
    for key in env:
        assert key.startswith("ETCD_"), key
        flag = "--" + key[len("ETCD_"):].lower().replace("_", "-")
        # etcd only warns about an unknown ETCD_ variable and goes on without it.
        assert f"  {flag} " in help_text or f"  {flag}\n" in help_text, f"{key}: no {flag}"
    assert env["ETCD_INITIAL_CLUSTER"].startswith(env["ETCD_NAME"] + "=")
    # Mutual TLS only, for clients and peers.
    for key in ("ETCD_LISTEN_CLIENT_URLS", "ETCD_ADVERTISE_CLIENT_URLS", "ETCD_LISTEN_PEER_URLS",
                "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER"):
        assert "http://" not in env[key] and "https://" in env[key], key
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert len(env["ETCD_INITIAL_CLUSTER"].split(",")) == 3


def test_unset_variable_in_exec_start_is_an_error():
    unit = su.read_unit(su.DEPLOY / "mctl-agent.service")
    with pytest.raises(su.UnitError, match="MCTL_NODE_NAME"):
        su.exec_start(unit, su.service_env(unit, {}))


def test_env_value_with_unquoted_spaces_is_refused():
    # systemd would take it, a shell sourcing the file (the cleanup step) would not.
    with pytest.raises(su.UnitError, match="quote"):
        su.parse_env("MCTL_AGENT_FLAGS=--stop-grace 10\n")
    assert su.parse_env('X="a b"\n# c\n') == {"X": "a b"}


def test_systemd_accepts_the_units(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    paths = [str(su.DEPLOY / f"{name}.service") for name in UNITS]
    proc = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True,
                          cwd=tmp_path)
    # Unknown keys, bad values and syntax errors are reported; the daemons
    # themselves are only installed in /opt/mctl on a real node.
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if not re.search(r"Command /(opt/mctl/bin|usr/bin)/\S+ is not executable", line)]
    assert not complaints, "\n".join(complaints)


@pytest.mark.parametrize("script", sorted(p.name for p in DEPLOY.glob("*.sh")))
def test_shell_scripts_parse(script: str):
    path = DEPLOY / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
