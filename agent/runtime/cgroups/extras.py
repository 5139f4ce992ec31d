"""linux.resources beyond cpu quota, memory and pids: the records, and what uses them.

The agent's own containers need none of these, so they stay off its start
path: only `mctl-runtime` (oci/cli.py) calls container_setup.setup, after the
container's cgroup exists and before its init joins it, as runc does for
every container:

- cpuset (cpuset.py): `linux.resources.cpu.cpus` / `.mems`;
- devices (devices.py): `linux.resources.devices` rules, then runc's
  default rules for the standard nodes and an allow rule for each
  `linux.devices` node;
- blkio (blkio.py): `linux.resources.blockIO`;
- freezer (freezer.py): nothing is set, but on cgroup v1 the container must
  be in the freezer hierarchy for `pause` to work later.

On v1 each is a hierarchy of its own (V1Driver.make_in makes the
container's cgroup there, and the init joins every hierarchy it is in); on
v2 they are controllers enabled in the one hierarchy (V2Driver.enable), and
the devices rules are an eBPF program where runc loads one (devices.py).

The records here are what config.json's fields parse into
(oci/config_cgroups.py) and what `update` merges into; this module imports
nothing of the runtime but Record, so config.py and every cgroup module can
use it.
"""

from __future__ import annotations

from ..record import Record

# A major or minor number that matches any device ('*' in a v1 rule).
ANY = -1


class DeviceRule(Record):
    """One linux.resources.devices entry: allow or deny `access` to matching devices."""

    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str = "a", major: int = ANY, minor: int = ANY,
                 access: str = "rwm") -> None:
        self.allow = allow
        self.type = type        # "a" (all), "c" (char) or "b" (block)
        self.major = major      # ANY for every major number
        self.minor = minor
        self.access = access    # a subset of "rwm": read, write, mknod

    def v1_line(self) -> str:
        """The rule as devices.allow / devices.deny take it: "c 1:3 rwm", "a"."""
        if self.type == "a":
            return "a"
        major = "*" if self.major == ANY else str(self.major)
        minor = "*" if self.minor == ANY else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


class WeightDevice(Record):
    """One blockIO.weightDevice entry; None leaves that weight unset."""

    __slots__ = ("major", "minor", "weight", "leaf_weight")

    def __init__(self, major: int, minor: int, weight: int | None = None,
                 leaf_weight: int | None = None) -> None:
        self.major = major
        self.minor = minor
        self.weight = weight
        self.leaf_weight = leaf_weight


class ThrottleDevice(Record):
    """One blockIO.throttle*Device entry: a rate (bytes or operations per second)."""

    __slots__ = ("major", "minor", "rate")

    def __init__(self, major: int, minor: int, rate: int) -> None:
        self.major = major
        self.minor = minor
        self.rate = rate


class BlockIO(Record):
    """linux.resources.blockIO; None and () leave a setting as the kernel has it."""

    __slots__ = ("weight", "leaf_weight", "weight_devices", "read_bps", "write_bps",
                 "read_iops", "write_iops")

    def __init__(self, weight: int | None = None, leaf_weight: int | None = None,
                 weight_devices: tuple[WeightDevice, ...] = (),
                 read_bps: tuple[ThrottleDevice, ...] = (),
                 write_bps: tuple[ThrottleDevice, ...] = (),
                 read_iops: tuple[ThrottleDevice, ...] = (),
                 write_iops: tuple[ThrottleDevice, ...] = ()) -> None:
        self.weight = weight
        self.leaf_weight = leaf_weight
        self.weight_devices = weight_devices
        self.read_bps = read_bps
        self.write_bps = write_bps
        self.read_iops = read_iops
        self.write_iops = write_iops


class CgroupExtras(Record):
    """The parts of linux.resources this package applies; None means not given."""

    __slots__ = ("cpus", "mems", "devices", "block_io")

    def __init__(self, cpus: str | None = None, mems: str | None = None,
                 devices: tuple[DeviceRule, ...] | None = None,
                 block_io: BlockIO | None = None) -> None:
        self.cpus = cpus
        self.mems = mems
        self.devices = devices
        self.block_io = block_io

