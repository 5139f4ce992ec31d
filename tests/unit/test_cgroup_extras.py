"""cpuset, devices, blkio, freezer and stats over the fake cgroupfs, on v1 and v2.

The drivers and the extras modules run unchanged; FakeCgroupfs (from
test_cgroups_fake) records every kernel write, and a subclass here adds the
files of the cpuset, devices, freezer and blkio hierarchies (v1) and of the
cpuset and io controllers and the freezer (v2), with the kernel rules the
code depends on: a new v1 cpuset starts empty, freezer.state reads what was
written, cgroup.freeze shows in cgroup.events. The v2 device program is
checked by running it in a small eBPF interpreter against the rules'
meaning (last match wins, nothing matching denies).
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from pathlib import Path

import pytest
from test_cgroups_fake import CTR, LIMITS, NO_MOUNTINFO, FakeCgroupfs

from mctl.agent.runtime.cgroups import (
    ControllerUnavailable,
    V1Driver,
    V2Driver,
    blkio,
    container_setup,
    cpuset,
    detect,
    devices,
    devices_bpf,
    freezer,
    stats,
)
from mctl.agent.runtime.cgroups.extras import ANY, BlockIO, CgroupExtras, DeviceRule
from mctl.agent.runtime.cgroups.extras import ThrottleDevice as TD
from mctl.agent.runtime.cgroups.extras import WeightDevice as WD
from mctl.agent.runtime.oci import config as oci

MiB = 1 << 20
EXTRA_V1 = {
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": "", "cpuset.effective_cpus": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
              "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 512\n"
                                                           "Total 4608\n",
              "blkio.throttle.io_serviced_recursive": "8:0 Read 2\nTotal 2\n"},
}
EXTRA_V2 = {
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.max": "", "io.weight": "default 100", "io.stat": ""},
}


class Fake(FakeCgroupfs):
    """FakeCgroupfs with the optional v1 hierarchies' and v2 controllers' files."""

    def __init__(self, base: Path, bfq: bool = False, freeze_sticks: bool = True) -> None:
        super().__init__(base)
        self.bfq = bfq                      # a proportional scheduler: weight files exist
        self.freeze_sticks = freeze_sticks  # False: freezer.state stays FREEZING

    def _populate_v1(self, d: Path) -> None:
        super()._populate_v1(d)
        for controller in self.v1[self._hierarchy_of(str(d))]:
            for name, text in EXTRA_V1.get(controller, {}).items():
                (d / name).write_text(text)
            if controller == "blkio" and self.bfq:
                for name in ("blkio.bfq.weight", "blkio.bfq.weight_device"):
                    (d / name).write_text("")
        if str(d) in self.v1 and (d / "cpuset.cpus").exists():
            (d / "cpuset.cpus").write_text("0-3\n")  # the root has every cpu and node
            (d / "cpuset.mems").write_text("0\n")

    def _populate_v2(self, d: Path) -> None:
        super()._populate_v2(d)
        (d / "cgroup.freeze").write_text("0\n")
        (d / "cgroup.events").write_text("populated 0\nfrozen 0\n")
        for controller in (d.parent / "cgroup.subtree_control").read_text().split():
            for name, text in EXTRA_V2.get(controller, {}).items():
                (d / name).write_text(text)

    def write(self, path: str, value: str) -> None:
        name = os.path.basename(path)
        if name == "freezer.state" and value == "FROZEN" and not self.freeze_sticks:
            self.writes.append((os.path.relpath(path, self.base), value))
            Path(path).write_text("FREEZING\n")
            return
        super().write(path, value)
        if name == "cgroup.freeze":
            events = Path(path).parent / "cgroup.events"
            events.write_text(f"populated 1\nfrozen {value}\n")
        elif name == "cgroup.subtree_control":
            # Enabling a controller late (V2Driver.enable) adds its files to the children.
            d = Path(path).parent
            enabled = (d / "cgroup.subtree_control").read_text()
            for child in d.iterdir():
                if child.is_dir():
                    (child / "cgroup.controllers").write_text(enabled)
                    for controller in enabled.split():
                        for f, text in EXTRA_V2.get(controller, {}).items():
                            if not (child / f).exists():
                                (child / f).write_text(text)


@pytest.fixture
def v1(tmp_path: Path) -> tuple[V1Driver, Fake]:
    fake = Fake(tmp_path)
    for name in ("cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer", "blkio"):
        fake.v1_hierarchy(f"cgroup/{name}")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    assert isinstance(drv, V1Driver)
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    return drv, fake


@pytest.fixture
def v2(tmp_path: Path) -> tuple[V2Driver, Fake]:
    fake = Fake(tmp_path)
    fake.v2_hierarchy(tmp_path / "cgroup")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    assert isinstance(drv, V2Driver)
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    return drv, fake


def _read(drv, controller: str, name: str, path: str = CTR) -> str:  # type: ignore[no-untyped-def]
    return Path(drv.file(controller, path, name)).read_text().strip()


# -- v1: the optional hierarchies --------------------------------------------------------------


def test_v1_the_agents_cgroup_stays_out_of_the_optional_hierarchies(v1, tmp_path):
    drv, _ = v1
    # create() alone (the agent's start) makes nothing in cpuset, devices, freezer, blkio.
    assert not (tmp_path / "cgroup/cpuset" / CTR).exists()
    assert sorted(os.path.relpath(f, tmp_path) for f in drv.self_join_files(CTR)) == [
        f"cgroup/{c}/{CTR}/tasks" for c in ("cpu", "cpuacct", "memory", "pids")]


def test_v1_setup_joins_every_hierarchy_and_destroy_removes_them(v1, tmp_path):
    drv, fake = v1
    container_setup.setup(drv, CTR, None)
    joined = sorted(os.path.relpath(f, tmp_path) for f in drv.self_join_files(CTR))
    assert joined == sorted(f"cgroup/{c}/{CTR}/tasks" for c in (
        "cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer", "blkio"))
    drv.destroy(CTR)
    for c in ("cpuset", "devices", "freezer", "blkio", "memory"):
        assert not (tmp_path / "cgroup" / c / "mctl").exists(), c


def test_v1_make_in_an_unmounted_hierarchy_is_controller_unavailable(tmp_path):
    fake = Fake(tmp_path)
    for name in ("cpu", "cpuacct", "memory", "pids"):
        fake.v1_hierarchy(f"cgroup/{name}")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    assert isinstance(drv, V1Driver)
    with pytest.raises(ControllerUnavailable, match="cpuset"):
        drv.make_in("cpuset", CTR)
    # Nothing asked of the missing hierarchies: setup is content with none.
    drv.create(CTR, LIMITS)
    cpuset.setup(drv, CTR, None, None)
    with pytest.raises(OSError, match=r"^linux.resources.cpu.cpus: .*not mounted"):
        cpuset.setup(drv, CTR, "1", None)
    with pytest.raises(OSError, match=r"^linux.resources.devices: .*not mounted"):
        devices.setup(drv, CTR, None)


# -- cpuset ----------------------------------------------------------------------------------


def test_v1_cpuset_parents_inherit_then_the_container_gets_its_own(v1):
    drv, fake = v1
    cpuset.setup(drv, CTR, "1-2", "0")
    parents = ["mctl", "mctl/n1", CTR]
    inherited = [(f"cgroup/cpuset/{p}/{f}", v) for p in parents
                 for f, v in (("cpuset.cpus", "0-3"), ("cpuset.mems", "0"))]
    assert fake.written() == [*inherited, (f"cgroup/cpuset/{CTR}/cpuset.cpus", "1-2"),
                              (f"cgroup/cpuset/{CTR}/cpuset.mems", "0")]
    fake.writes.clear()
    # A second container under the same parents copies only into its own directory.
    cpuset.setup(drv, "mctl/n1/other", None, None)
    assert fake.written() == [("cgroup/cpuset/mctl/n1/other/cpuset.cpus", "0-3"),
                              ("cgroup/cpuset/mctl/n1/other/cpuset.mems", "0")]


def test_v2_cpuset_is_enabled_down_to_the_container_only_when_asked(v2):
    drv, fake = v2
    cpuset.setup(drv, CTR, None, None)
    assert fake.written() == []
    cpuset.setup(drv, CTR, "0", "0")
    assert fake.written() == [
        ("cgroup/cgroup.subtree_control", "+cpuset"),
        ("cgroup/mctl/cgroup.subtree_control", "+cpuset"),
        ("cgroup/mctl/n1/cgroup.subtree_control", "+cpuset"),
        (f"cgroup/{CTR}/cpuset.cpus", "0"), (f"cgroup/{CTR}/cpuset.mems", "0")]


def test_v2_cpuset_without_the_controller_names_the_field(tmp_path):
    fake = Fake(tmp_path)
    fake.v2_hierarchy(tmp_path / "cgroup", controllers="cpu memory pids")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    with pytest.raises(OSError, match=r"^linux.resources.cpu.cpus: .*cpuset is not available"):
        cpuset.setup(drv, CTR, "0", None)


# -- devices ---------------------------------------------------------------------------------


def test_v1_devices_deny_all_then_the_rules_then_runcs_defaults_and_the_nodes(v1):
    drv, fake = v1
    rules = (DeviceRule(True, "c", 4, ANY, "rw"), DeviceRule(False, "b", 8, 0, "w"))
    nodes = (oci.Device("/dev/kmsg", "c", 1, 11), oci.Device("/dev/p", "p"))
    devices.setup(drv, CTR, rules, nodes)
    d = f"cgroup/devices/{CTR}"
    assert fake.written() == [
        (f"{d}/devices.deny", "a"),
        (f"{d}/devices.allow", "c 4:* rw"),
        (f"{d}/devices.deny", "b 8:0 w"),
        (f"{d}/devices.allow", "c *:* m"), (f"{d}/devices.allow", "b *:* m"),
        (f"{d}/devices.allow", "c 1:3 rwm"), (f"{d}/devices.allow", "c 1:8 rwm"),
        (f"{d}/devices.allow", "c 1:7 rwm"), (f"{d}/devices.allow", "c 5:0 rwm"),
        (f"{d}/devices.allow", "c 1:5 rwm"), (f"{d}/devices.allow", "c 1:9 rwm"),
        (f"{d}/devices.allow", "c 136:* rwm"), (f"{d}/devices.allow", "c 5:2 rwm"),
        (f"{d}/devices.allow", "c 10:200 rwm"),
        (f"{d}/devices.allow", "c 1:11 rwm"),  # the linux.devices node; the fifo needs none
    ]


def test_v1_a_rule_the_kernel_refuses_is_named_by_its_index(v1):
    drv, fake = v1
    refuse = "b 9:9 r"
    real_write = fake.write

    def write(path: str, value: str) -> None:
        if value == refuse:
            raise OSError(22, "Invalid argument")
        real_write(path, value)

    fake.write = write  # type: ignore[method-assign]
    with pytest.raises(OSError, match=r"^linux.resources.devices\[1\]: write 'b 9:9 r'"):
        devices.setup(drv, CTR, (DeviceRule(True, "c", 1, 1, "r"),
                                 DeviceRule(True, "b", 9, 9, "r")))


class RecordingBpf:
    def __init__(self) -> None:
        self.loaded: list[bytes] = []
        self.attached: list[str] = []

    def load(self, program: bytes) -> int:
        self.loaded.append(program)
        return os.open("/dev/null", os.O_RDONLY)

    def attach(self, cgroup_fd: int, program_fd: int) -> None:
        self.attached.append(os.readlink(f"/proc/self/fd/{cgroup_fd}"))


def test_v2_devices_load_and_attach_the_program_of_the_effective_rules(v2, monkeypatch,
                                                                      tmp_path):
    drv, fake = v2
    bpf = RecordingBpf()
    monkeypatch.setattr(devices_bpf, "BpfOps", lambda: bpf)
    rules = (DeviceRule(True, "c", 4, ANY, "rw"),)
    devices.setup(drv, CTR, rules)
    assert bpf.loaded == [devices_bpf.assemble(devices.effective_rules(rules))]
    assert bpf.attached == [str(tmp_path / "cgroup" / CTR)]
    assert fake.written() == []  # no devices files on v2


# A small eBPF interpreter: just the instructions assemble() emits.
def _run(program: bytes, ctx: tuple[int, int, int]) -> int:
    mem = struct.pack("<III", *ctx)
    regs = [0] * 11
    regs[1] = -1  # the context pointer: only loads from it are emitted
    pc = 0
    insns = [struct.unpack("<BBhi", program[i:i + 8]) for i in range(0, len(program), 8)]
    for _ in range(10_000):
        op, reg, off, imm = insns[pc]
        dst, src = reg & 0xF, reg >> 4
        pc += 1
        if op == 0x61:
            assert regs[src] == -1
            regs[dst] = struct.unpack_from("<I", mem, off)[0]
        elif op == 0x57:
            regs[dst] &= imm & 0xFFFFFFFF
        elif op == 0x77:
            regs[dst] >>= imm
        elif op == 0xb7:
            regs[dst] = imm
        elif op == 0xbf:
            regs[dst] = regs[src]
        elif op == 0x55:
            pc += off if regs[dst] != imm else 0
        elif op == 0x5d:
            pc += off if regs[dst] != regs[src] else 0
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("no exit")


def _meaning(rules: tuple[DeviceRule, ...], kind: str, access: str, major: int,
             minor: int) -> int:
    """What the rules mean: the last rule that matches decides; none matching denies."""
    verdict = 0
    for r in rules:
        if (r.type in ("a", kind) and (r.type == "a" or set(access) <= set(r.access))
                and r.major in (ANY, major) and r.minor in (ANY, minor)):
            verdict = 1 if r.allow else 0
    return verdict


@pytest.mark.parametrize("rules", [
    devices.effective_rules(None),
    devices.effective_rules((DeviceRule(True, "b", 8, ANY, "r"),
                             DeviceRule(False, "c", 1, 3, "w"))),
    (DeviceRule(False, "a"), DeviceRule(True, "a"), DeviceRule(False, "c", 1, 5, "rwm")),
    (DeviceRule(True, "c", ANY, 7, "m"),),
])
def test_the_v2_program_means_what_the_rules_mean(rules):
    program = devices_bpf.assemble(rules)
    kinds = {"c": devices_bpf.DEV_CHAR, "b": devices_bpf.DEV_BLOCK}
    bits = {"r": devices_bpf.ACC_READ, "w": devices_bpf.ACC_WRITE, "m": devices_bpf.ACC_MKNOD}
    for kind, access, major, minor in itertools.product(
            "cb", ("r", "w", "m", "rw", "rwm"), (1, 4, 8, 136), (0, 3, 5, 7)):
        acc = sum(bits[a] for a in access)
        got = _run(program, ((acc << 16) | kinds[kind], major, minor))
        assert got == _meaning(rules, kind, access, major, minor), (kind, access, major, minor)


# -- blkio -----------------------------------------------------------------------------------

BLOCK = BlockIO(weight=300, leaf_weight=200, weight_devices=(WD(8, 0, 400, 100),),
                read_bps=(TD(8, 0, MiB),), write_iops=(TD(8, 16, 50), TD(8, 32, 0)))


def test_v1_block_io_with_bfq(tmp_path):
    fake = Fake(tmp_path, bfq=True)
    for name in ("cpu", "cpuacct", "memory", "pids", "blkio"):
        fake.v1_hierarchy(f"cgroup/{name}")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    fake.writes.clear()
    with pytest.raises(OSError, match=r"^linux.resources.blockIO.leafWeight: "
                                      r"blkio.leaf_weight does not exist"):
        blkio.setup(drv, CTR, BLOCK)
    fake.writes.clear()
    blkio.setup(drv, CTR, BLOCK.replace(leaf_weight=None, weight_devices=(WD(8, 0, 400),)))
    d = f"cgroup/blkio/{CTR}"
    assert fake.written() == [
        (f"{d}/blkio.bfq.weight", "300"), (f"{d}/blkio.bfq.weight_device", "8:0 400"),
        (f"{d}/blkio.throttle.read_bps_device", f"8:0 {MiB}"),
        (f"{d}/blkio.throttle.write_iops_device", "8:16 50"),
        (f"{d}/blkio.throttle.write_iops_device", "8:32 0")]


def test_v1_a_weight_without_a_proportional_scheduler_names_the_field(v1):
    drv, _ = v1
    with pytest.raises(OSError, match=r"^linux.resources.blockIO.weight: blkio.bfq.weight "
                                      r"or blkio.weight does not exist"):
        blkio.setup(drv, CTR, BlockIO(weight=100))


def test_v2_block_io_scales_weights_and_writes_io_max(v2):
    drv, fake = v2
    warnings = blkio.setup(drv, CTR, BLOCK)
    assert [w.split(":")[0] for w in warnings] == [
        "linux.resources.blockIO.leafWeight",
        "linux.resources.blockIO.weightDevice[0].leafWeight"]
    assert fake.written()[-6:] == [
        ("cgroup/mctl/n1/cgroup.subtree_control", "+io"),
        (f"cgroup/{CTR}/io.weight", f"default {blkio.v2_weight(300)}"),
        (f"cgroup/{CTR}/io.weight", f"8:0 {blkio.v2_weight(400)}"),
        (f"cgroup/{CTR}/io.max", f"8:0 rbps={MiB}"),
        (f"cgroup/{CTR}/io.max", "8:16 wiops=50"),
        (f"cgroup/{CTR}/io.max", "8:32 wiops=max")]  # 0: no throttle, as on v1
    # runc's mapping of blkio's 10..1000 onto io.weight's 1..10000.
    assert (blkio.v2_weight(10), blkio.v2_weight(500), blkio.v2_weight(1000)) == (1, 4950, 10000)


# -- freezer ---------------------------------------------------------------------------------


def test_v1_freeze_and_thaw(v1, tmp_path):
    drv, fake = v1
    container_setup.setup(drv, CTR, None)
    root = str(tmp_path / "cgroup")
    assert not freezer.is_frozen(CTR, root)
    freezer.freeze(drv, CTR)
    assert _read(drv, "freezer", "freezer.state") == "FROZEN"
    assert freezer.is_frozen(CTR, root)
    freezer.thaw(drv, CTR)
    assert not freezer.is_frozen(CTR, root)
    assert [v for p, v in fake.written() if p.endswith("freezer.state")] == ["FROZEN", "THAWED"]


def test_v1_a_freeze_that_does_not_complete_is_undone(tmp_path):
    fake = Fake(tmp_path, freeze_sticks=False)
    for name in ("cpu", "cpuacct", "memory", "pids", "freezer"):
        fake.v1_hierarchy(f"cgroup/{name}")
    drv = detect(str(tmp_path / "cgroup"), mountinfo=NO_MOUNTINFO, ops=fake)
    drv.create(CTR, LIMITS)
    freezer.setup(drv, CTR)
    with pytest.raises(OSError, match="not frozen within 0.05s"):
        freezer.freeze(drv, CTR, timeout=0.05)
    assert fake.written()[-1][1] == "THAWED"


def test_v1_a_cgroup_outside_the_freezer_cannot_be_paused(v1):
    drv, _ = v1
    with pytest.raises(OSError, match="not in the freezer hierarchy"):
        freezer.freeze(drv, CTR)


def test_v2_freeze_waits_for_cgroup_events_and_thaw(v2, tmp_path):
    drv, fake = v2
    root = str(tmp_path / "cgroup")
    freezer.freeze(drv, CTR)
    assert freezer.is_frozen(CTR, root)
    freezer.thaw(drv, CTR)
    assert not freezer.is_frozen(CTR, root)
    assert fake.written() == [(f"cgroup/{CTR}/cgroup.freeze", "1"),
                              (f"cgroup/{CTR}/cgroup.freeze", "0")]


# -- stats -----------------------------------------------------------------------------------


def test_v1_stats_have_runcs_keys(v1):
    drv, _ = v1
    container_setup.setup(drv, CTR, None)
    Path(drv.file("cpuacct", CTR, "cpuacct.usage")).write_text("5000\n")
    Path(drv.file("cpuacct", CTR, "cpuacct.usage_percpu")).write_text("3000 2000\n")
    Path(drv.file("cpuacct", CTR, "cpuacct.stat")).write_text("user 3\nsystem 1\n")
    Path(drv.file("memory", CTR, "memory.usage_in_bytes")).write_text(f"{MiB}\n")
    Path(drv.file("pids", CTR, "pids.current")).write_text("2\n")
    data = stats.collect(drv, CTR)
    ticks = os.sysconf("SC_CLK_TCK")
    assert data["cpu"]["usage"] == {"total": 5000, "percpu": [3000, 2000],
                                    "kernel": 10**9 // ticks, "user": 3 * 10**9 // ticks}
    assert data["memory"]["usage"]["usage"] == MiB
    assert data["memory"]["usage"]["limit"] == 32 * MiB
    assert data["pids"] == {"current": 2, "limit": 64}
    assert data["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512}]
    json.dumps(data)  # what events prints


def test_v2_stats_have_runcs_keys(v2):
    drv, _ = v2
    Path(drv.file("", CTR, "cpu.stat")).write_text(
        "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\n"
        "throttled_usec 3\n")
    Path(drv.file("", CTR, "io.stat")).write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n")
    data = stats.collect(drv, CTR)
    assert data["cpu"] == {"usage": {"total": 7000, "percpu": [], "kernel": 2000,
                                     "user": 5000},
                           "throttling": {"periods": 4, "throttledPeriods": 1,
                                          "throttledTime": 3000}}
    assert data["memory"]["usage"]["limit"] == 32 * MiB
    assert data["pids"] == {"current": 0, "limit": 64}
    assert data["blkio"]["ioServicedRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 1},
        {"major": 8, "minor": 0, "op": "Write", "value": 2}]


# -- config.json -----------------------------------------------------------------------------


def _config(resources: dict) -> dict:
    return {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": "rootfs"},
            "linux": {"resources": resources}}


def test_the_fields_parse_and_round_trip():
    resources = {
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                    {"allow": True, "type": "b", "major": 8, "access": "r"}],
        "cpu": {"cpus": "0-1,3", "mems": "0"},
        "blockIO": {"weight": 300, "leafWeight": 0,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 500}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100}]},
    }
    config = oci.parse_config(_config(resources))
    assert config.resources.cgroup_extras == CgroupExtras(
        cpus="0-1,3", mems="0",
        devices=(DeviceRule(True, "c", 1, 3, "rw"), DeviceRule(True, "b", 8, ANY, "r")),
        block_io=BlockIO(weight=300, weight_devices=(WD(8, 0, 500),), read_bps=(TD(8, 0, 100),)))
    assert oci.parse_config(oci.to_json(config)) == config
    # The agent's lone deny-all rule is no extra at all: its start path stays as it was.
    assert oci.parse_config(_config({"devices": [{"allow": False, "access": "rwm"}]})
                            ).resources.cgroup_extras is None


@pytest.mark.parametrize("resources, field", [
    ({"devices": [{"access": "rwm"}]}, "linux.resources.devices[0].allow"),
    ({"devices": [{"allow": True, "type": "p"}]}, "linux.resources.devices[0].type"),
    ({"devices": [{"allow": True, "access": "rx"}]}, "linux.resources.devices[0].access"),
    ({"devices": [{"allow": True, "access": ""}]}, "linux.resources.devices[0].access"),
    ({"devices": [{"allow": True, "major": -2}]}, "linux.resources.devices[0].major"),
    ({"devices": [{"allow": True}] * 257}, "linux.resources.devices"),
    ({"devices": {}}, "linux.resources.devices"),
    ({"cpu": {"cpus": "3-1"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "0,a"}}, "linux.resources.cpu.mems"),
    ({"cpu": {"cpus": "0," * 600}}, "linux.resources.cpu.cpus"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight"),
    ({"blockIO": {"weightDevice": [{"major": 8}]}},
     "linux.resources.blockIO.weightDevice[0].minor"),
    ({"blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": -1}]}},
     "linux.resources.blockIO.throttleWriteIOPSDevice[0].rate"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}] * 65}},
     "linux.resources.blockIO.throttleReadBpsDevice"),
])
def test_a_bad_field_is_refused_naming_it(resources, field):
    with pytest.raises(oci.ConfigError) as info:
        oci.parse_config(_config(resources))
    assert info.value.field_path == field


# -- a cgroup mount without a cgroup namespace shows the optional hierarchies joined -----------


def test_a_cgroup_mount_binds_the_optional_hierarchies_the_init_joined(tmp_path, monkeypatch):
    from mctl.agent.runtime import rootfs
    from mctl.agent.runtime import syscalls as sc

    host = [("/sys/fs/cgroup/memory", "cgroup", "memory"),
            ("/sys/fs/cgroup/cpuset", "cgroup", "cpuset"),
            ("/sys/fs/cgroup/freezer", "cgroup", "freezer")]
    # mctl-runtime's init is in its own cpuset cgroup; the agent's would be at "/".
    own = {"memory": "/mctl/c1", "cpuset": "/mctl/c1", "freezer": "/"}
    monkeypatch.setattr(rootfs, "_host_cgroup_mounts", lambda: host)
    monkeypatch.setattr(rootfs, "_own_cgroup_paths", lambda: own)
    fake = sc.RecordingSyscalls()
    config = oci.Config(args=("true",), namespaces=("pid", "mount"))
    rootfs._mount_one(fake, str(tmp_path), oci.Mount("/sys/fs/cgroup", "cgroup", "cgroup",
                                                     ("rw",)), config)
    binds = [call[1] for call in fake.calls if call[4] == sc.MS_BIND]
    assert binds == ["/sys/fs/cgroup/memory/mctl/c1", "/sys/fs/cgroup/cpuset/mctl/c1"]
