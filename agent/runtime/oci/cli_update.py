"""`mctl-runtime update`: change the resources of a created or running container, as runc does.

    mctl-runtime update [-r FILE|-] [--memory 512m] [--cpu-quota N] ... ID

`create` records the container's linux.resources in its state.json; update
merges into that record, in this order, and applies the result whole:

1. `-r FILE` (`-` for stdin): a LinuxResources JSON object, what
   containerd's shim sends. Its memory, cpu, pids and blockIO objects are
   merged key by key into the recorded ones (a key not given keeps its
   value). Device rules are not changed by update (runc ignores them too):
   given, they are a warning.
2. The flags, runc's names, each setting one field: --memory,
   --memory-reservation, --kernel-memory-tcp (bytes, with an optional
   k/m/g/t suffix, binary; -1 is unlimited), --cpu-quota, --cpu-period,
   --cpuset-cpus, --cpuset-mems, --pids-limit, --blkio-weight.

The merged object is checked as config.json's is (config.py), written to
the cgroup (cpu, memory, pids through the driver; the rest through
memory_extras, cpuset and blkio), then recorded. A value the kernel refuses
(a memory limit below what is in use: EBUSY) fails with the file named,
and the record keeps the old values.
"""

from __future__ import annotations

from . import cli_state
from .cli_args import UPDATE_FLAGS
from .config_fields import JSONFileError, read_json_object

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .cli_args import Invocation

MAX_RESOURCES_FILE = 1 << 20  # a LinuxResources document is a few hundred bytes
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# flag -> (linux.resources object, key, kind)
_FIELDS = {
    "memory": ("memory", "limit", "bytes"),
    "memory_reservation": ("memory", "reservation", "bytes"),
    "kernel_memory_tcp": ("memory", "kernelTCP", "bytes"),
    "cpu_quota": ("cpu", "quota", "int"),
    "cpu_period": ("cpu", "period", "int"),
    "cpuset_cpus": ("cpu", "cpus", "str"),
    "cpuset_mems": ("cpu", "mems", "str"),
    "pids_limit": ("pids", "limit", "int"),
    "blkio_weight": ("blockIO", "weight", "int"),
}
_MERGED = ("memory", "cpu", "pids", "blockIO")


class UpdateError(Exception):
    """A bad flag or file, a container in the wrong state, or a refused write; one line."""


def parse_bytes(flag: str, text: str) -> int:
    """'512m', '1G', '1048576', '-1' (unlimited) as runc's units.RAMInBytes reads them."""
    value = text.strip().lower()
    if value == "-1":
        return -1
    if value.endswith("b") and len(value) > 1 and value[-2] in "kmgt":
        value = value[:-1]  # "512mb"
    number, unit = (value[:-1], value[-1]) if value and value[-1] in _UNITS else (value, "")
    if not number.isdigit():
        raise UpdateError(f"--{flag.replace('_', '-')}: {text!r} is not a size like 512m")
    return int(number) * _UNITS[unit]


def _flag_value(flag: str, text: str) -> object:
    kind = _FIELDS[flag][2]
    if kind == "bytes":
        return parse_bytes(flag, text)
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise UpdateError(f"--{flag.replace('_', '-')}: {text!r} is not a number") from None
    return text


def _read_resources(path: str) -> dict[str, Any]:
    where = "-r (stdin)" if path == "-" else f"-r {path}"
    try:
        return read_json_object(path, MAX_RESOURCES_FILE, "LinuxResources")
    except JSONFileError as e:
        raise UpdateError(f"{where}: {e}") from None


def merged(recorded: dict[str, Any], given: dict[str, Any] | None,
           flags: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The recorded linux.resources with -r's objects and the flags merged in; and warnings."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in recorded.items()}
    warnings = []
    for key, value in (given or {}).items():
        if key in _MERGED:
            if not isinstance(value, dict):
                raise UpdateError(f"linux.resources.{key}: must be object")
            out.setdefault(key, {}).update(value)
        elif key == "devices":
            warnings.append("linux.resources.devices: device rules are not changed by "
                            "update (as runc), ignored")
        else:
            warnings.append(f"linux.resources.{key}: not changed by update, ignored")
    for flag, text in flags.items():
        section, key, _ = _FIELDS[flag]
        out.setdefault(section, {})[key] = _flag_value(flag, text)
    return out, warnings


def update(inv: Invocation) -> list[str]:
    """Applies the update; returns warnings. UpdateError (one line) on failure."""
    from ..cgroups import CgroupError, blkio, cpuset, detect, memory_extras
    from ..spawn import limits_of
    from .config import Config, ConfigError, parse_resources, resources_json

    flags = {f: getattr(inv, f) for f in UPDATE_FLAGS if getattr(inv, f) is not None}
    if not flags and not inv.resources:
        raise UpdateError("update: give -r FILE or at least one resource flag")
    c = cli_state.load(inv.root, inv.id)
    status = c.status()
    if status not in (cli_state.CREATED, cli_state.RUNNING, cli_state.PAUSED):
        raise UpdateError(f"cannot update container {inv.id}: it is {status}")
    recorded = c.doc.get("resources")
    doc, warnings = merged(recorded if isinstance(recorded, dict) else {},
                           _read_resources(inv.resources) if inv.resources else None, flags)
    try:
        res = parse_resources(doc)
        limits = limits_of(Config(args=("update",), resources=res))
    except (ConfigError, ValueError) as e:
        problem = f"{e.field_path}: {e.problem}" if isinstance(e, ConfigError) else str(e)
        raise UpdateError(problem) from None
    extras = res.cgroup_extras
    try:
        driver = detect()
        driver.update(c.cgroup, limits)
        if res.has_memory_extras():
            warnings += memory_extras.apply(driver, c.cgroup, res)
        if extras is not None:
            cpuset.setup(driver, c.cgroup, extras.cpus, extras.mems)
            warnings += blkio.setup(driver, c.cgroup, extras.block_io)
    except (OSError, CgroupError) as e:
        raise UpdateError(f"cannot update container {inv.id}: {e}") from None
    c.doc["resources"] = resources_json(res)
    c.save()
    return warnings

