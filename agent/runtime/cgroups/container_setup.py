"""mctl-runtime's cgroups beyond cpu, memory and pids, made as runc makes them for every container.

`setup` runs after the container's cgroup exists (CgroupDriver.create) and
before its init joins it, so that on v1 the init joins the cpuset, devices,
freezer and blkio hierarchies too (V1Driver.make_in records where it made
the cgroup; self_join_files adds those). What each part does is in its
module: cpuset.py, devices.py (and devices_bpf.py on v2), freezer.py,
blkio.py; the values are extras.py's records.
"""

from __future__ import annotations

from . import blkio, cpuset, devices, freezer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..oci.config import Device
    from .base import CgroupDriver
    from .extras import CgroupExtras


def setup(driver: CgroupDriver, path: str, extras: CgroupExtras | None,
          nodes: tuple[Device, ...] = ()) -> list[str]:
    """Applies `extras` to the container's existing cgroup, before its init joins it.

    `nodes` are config.json's linux.devices, which get allow rules too.
    Returns warnings for settings this cgroup version has no file for.
    Raises OSError with one line naming the config field on failure.
    """
    cpuset.setup(driver, path, extras.cpus if extras else None,
                 extras.mems if extras else None)
    devices.setup(driver, path, extras.devices if extras else None, nodes)
    freezer.setup(driver, path)
    return blkio.setup(driver, path, extras.block_io if extras else None)
