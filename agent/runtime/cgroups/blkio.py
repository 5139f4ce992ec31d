"""Block I/O: `linux.resources.blockIO` weights and throttles.

What runc writes, per cgroup version (Documentation/admin-guide/cgroup-v1/
blkio-controller.rst and cgroup-v2.rst, "IO"):

  field                  v1 (blkio hierarchy)                    v2 (io controller)
  weight                 blkio.bfq.weight, else blkio.weight     io.bfq.weight, else io.weight
                                                                 "default W'" (W' scaled)
  leafWeight             blkio.leaf_weight                       none: ignored, with a warning
  weightDevice[].weight  blkio(.bfq).weight_device "M:m W"       io.bfq.weight / io.weight "M:m W"
  weightDevice[].leafWeight  blkio.leaf_weight_device            none: ignored, with a warning
  throttleReadBpsDevice  blkio.throttle.read_bps_device "M:m R"  io.max "M:m rbps=R"
  throttleWriteBpsDevice blkio.throttle.write_bps_device         io.max "M:m wbps=R"
  throttleReadIOPSDevice blkio.throttle.read_iops_device         io.max "M:m riops=R"
  throttleWriteIOPSDevice blkio.throttle.write_iops_device       io.max "M:m wiops=R"

Weights need a proportional I/O scheduler (BFQ, or CFQ before Linux 5.0);
without one the files are missing and, as with runc, the start fails naming
the field. The kernel refuses a throttle for a device that does not exist.
io.weight's range is 1-10000 with 100 the default, blkio's 10-1000 with
500: runc maps one onto the other (1 + (w - 10) * 9999 / 990), and so does
this module.
"""

from __future__ import annotations

import os

from ..lazylog import LazyLogger
from .base import CgroupDriver, CgroupError, CgroupWriteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .extras import BlockIO, ThrottleDevice

log = LazyLogger(__name__)

_THROTTLES = (
    # (BlockIO attribute, config.json field, v1 file, v2 io.max key)
    ("read_bps", "throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps"),
    ("write_bps", "throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps"),
    ("read_iops", "throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops"),
    ("write_iops", "throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops"),
)
FIELD = "linux.resources.blockIO"


def v2_weight(weight: int) -> int:
    """A blkio weight (10-1000) as an io.weight (1-10000), as runc converts it."""
    return 1 + (weight - 10) * 9999 // 990


def setup(driver: CgroupDriver, path: str, block_io: BlockIO | None) -> list[str]:
    """Puts the container's cgroup in the blkio/io controller and applies `block_io`."""
    from .v1 import V1Driver
    from .v2 import V2Driver

    if isinstance(driver, V1Driver):
        if "blkio" not in driver.optional:
            if block_io is None:
                return []
            raise OSError(f"{FIELD}: the blkio cgroup controller is not mounted")
        driver.make_in("blkio", path)
    elif isinstance(driver, V2Driver):
        if block_io is None:
            return []
        try:
            driver.enable(path, "io")
        except (OSError, CgroupError) as e:
            raise OSError(f"{FIELD}: {e}") from None
    return update(driver, path, block_io)


def update(driver: CgroupDriver, path: str, block_io: BlockIO | None) -> list[str]:
    """Writes what `block_io` sets; returns warnings for what this version cannot set."""
    if block_io is None:
        return []
    v1 = driver.mode == "v1"
    warnings: list[str] = []

    def where(name: str) -> str:
        return driver.file("blkio" if v1 else "io", path, name)

    def write(field: str, names: tuple[str, ...], value: str) -> None:
        # The first of `names` that exists (bfq's file before the generic one).
        targets = [where(n) for n in names if os.path.exists(where(n))]
        if not targets:
            raise OSError(f"{FIELD}.{field}: {' or '.join(names)} does not exist "
                          "(no proportional I/O scheduler such as BFQ on this kernel)")
        try:
            driver.write_file(targets[0], value)
        except CgroupWriteError as e:
            raise OSError(f"{FIELD}.{field}: {e}") from None

    prefix = "blkio" if v1 else "io"
    if block_io.weight is not None:
        if v1:
            write("weight", ("blkio.bfq.weight", "blkio.weight"), str(block_io.weight))
        elif os.path.exists(where("io.bfq.weight")):
            write("weight", ("io.bfq.weight",), str(block_io.weight))
        else:
            write("weight", ("io.weight",), f"default {v2_weight(block_io.weight)}")
    if block_io.leaf_weight is not None:
        if v1:
            write("leafWeight", ("blkio.leaf_weight",), str(block_io.leaf_weight))
        else:
            warnings.append(f"{FIELD}.leafWeight: not supported on cgroup v2, ignored (as runc)")
    for i, wd in enumerate(block_io.weight_devices):
        device = f"{wd.major}:{wd.minor}"
        if wd.weight is not None:
            names: tuple[str, ...]
            bfq = os.path.exists(where(f"{prefix}.bfq.weight"))
            if v1:
                names = ("blkio.bfq.weight_device", "blkio.weight_device")
                value = f"{device} {wd.weight}"
            elif bfq:
                names, value = ("io.bfq.weight",), f"{device} {wd.weight}"
            else:
                names, value = ("io.weight",), f"{device} {v2_weight(wd.weight)}"
            write(f"weightDevice[{i}].weight", names, value)
        if wd.leaf_weight is not None:
            if v1:
                write(f"weightDevice[{i}].leafWeight", ("blkio.leaf_weight_device",),
                      f"{device} {wd.leaf_weight}")
            else:
                warnings.append(f"{FIELD}.weightDevice[{i}].leafWeight: not supported on "
                                "cgroup v2, ignored (as runc)")
    for attr, field, v1_file, key in _THROTTLES:
        devices: tuple[ThrottleDevice, ...] = getattr(block_io, attr)
        for i, td in enumerate(devices):
            if v1:
                write(f"{field}[{i}]", (v1_file,), f"{td.major}:{td.minor} {td.rate}")
            else:
                # 0 removes a v1 throttle; io.max spells that "max".
                rate = str(td.rate) if td.rate else "max"
                write(f"{field}[{i}]", ("io.max",), f"{td.major}:{td.minor} {key}={rate}")
    for warning in warnings:
        log.real().warning(warning)
    return warnings
