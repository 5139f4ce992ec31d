"""config.json's linux.resources fields for cpuset, devices and block I/O (cgroups/extras.py).

Checked here field by field, as the rest of config.json is (config.py), so a
bad value is refused before anything is made, with one line naming it.
Every list is bounded: these rules are written to the kernel one by one.
Also used by `mctl-runtime update -r FILE` (oci/cli_update.py), whose file
is a LinuxResources object.
"""

from __future__ import annotations

from ..cgroups.extras import ANY, BlockIO, CgroupExtras, DeviceRule, ThrottleDevice, WeightDevice
from .config_fields import ConfigError, _get

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_DEVICE_RULES = 256
MAX_BLOCK_DEVICES = 64          # entries in each blockIO list
MAX_CPU_LIST = 1024             # characters of a cpus/mems list
WHERE = "linux.resources."
DENY_ALL = DeviceRule(False, "a", ANY, ANY, "rwm")
THROTTLES = (("throttleReadBpsDevice", "read_bps"), ("throttleWriteBpsDevice", "write_bps"),
             ("throttleReadIOPSDevice", "read_iops"), ("throttleWriteIOPSDevice", "write_iops"))


def present(res: dict[str, Any]) -> bool:
    """Whether linux.resources has any field this module parses."""
    cpu = res.get("cpu")
    return ("devices" in res or "blockIO" in res
            or isinstance(cpu, dict) and ("cpus" in cpu or "mems" in cpu))


def parse(res: dict[str, Any], where: str = WHERE) -> CgroupExtras | None:
    """The cpuset, devices and blockIO fields of a linux.resources object, or None."""
    if not present(res):
        return None
    cpu = _get(res, "cpu", dict, where, {})
    devices = None
    if "devices" in res:
        rules = _device_rules(_get(res, "devices", list, where), f"{where}devices")
        # Leading deny-all rules change nothing: the effective rules start
        # with one (devices.py). Without them the agent's config round-trips.
        while rules and rules[0] == DENY_ALL:
            rules = rules[1:]
        devices = rules or None
    block_io = None
    if "blockIO" in res:
        block_io = _block_io(_get(res, "blockIO", dict, where), f"{where}blockIO.")
    extras = CgroupExtras(cpus=_cpu_list(cpu, "cpus", f"{where}cpu."),
                          mems=_cpu_list(cpu, "mems", f"{where}cpu."),
                          devices=devices, block_io=block_io)
    return None if extras == CgroupExtras() else extras


def _cpu_list(cpu: dict[str, Any], key: str, where: str) -> str | None:
    """A kernel cpu list ("0-3,6"); the kernel checks it against the machine."""
    value: str | None = _get(cpu, key, str, where)
    if value is None:
        return None
    if len(value) > MAX_CPU_LIST:
        raise ConfigError(f"{where}{key}", f"longer than {MAX_CPU_LIST} characters")
    if value.strip() == "":
        return None  # runc and crun leave an empty list unwritten
    for part in value.strip().split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or dash and not high.isdigit() or dash and int(high) < int(low):
            raise ConfigError(f"{where}{key}", f"{value!r} is not a list like '0-3,6'")
    return value.strip()


def _device_number(entry: dict[str, Any], key: str, where: str) -> int:
    value = _get(entry, key, int, where)
    if value is None or value == ANY:
        return ANY  # absent or -1: every number (runc's wildcard)
    if value < 0:
        raise ConfigError(f"{where}{key}", "must be -1 (any) or a device number")
    return int(value)


def _device_rules(items: list[Any], where: str) -> tuple[DeviceRule, ...]:
    if len(items) > MAX_DEVICE_RULES:
        raise ConfigError(where, f"more than {MAX_DEVICE_RULES} rules")
    rules = []
    for i, entry in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(at, "must be object")
        allow = _get(entry, "allow", bool, f"{at}.", required=True)
        kind = _get(entry, "type", str, f"{at}.", "a")
        if kind not in ("a", "c", "b"):
            raise ConfigError(f"{at}.type", f"{kind!r} is not a, c or b")
        access = _get(entry, "access", str, f"{at}.", "rwm")
        if not access or set(access) - set("rwm") or len(set(access)) != len(access):
            raise ConfigError(f"{at}.access", f"{access!r} is not a combination of r, w and m")
        rules.append(DeviceRule(allow, kind, _device_number(entry, "major", f"{at}."),
                                _device_number(entry, "minor", f"{at}."), access))
    return tuple(rules)


