"""The devices controller: which device nodes a container may open or mknod.

`linux.resources.devices` is a list of allow/deny rules (type a/c/b,
major, minor, access "rwm"); a later rule overrides an earlier one for the
devices it matches. As runc does (libcontainer/specconv, AllowedDevices),
the container's rules are followed by allow rules for the standard nodes
every container gets (null, zero, full, random, urandom, tty, the pty
devices) and for each `linux.devices` node, so a config that denies
everything (Docker's, the agent's, `runc spec`'s) still has a working /dev.

v1: a hierarchy of its own. A new cgroup inherits its parent's rules
(allow-all under the root), so "a" is first written to devices.deny, then
each rule in order to devices.allow or devices.deny, and the kernel's
devices.list is the outcome. Opening a denied node then fails with EPERM.

v2: no files; a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup
decides (devices_bpf.py).
"""

from __future__ import annotations

from .base import CgroupDriver, CgroupWriteError
from .extras import ANY, DeviceRule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..oci.config import Device

# runc 1.1's AllowedDevices, in its order: mknod of any char or block node
# (the node is still unusable unless allowed below), then the standard
# nodes, the pty slaves (136:*), /dev/ptmx (5:2) and tun/tap (10:200).
DEFAULT_RULES = (
    DeviceRule(True, "c", ANY, ANY, "m"),
    DeviceRule(True, "b", ANY, ANY, "m"),
    DeviceRule(True, "c", 1, 3, "rwm"),     # /dev/null
    DeviceRule(True, "c", 1, 8, "rwm"),     # /dev/random
    DeviceRule(True, "c", 1, 7, "rwm"),     # /dev/full
    DeviceRule(True, "c", 5, 0, "rwm"),     # /dev/tty
    DeviceRule(True, "c", 1, 5, "rwm"),     # /dev/zero
    DeviceRule(True, "c", 1, 9, "rwm"),     # /dev/urandom
    DeviceRule(True, "c", 136, ANY, "rwm"),  # /dev/pts/*
    DeviceRule(True, "c", 5, 2, "rwm"),     # /dev/ptmx
    DeviceRule(True, "c", 10, 200, "rwm"),  # /dev/net/tun
)


def effective_rules(rules: tuple[DeviceRule, ...] | None,
                    nodes: tuple[Device, ...] = ()) -> tuple[DeviceRule, ...]:
    """Deny all, the config's rules, then the defaults and the linux.devices nodes (runc)."""
    out = [DeviceRule(False, "a")]
    out.extend(rules or ())
    out.extend(DEFAULT_RULES)
    for node in nodes:
        if node.type in ("c", "u", "b"):  # a fifo ("p") is no device to the cgroup
            out.append(DeviceRule(True, "b" if node.type == "b" else "c", node.major,
                                  node.minor, "rwm"))
    return tuple(out)


def setup(driver: CgroupDriver, path: str, rules: tuple[DeviceRule, ...] | None,
          nodes: tuple[Device, ...] = ()) -> None:
    """Restricts the container's cgroup to the effective rules; OSError naming the field."""
    from .v1 import V1Driver

    full = effective_rules(rules, nodes)
    if isinstance(driver, V1Driver):
        if "devices" not in driver.optional:
            raise OSError("linux.resources.devices: the devices cgroup controller is not "
                          "mounted, so device access cannot be restricted")
        driver.make_in("devices", path)
        for i, rule in enumerate(full):
            name = "devices.allow" if rule.allow else "devices.deny"
            try:
                driver.write_file(driver.file("devices", path, name), rule.v1_line())
            except CgroupWriteError as e:
                # Index 0 is our deny-all; the config's rules follow it.
                where = (f"linux.resources.devices[{i - 1}]" if rules and 0 < i <= len(rules)
                         else "linux.resources.devices")
                raise OSError(f"{where}: {e}") from None
        return
    from . import devices_bpf

    devices_bpf.install(driver, path, full)
