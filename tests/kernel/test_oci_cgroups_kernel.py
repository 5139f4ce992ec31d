"""cpuset, devices, block I/O, pause/resume, update and events: mctl-runtime, runc and crun.

Needs root. The same bundle (the agent's own, from test_oci_runtimes_kernel's
fixtures, which also check that no mount, cgroup or process is left) is run
by each installed runtime through the OCI command line, and what the
container or its cgroup files show is compared. This machine has cgroup v1
(plus an empty unified hierarchy), so the v2 paths are covered by unit
tests over the fake cgroupfs, except the v2 device program, which attaches
to the unified hierarchy here and is checked against the real kernel.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import time

import pytest
import test_oci_runtimes_kernel as shared

from mctl.agent.runtime.cgroups import devices, devices_bpf
from mctl.agent.runtime.cgroups.extras import ANY, DeviceRule

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

V1 = not os.path.exists("/sys/fs/cgroup/cgroup.controllers")
MiB = shared.MiB
_edit_config = shared._edit_config
# The shared fixtures: the module-scoped env (with its leak check), each runtime, bundles.
env, rt, make = shared.env, shared.rt, shared.make


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _v1_file(controller: str, cgroup: str, name: str) -> str:
    return os.path.join("/sys/fs/cgroup", controller, cgroup, name)


def _wait(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout}s")
        time.sleep(0.02)


def _cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


# -- cpuset ----------------------------------------------------------------------------------


@pytest.mark.skipif(not V1, reason="v2 cpuset is unit-tested (no v2 controllers here)")
def test_cpuset_cpus_and_mems_are_the_containers_and_readable_inside(rt, make):
    cpus = min(_cpu_list(_read("/sys/fs/cgroup/cpuset/cpuset.effective_cpus")))
    box = make("cat /sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/cpuset/cpuset.mems; "
               "grep -c ^processor /proc/cpuinfo >/dev/null; exec sleep 60")

    def edit(doc: dict) -> None:
        doc["linux"]["resources"].setdefault("cpu", {}).update(cpus=str(cpus), mems="0")
        doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"]
                                      if ns["type"] != "cgroup"]
        doc["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                              "source": "cgroup", "options": ["nosuid", "noexec", "nodev",
                                                              "relatime", "ro"]})
    _edit_config(box, edit)
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    box.wait_output("\n0\n")
    pid = rt.state(box.id)["pid"]
    host = [_read(_v1_file("cpuset", box.cgroup, n)) for n in ("cpuset.cpus", "cpuset.mems")]
    tasks = _read(_v1_file("cpuset", box.cgroup, "tasks")).split()
    with open(f"/proc/{pid}/status") as f:
        allowed = next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list"))
    rt("delete", "--force", box.id)
    # The container sees its own cpuset at /sys/fs/cgroup/cpuset, as the host does
    # at its cgroup path; its init is there and the scheduler holds it to it.
    assert box.output().split() == [str(cpus), "0"]
    assert host == [str(cpus), "0"]
    assert str(pid) in tasks
    assert allowed == str(cpus)


def test_a_bad_cpu_list_is_refused_naming_the_field(rt, make):
    if rt.name != "mctl-runtime":
        pytest.skip("the message is mctl-runtime's (runc and crun fail with the kernel's)")
    box = make("true")
    _edit_config(box, lambda doc: doc["linux"]["resources"].setdefault("cpu", {}).update(
        cpus="3-1"))
    result = rt("run", "--bundle", box.bundle, box.id, out=box.out, check=False)
    assert result.returncode == 1
    assert "linux.resources.cpu.cpus" in result.stderr and "'3-1'" in result.stderr


# -- devices ---------------------------------------------------------------------------------


def test_a_denied_device_fails_with_eperm_and_an_allowed_one_opens(rt, make):
    # Nodes for loop devices 7:0, which a rule allows to read, and 7:1, which
    # no rule allows. mknod is allowed for any number (runc's default rule):
    # opening is what the cgroup decides. The rootfs and /dev are nodev in
    # mctl-runtime (rootfs.py), so the nodes are made in a bind mount.
    box = make("mknod /mnt/a b 7 0 2>&1; mknod /mnt/b b 7 1 2>&1; "
               "head -c0 /mnt/a 2>&1 && echo a-opened; head -c0 /mnt/b 2>&1 || echo b-refused; "
               "head -c1 /dev/zero >/dev/null && echo zero-ok")

    def edit(doc: dict) -> None:
        doc["linux"]["resources"]["devices"] = [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}]
        for key in ("bounding", "effective", "permitted"):
            doc["process"]["capabilities"][key].append("CAP_MKNOD")
        doc["mounts"].append({"destination": "/mnt", "type": "bind", "source": nodes,
                              "options": ["rbind", "rw"]})
    nodes = os.path.join(box.bundle, "nodes")
    os.mkdir(nodes)
    _edit_config(box, edit)
    rt("run", "--bundle", box.bundle, box.id, out=box.out)
    lines = box.output().splitlines()
    # 7:0 passes the cgroup: opened, or refused by the loop driver (ENXIO), never EPERM.
    assert "a-opened" in lines or any("No such device" in x for x in lines), lines
    assert any("Operation not permitted" in x for x in lines), lines
    assert lines[-2:] == ["b-refused", "zero-ok"]


@pytest.mark.skipif(not V1, reason="devices.list is v1's")
def test_devices_list_is_runcs(rt, make):
    box = make("exec sleep 60")
    _edit_config(box, lambda doc: doc["linux"]["resources"].update(devices=[
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 4, "access": "rw"}]))
    rt("create", "--bundle", box.bundle, box.id, out=box.out)
    got = set(_read(_v1_file("devices", box.cgroup, "devices.list")).splitlines())
    rt("delete", "--force", box.id)
    runc_1_1 = {line for rule in devices.DEFAULT_RULES
                for line in [rule.v1_line()]} | {"c 4:* rw"}
    if rt.name == "crun":
        # crun 1.8 allows its own defaults: /dev/console (5:1) too, not 10:200.
        assert {"c 4:* rw", "c 1:3 rwm", "c 1:5 rwm", "c 136:* rwm"} <= got
    else:
        assert got == runc_1_1


# -- blockIO ---------------------------------------------------------------------------------


def _a_block_device() -> tuple[int, int]:
    with open("/proc/partitions") as f:
        for line in f.read().splitlines()[2:]:
            major, minor, _, name = line.split()
            if not name.startswith(("loop", "ram")):
                return int(major), int(minor)
    pytest.skip("no block device")


@pytest.mark.skipif(not V1, reason="io.max is unit-tested (no v2 io controller here)")
def test_block_io_throttles_are_written(rt, make):
    major, minor = _a_block_device()
    box = make("exec sleep 60")
    _edit_config(box, lambda doc: doc["linux"]["resources"].update(blockIO={
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 300}]}))
    rt("create", "--bundle", box.bundle, box.id, out=box.out)
    got = [_read(_v1_file("blkio", box.cgroup, f"blkio.throttle.{n}"))
           for n in ("read_bps_device", "write_iops_device")]
    rt("delete", "--force", box.id)
    assert got == [f"{major}:{minor} 1048576", f"{major}:{minor} 300"]


@pytest.mark.skipif(not V1, reason="v1 weight files")
def test_a_weight_without_a_proportional_scheduler_fails_naming_the_field(rt, make):
    if os.path.exists("/sys/fs/cgroup/blkio/blkio.weight") or \
            os.path.exists("/sys/fs/cgroup/blkio/blkio.bfq.weight"):
        pytest.skip("this kernel has a proportional I/O scheduler")
    if rt.name == "crun":
        pytest.skip("crun 1.8.1 fails too, but leaves its name=systemd cgroup behind")
    box = make("true")
    _edit_config(box, lambda doc: doc["linux"]["resources"].update(blockIO={"weight": 300}))
    result = rt("run", "--bundle", box.bundle, box.id, out=box.out, check=False)
    assert result.returncode != 0  # runc and crun fail too: the file is missing
    if rt.name == "mctl-runtime":
        assert "linux.resources.blockIO.weight" in result.stderr


# -- pause and resume ------------------------------------------------------------------------


def _ticks(box) -> int:  # type: ignore[no-untyped-def]
    return len(box.output().splitlines())


def test_pause_freezes_and_resume_thaws(rt, make):
    box = make("while :; do echo t; sleep 0.05; done")
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    box.wait_output("t\n")
    rt("pause", box.id)
    assert rt.state(box.id)["status"] == "paused"
    if V1:
        assert _read(_v1_file("freezer", box.cgroup, "freezer.state")) == "FROZEN"
    before = _ticks(box)
    time.sleep(0.3)
    assert _ticks(box) == before  # nothing ran while paused
    # crun 1.8.1 pauses a paused (and resumes a running) container without error.
    strict = rt.name != "crun"
    if strict:
        assert rt("pause", box.id, check=False).returncode != 0
    rt("resume", box.id)
    assert rt.state(box.id)["status"] == "running"
    _wait(lambda: _ticks(box) > before, "running again")
    if strict:
        assert rt("resume", box.id, check=False).returncode != 0  # not paused
    rt("pause", box.id)
    # A paused container is deleted with --force only, and nothing is left.
    assert rt("delete", box.id, check=False).returncode != 0
    rt("delete", "--force", box.id)
    assert rt("state", box.id, check=False).returncode != 0


# -- update ----------------------------------------------------------------------------------


@pytest.mark.skipif(not V1, reason="v1 file names")
def test_update_changes_memory_cpu_and_pids_of_a_running_container(rt, make):
    box = make("exec sleep 60", memory=48 * MiB, pids=64)
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    flags = ("--memory", "32m", "--cpu-quota", "50000", "--cpu-period", "100000")
    resources = os.path.join(box.bundle, "update.json")
    if rt.name == "crun":
        # crun 1.8.1 builds invalid JSON from the cpu flags: the same through -r.
        with open(resources, "w") as f:
            json.dump({"memory": {"limit": 32 * MiB},
                       "cpu": {"quota": 50000, "period": 100000}}, f)
        rt("update", "-r", resources, box.id)
    else:
        rt("update", *flags, box.id)
    with open(resources, "w") as f:
        json.dump({"pids": {"limit": 20}}, f)
    rt("update", "-r", resources, box.id)
    got = [_read(_v1_file("memory", box.cgroup, "memory.limit_in_bytes")),
           _read(_v1_file("cpu", box.cgroup, "cpu.cfs_quota_us")),
           _read(_v1_file("pids", box.cgroup, "pids.max"))]
    rt("delete", "--force", box.id)
    # The -r update kept the flags' memory and cpu values.
    assert got == [str(32 * MiB), "50000", "20"]


def test_update_refuses_a_bad_value_naming_it(rt, make):
    if rt.name != "mctl-runtime":
        pytest.skip("the messages are mctl-runtime's")
    box = make("exec sleep 60")
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    bad = rt("update", "--memory", "lots", box.id, check=False)
    swappiness = os.path.join(box.bundle, "bad.json")
    with open(swappiness, "w") as f:
        json.dump({"memory": {"swappiness": 300}}, f)
    bad_file = rt("update", "-r", swappiness, box.id, check=False)
    rt("delete", "--force", box.id)
    assert bad.returncode == 1 and "--memory: 'lots'" in bad.stderr
    assert bad_file.returncode == 1 and "linux.resources.memory.swappiness" in bad_file.stderr


# -- events ----------------------------------------------------------------------------------


def test_events_stats_has_runcs_shape(rt, make):
    if rt.name == "crun":
        pytest.skip("crun 1.8.1 has no events command")
    box = make("exec sleep 60", memory=48 * MiB, pids=64)
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    event = json.loads(rt("events", "--stats", box.id).stdout)
    rt("delete", "--force", box.id)
    assert event["type"] == "stats" and event["id"] == box.id
    data = event["data"]
    assert data["pids"]["current"] == 1 and data["pids"]["limit"] == 64
    assert data["memory"]["usage"]["limit"] == 48 * MiB
    assert data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0
    if rt.name == "mctl-runtime":  # runc leaves out zero throttling (omitempty)
        assert set(data["cpu"]["throttling"]) == {"periods", "throttledPeriods",
                                                  "throttledTime"}


def test_events_reports_an_oom_kill_and_ends_with_the_container(rt, make):
    if rt.name != "mctl-runtime":
        pytest.skip("runc's OOM notification is compared by shape in the unit tests")
    box = make("sleep 0.5; tail /dev/zero; exec sleep 1", memory=24 * MiB)
    import subprocess

    rt("run", "--detach", "--bundle", box.bundle, box.id, out=box.out)
    proc = subprocess.run([*rt.base, "events", "--interval", "100ms", box.id],
                          capture_output=True, text=True, timeout=30)
    rt("delete", "--force", box.id)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {"type": "oom", "id": box.id} in events
    assert any(e["type"] == "stats" for e in events)


# -- the v2 device program, on this machine's unified hierarchy ------------------------------


def _unified() -> str:
    for path in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    pytest.skip("no cgroup v2 hierarchy")


def test_the_v2_device_program_denies_with_eperm_and_allows_the_rules():
    unified = _unified()
    name = f"mctl-test-bpf-{secrets.token_hex(3)}"
    d = os.path.join(unified, name)
    os.mkdir(d)
    try:
        # Reading /dev/null is allowed; writing it and /dev/zero are not.
        fd = devices_bpf.BpfOps().load(devices_bpf.assemble(
            (DeviceRule(False, "a"), DeviceRule(True, "c", 1, 3, "r"))))
        dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            devices_bpf.BpfOps().attach(dir_fd, fd)
        finally:
            os.close(dir_fd)
            os.close(fd)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child joins the cgroup and reports each open's errno
            try:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write("0")
                results = []
                for path, flags in (("/dev/null", os.O_RDONLY), ("/dev/null", os.O_WRONLY),
                                    ("/dev/zero", os.O_RDONLY)):
                    try:
                        os.close(os.open(path, flags))
                        results.append(0)
                    except OSError as e:
                        results.append(e.errno)
                os.write(w, json.dumps(results).encode())
            finally:
                os._exit(0)
        os.close(w)
        out = os.read(r, 1024)
        os.close(r)
        os.waitpid(pid, 0)
        assert json.loads(out) == [0, errno.EPERM, errno.EPERM]
    finally:
        os.rmdir(d)


@pytest.mark.parametrize("count", [1, 256])
def test_the_kernels_verifier_accepts_the_program_up_to_the_rule_limit(count):
    # What every container gets on v2 (runc's defaults) plus `count` rules
    # with wildcards and limited access; 256 is config_cgroups' bound.
    rules = devices.effective_rules(tuple(
        DeviceRule(i % 2 == 0, "bc"[i % 2], 8 + i, ANY if i % 3 else i, "rw")
        for i in range(count)))
    fd = devices_bpf.BpfOps().load(devices_bpf.assemble(rules))
    assert fd > 2
    os.close(fd)
