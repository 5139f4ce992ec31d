"""linux.resources.memory beyond the limit: soft limit, swappiness, OOM killer, TCP buffers.

What runc writes for these fields, where the cgroup version has a file:

  field             v1 (memory controller)              v2
  reservation       memory.soft_limit_in_bytes          memory.low
  swappiness        memory.swappiness                   none: ignored, with a warning
  disableOOMKiller  memory.oom_control = 1              none: ignored, with a warning
  kernelTCP         memory.kmem.tcp.limit_in_bytes      none: ignored, with a warning

A value the kernel refuses fails the start, naming the field and the file.
Only a config that sets one of them pays for this module (spawn.py).
"""

from __future__ import annotations

import os

from ..lazylog import LazyLogger
from .base import CgroupDriver, CgroupWriteError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..oci.config import Resources

log = LazyLogger(__name__)

_V1_FILES = {
    "reservation": "memory.soft_limit_in_bytes",
    "swappiness": "memory.swappiness",
    "disableOOMKiller": "memory.oom_control",
    "kernelTCP": "memory.kmem.tcp.limit_in_bytes",
}
_V2_FILES = {"reservation": "memory.low"}


def settings(res: Resources) -> dict[str, str]:
    """config.json field name -> the value to write, for the fields given."""
    out: dict[str, str] = {}
    if res.memory_reservation is not None:
        # -1 or 0 is "no reservation" in the spec's users (Docker writes 0).
        out["reservation"] = (str(res.memory_reservation) if res.memory_reservation > 0
                              else "-1")
    if res.memory_swappiness is not None:
        out["swappiness"] = str(res.memory_swappiness)
    if res.disable_oom_killer:
        out["disableOOMKiller"] = "1"
    if res.memory_kernel_tcp is not None:
        out["kernelTCP"] = str(res.memory_kernel_tcp) if res.memory_kernel_tcp > 0 else "-1"
    return out


def apply(driver: CgroupDriver, path: str, res: Resources) -> list[str]:
    """Writes the fields into the container's cgroup; returns the warnings for those skipped."""
    warnings = []
    files = _V1_FILES if driver.mode == "v1" else _V2_FILES
    for field, value in settings(res).items():
        name = files.get(field)
        if name is None:
            warnings.append(f"linux.resources.memory.{field}: not supported on cgroup v2, "
                            "ignored (as runc)")
            continue
        if field == "reservation" and driver.mode == "v2" and value == "-1":
            value = "0"
        target = driver.file("memory", path, name)
        if not os.path.exists(target):
            warnings.append(f"linux.resources.memory.{field}: {name} does not exist on "
                            "this kernel, ignored")
            continue
        try:
            driver.write_file(target, value)
        except CgroupWriteError as e:
            raise OSError(f"linux.resources.memory.{field}: {e}") from None
    for warning in warnings:
        log.real().warning(warning)
    return warnings