def _weight(doc: dict[str, Any], key: str, where: str) -> int | None:
    value = _get(doc, key, int, where)
    if value is None or value == 0:
        return None  # 0 is "not set" to runc (Docker writes it)
    if not 10 <= value <= 1000:
        raise ConfigError(f"{where}{key}", f"{value} is not between 10 and 1000")
    return int(value)


def _block_list(block: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    items: list[Any] = _get(block, key, list, where, [])
    if len(items) > MAX_BLOCK_DEVICES:
        raise ConfigError(f"{where}{key}", f"more than {MAX_BLOCK_DEVICES} devices")
    for i, entry in enumerate(items):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}{key}[{i}]", "must be object")
        for number in ("major", "minor"):
            value = _get(entry, number, int, f"{where}{key}[{i}].", required=True)
            if value < 0:
                raise ConfigError(f"{where}{key}[{i}].{number}", "must not be negative")
    return items


def _block_io(block: dict[str, Any], where: str) -> BlockIO:
    weight_devices = []
    for i, entry in enumerate(_block_list(block, "weightDevice", where)):
        at = f"{where}weightDevice[{i}]."
        weight_devices.append(WeightDevice(entry["major"], entry["minor"],
                                           _weight(entry, "weight", at),
                                           _weight(entry, "leafWeight", at)))
    throttles: dict[str, tuple[ThrottleDevice, ...]] = {}
    for key, attr in THROTTLES:
        out = []
        for i, entry in enumerate(_block_list(block, key, where)):
            rate = _get(entry, "rate", int, f"{where}{key}[{i}].", required=True)
            if rate < 0:
                raise ConfigError(f"{where}{key}[{i}].rate", "must not be negative")
            out.append(ThrottleDevice(entry["major"], entry["minor"], int(rate)))
        throttles[attr] = tuple(out)
    return BlockIO(weight=_weight(block, "weight", where),
                   leaf_weight=_weight(block, "leafWeight", where),
                   weight_devices=tuple(weight_devices), **throttles)


def to_json(extras: CgroupExtras, resources: dict[str, Any]) -> None:
    """Writes `extras` into a linux.resources object (config.to_json, update's record)."""
    cpu = {k: v for k, v in (("cpus", extras.cpus), ("mems", extras.mems)) if v is not None}
    if cpu:
        resources.setdefault("cpu", {}).update(cpu)
    if extras.devices is not None:
        # With the deny-all first, as it was parsed away: runc and crun read
        # this file too, and without it they would start from allow-all.
        resources["devices"] = [_rule_json(r) for r in (DENY_ALL, *extras.devices)]
    b = extras.block_io
    if b is not None:
        doc: dict[str, Any] = {}
        if b.weight is not None:
            doc["weight"] = b.weight
        if b.leaf_weight is not None:
            doc["leafWeight"] = b.leaf_weight
        if b.weight_devices:
            doc["weightDevice"] = [
                {"major": w.major, "minor": w.minor,
                 **({"weight": w.weight} if w.weight is not None else {}),
                 **({"leafWeight": w.leaf_weight} if w.leaf_weight is not None else {})}
                for w in b.weight_devices]
        for key, attr in THROTTLES:
            items = getattr(b, attr)
            if items:
                doc[key] = [{"major": t.major, "minor": t.minor, "rate": t.rate} for t in items]
        resources["blockIO"] = doc


def _rule_json(rule: DeviceRule) -> dict[str, Any]:
    doc: dict[str, Any] = {"allow": rule.allow, "type": rule.type, "access": rule.access}
    if rule.major != ANY:
        doc["major"] = rule.major
    if rule.minor != ANY:
        doc["minor"] = rule.minor
    return doc
