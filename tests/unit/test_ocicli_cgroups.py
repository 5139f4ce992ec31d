"""mctl-runtime's cgroup verbs without the kernel: pause, resume, update, events.

The commands run through `cli.main` against a real state record (a sleeping
child stands in for the init, as in test_ocicli) and the fake cgroupfs of
test_cgroup_extras in place of /sys/fs/cgroup, so every write they make is
recorded and checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_cgroup_extras import Fake
from test_cgroups_fake import CTR, LIMITS, NO_MOUNTINFO

import mctl.agent.runtime.cgroups as cgroups_pkg
from mctl.agent.runtime.cgroups import container_setup, detect, freezer
from mctl.agent.runtime.oci import cli as ocicli
from mctl.agent.runtime.oci import cli_events, cli_update
from mctl.agent.runtime.oci import cli_state as ocistate
from mctl.agent.runtime.oci.cli_args import UsageError, parse
from mctl.agent.runtime.oci.config import Resources, resources_json

MiB = 1 << 20


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def box(tmp_path: Path, sleeper, monkeypatch):  # type: ignore[no-untyped-def]
    """(root, fake, driver): a running container record whose cgroup is in a fake v1 tree."""
    fake = Fake(tmp_path)
    for name in ("cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer", "blkio"):
        fake.v1_hierarchy(f"cgroup/{name}")
    cgroup_root = str(tmp_path / "cgroup")
    drv = detect(cgroup_root, mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    container_setup.setup(drv, CTR, None)
    fake.writes.clear()
    monkeypatch.setattr(cgroups_pkg, "detect", lambda: drv)
    real_is_frozen = freezer.is_frozen
    monkeypatch.setattr(freezer, "is_frozen", lambda cg, root="": real_is_frozen(cg, cgroup_root))
    root = str(tmp_path / "state")
    c = ocistate.new(root, "c1", "/bundle")
    c.doc.update(pid=sleeper.pid, start_time=ocistate.proc_stat(sleeper.pid)[1], cgroup=CTR,
                 resources=resources_json(Resources(memory_limit=32 * MiB, pids_limit=64)))
    c.save()
    return root, fake, drv


def _status(root: str) -> str:
    return ocistate.load(root, "c1").status()


def test_pause_resume_and_the_paused_status(box, capsys, sleeper):
    root, fake, _ = box
    assert ocicli.main(["--root", root, "pause", "c1"]) == 0
    assert _status(root) == "paused"
    assert json.loads(_state(root, capsys))["status"] == "paused"
    assert ocicli.main(["--root", root, "pause", "c1"]) == 1
    assert "cannot pause container c1: it is paused, not running" in capsys.readouterr().err
    assert ocicli.main(["--root", root, "resume", "c1"]) == 0
    assert _status(root) == "running"
    assert ocicli.main(["--root", root, "resume", "c1"]) == 1
    assert "it is running, not paused" in capsys.readouterr().err
    assert [v for p, v in fake.written() if p.endswith("freezer.state")] == ["FROZEN", "THAWED"]
    # Paused: delete wants --force; kill is allowed (it lands on resume or delete).
    assert ocicli.main(["--root", root, "pause", "c1"]) == 0
    assert ocicli.main(["--root", root, "delete", "c1"]) == 1
    assert "it is paused" in capsys.readouterr().err
    assert ocicli.main(["--root", root, "delete", "--force", "c1"]) == 0
    assert fake.written()[-1][1] == "THAWED"  # thawed so the SIGKILL lands
    assert sleeper.wait(timeout=5) == -9


def _state(root: str, capsys) -> str:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert ocicli.main(["--root", root, "state", "c1"]) == 0
    return capsys.readouterr().out


def test_update_merges_flags_and_a_file_into_the_recorded_resources(box, tmp_path, capsys):
    root, fake, _ = box
    assert ocicli.main(["--root", root, "update", "--memory", "16m", "--cpu-quota", "20000",
                        "--cpuset-cpus", "1", "c1"]) == 0
    written = dict(fake.written())
    assert written[f"cgroup/memory/{CTR}/memory.limit_in_bytes"] == str(16 * MiB)
    assert written[f"cgroup/cpu/{CTR}/cpu.cfs_quota_us"] == "20000"
    assert written[f"cgroup/pids/{CTR}/pids.max"] == "64"  # kept from the record
    assert written[f"cgroup/cpuset/{CTR}/cpuset.cpus"] == "1"
    fake.writes.clear()
    file = tmp_path / "r.json"
    file.write_text(json.dumps({"pids": {"limit": 10}, "devices": [{"allow": True}]}))
    assert ocicli.main(["--root", root, "update", "-r", str(file), "c1"]) == 0
    assert "linux.resources.devices: device rules are not changed by update" in \
        capsys.readouterr().err
    written = dict(fake.written())
    assert written[f"cgroup/pids/{CTR}/pids.max"] == "10"
    assert written[f"cgroup/memory/{CTR}/memory.limit_in_bytes"] == str(16 * MiB)
    assert written[f"cgroup/cpu/{CTR}/cpu.cfs_quota_us"] == "20000"
    recorded = ocistate.load(root, "c1").doc["resources"]
    assert recorded["pids"] == {"limit": 10} and recorded["cpu"]["cpus"] == "1"


@pytest.mark.parametrize("argv, message", [
    (["update", "c1"], "update: give -r FILE or at least one resource flag"),
    (["update", "--memory", "lots", "c1"], "--memory: 'lots' is not a size like 512m"),
    (["update", "--pids-limit", "x", "c1"], "--pids-limit: 'x' is not a number"),
    (["update", "--cpu-period", "10", "c1"], "cpu period 10us outside [1000, 1000000]"),
    (["update", "--cpuset-cpus", "2-1", "c1"], "linux.resources.cpu.cpus: '2-1' is not a list"),
    (["update", "--blkio-weight", "5", "c1"],
     "linux.resources.blockIO.weight: 5 is not between 10 and 1000"),
    (["update", "-r", "/nonexistent.json", "c1"], "-r /nonexistent.json: No such file"),
    (["events", "--interval", "5x", "c1"], "--interval: '5x' is not a duration"),
    (["events", "--interval", "1ms", "c1"], "--interval: '1ms' is outside [10ms, 24h]"),
])
def test_bad_update_and_events_arguments_are_one_line(box, argv, message, capsys):
    root, fake, _ = box
    assert ocicli.main(["--root", root, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert [w for w in fake.written() if not w[0].endswith(".tmp")] == []


def test_update_of_a_stopped_container_is_refused(box, sleeper, capsys):
    root, _, _ = box
    sleeper.kill()
    sleeper.wait()
    assert ocicli.main(["--root", root, "update", "--memory", "1g", "c1"]) == 1
    assert "cannot update container c1: it is stopped" in capsys.readouterr().err


def test_parse_bytes_reads_runcs_units():
    assert [cli_update.parse_bytes("memory", t) for t in ("1024", "4k", "512m", "2G", "1gb", "-1")
            ] == [1024, 4096, 512 * MiB, 2 << 30, 1 << 30, -1]
    for bad in ("", "m", "1.5g", "-2", "10x"):
        with pytest.raises(cli_update.UpdateError):
            cli_update.parse_bytes("memory", bad)


def test_parse_interval_reads_go_durations():
    assert [cli_events.parse_interval(t) for t in ("5s", "100ms", "1m30s", "0.5s", "2h")] == [
        5.0, 0.1, 90.0, 0.5, 7200.0]


def test_events_stats_prints_one_event(box, capsys):
    root, _, _ = box
    assert ocicli.main(["--root", root, "events", "--stats", "c1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["type"], event["id"]) == ("stats", "c1")
    assert set(event["data"]) == {"cpu", "memory", "pids", "blkio"}


def test_events_streams_stats_each_interval_and_oom_kills_until_the_container_stops(
        box, sleeper):
    root, _, drv = box
    oom_control = Path(drv.file("memory", CTR, "memory.oom_control"))
    now = [0.0]
    out: list[dict] = []
    sleeps = [0]

    def sleep(seconds: float) -> None:
        sleeps[0] += 1
        now[0] += max(seconds, 0.1)
        if sleeps[0] == 12:  # an OOM kill at 1.2s
            oom_control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
        if sleeps[0] == 25:
            sleeper.kill()
            sleeper.wait()

    inv = parse(["--root", root, "events", "--interval", "1s", "c1"])
    assert cli_events.events(inv, write=lambda line: out.append(json.loads(line)),
                             clock=lambda: now[0], sleep=sleep) == 0
    kinds = [e["type"] for e in out]
    assert kinds == ["stats"] * 2 + ["oom"] + ["stats"]  # at 0s, 1s, the OOM, 2s
    assert all(e["id"] == "c1" for e in out)


def test_the_new_verbs_parse():
    assert parse(["pause", "c1"]).id == "c1"
    inv = parse(["update", "-r", "-", "--pids-limit=5", "c1"])
    assert (inv.resources, inv.pids_limit) == ("-", "5")  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="update: unknown option --memory-swap"):
        parse(["update", "--memory-swap", "1g", "c1"])
    with pytest.raises(UsageError, match="events: takes an ID, got 0"):
        parse(["events", "--stats"])


def test_the_cgroup_set_up_is_loaded_before_the_fork():
    # fork_init builds the set-up before it forks and runs it after, while the
    # init waits: an import there would run into copy-on-write faults
    # (bench/README.md, "mctl-runtime run, fifth pass"). A fresh interpreter,
    # as this module has the set-up loaded already.
    module = "mctl.agent.runtime.cgroups.container_setup"
    code = ("import sys; from mctl.agent.runtime.oci import cli; "
            f"print({module!r} in sys.modules, end=' '); "
            "cli._cgroup_extras(None, None, 'c', None); "
            f"print({module!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["False", "True"]
