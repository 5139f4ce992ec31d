"""A container's resource statistics in runc's shape (`mctl-runtime events`).

runc's `events` prints libcontainer's cgroups.Stats converted to its
types.Stats JSON; this module reads the same cgroup files and builds the
same keys, so tools that parse runc's output (containerd, podman stats)
read ours:

  cpu     usage {total, percpu, kernel, user} in ns; throttling {periods,
          throttledPeriods, throttledTime}
          v1 cpuacct.usage, cpuacct.usage_percpu, cpuacct.stat (USER_HZ
          ticks), cpu.stat; v2 cpu.stat (usec)
  memory  usage/swap/kernel {usage, max, failcnt, limit}, cache, raw (the
          memory.stat keys)
          v1 memory.usage_in_bytes, .max_usage_in_bytes, .failcnt,
          .limit_in_bytes (memsw.* for swap, kmem.* for kernel); v2
          memory.current, memory.peak, memory.max, memory.swap.*
  pids    {current, limit} (limit 0: unlimited)
  blkio   ioServiceBytesRecursive, ioServicedRecursive: [{major, minor, op,
          value}] with op Read, Write, Sync, Async, Discard, Total (v1
          blkio.throttle.io_service*_recursive; v2 io.stat, Read and Write)

A file this kernel lacks is left out (zero), as runc does; a missing
cgroup is CgroupNotFound.
"""

from __future__ import annotations

import os

from .base import CgroupDriver, CgroupNotFound, ControllerUnavailable, read_keyed, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# cpuacct.stat counts USER_HZ ticks; runc converts with the same constant.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MAX_U64 = (1 << 64) - 1


def _int(path: str, default: int = 0) -> int:
    try:
        text = read_text(path).strip()
    except CgroupNotFound:
        return default
    if text == "max":
        return _MAX_U64
    try:
        return int(text)
    except ValueError:
        return default


def _keyed(path: str) -> dict[str, int]:
    try:
        return read_keyed(path)
    except CgroupNotFound:
        return {}


def collect(driver: CgroupDriver, path: str) -> dict[str, Any]:
    """The stats object ("data" of a runc stats event) of the cgroup at `path`."""
    if not driver.exists(path):
        raise CgroupNotFound(f"cgroup {path} does not exist")
    if driver.mode == "v1":
        return _v1(driver, path)
    return _v2(driver, path)


def _v1(driver: CgroupDriver, path: str) -> dict[str, Any]:
    def f(controller: str, name: str) -> str:
        try:
            return driver.file(controller, path, name)
        except ControllerUnavailable:  # an optional hierarchy that is not mounted
            return "/nonexistent"

    acct = _keyed(f("cpuacct", "cpuacct.stat"))
    try:
        percpu = [int(x) for x in read_text(f("cpuacct", "cpuacct.usage_percpu")).split()]
    except CgroupNotFound:
        percpu = []
    throttle = _keyed(f("cpu", "cpu.stat"))
    cpu = {
        "usage": {"total": _int(f("cpuacct", "cpuacct.usage")), "percpu": percpu,
                  "kernel": acct.get("system", 0) * 10**9 // _CLOCK_TICKS,
                  "user": acct.get("user", 0) * 10**9 // _CLOCK_TICKS},
        "throttling": {"periods": throttle.get("nr_periods", 0),
                       "throttledPeriods": throttle.get("nr_throttled", 0),
                       "throttledTime": throttle.get("throttled_time", 0)},
    }

    def entry(prefix: str) -> dict[str, int]:
        return {"usage": _int(f("memory", f"{prefix}.usage_in_bytes")),
                "max": _int(f("memory", f"{prefix}.max_usage_in_bytes")),
                "failcnt": _int(f("memory", f"{prefix}.failcnt")),
                "limit": _int(f("memory", f"{prefix}.limit_in_bytes"))}

    raw = _keyed(f("memory", "memory.stat"))
    memory = {"cache": raw.get("cache", 0), "usage": entry("memory"),
              "swap": entry("memory.memsw"), "kernel": entry("memory.kmem"),
              "kernelTCP": entry("memory.kmem.tcp"), "raw": raw}
    blkio = {
        "ioServiceBytesRecursive":
            _v1_blkio(f("blkio", "blkio.throttle.io_service_bytes_recursive")),
        "ioServicedRecursive": _v1_blkio(f("blkio", "blkio.throttle.io_serviced_recursive")),
    }
    return {"cpu": cpu, "memory": memory, "pids": _pids(driver, path), "blkio": blkio}


def _v1_blkio(path: str) -> list[dict[str, Any]]:
    """Lines "8:0 Read 4096"; the last line "Total N" (all devices) is left out, as runc."""
    try:
        text = read_text(path)
    except CgroupNotFound:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(":")
        try:
            out.append({"major": int(major), "minor": int(minor), "op": fields[1],
                        "value": int(fields[2])})
        except ValueError:
            continue
    return out


def _pids(driver: CgroupDriver, path: str) -> dict[str, int]:
    limit = _int(driver.file("pids", path, "pids.max"))
    return {"current": _int(driver.file("pids", path, "pids.current")),
            "limit": 0 if limit == _MAX_U64 else limit}


def _v2(driver: CgroupDriver, path: str) -> dict[str, Any]:
    def f(name: str) -> str:
        return driver.file("", path, name)

    stat = _keyed(f("cpu.stat"))
    cpu = {
        "usage": {"total": stat.get("usage_usec", 0) * 1000, "percpu": [],
                  "kernel": stat.get("system_usec", 0) * 1000,
                  "user": stat.get("user_usec", 0) * 1000},
        "throttling": {"periods": stat.get("nr_periods", 0),
                       "throttledPeriods": stat.get("nr_throttled", 0),
                       "throttledTime": stat.get("throttled_usec", 0) * 1000},
    }
    raw = _keyed(f("memory.stat"))
    events = _keyed(f("memory.events"))
    memory = {
        "cache": raw.get("file", 0),
        "usage": {"usage": _int(f("memory.current")), "max": _int(f("memory.peak")),
                  "failcnt": events.get("max", 0), "limit": _int(f("memory.max"))},
        "swap": {"usage": _int(f("memory.swap.current")), "max": _int(f("memory.swap.peak")),
                 "failcnt": 0, "limit": _int(f("memory.swap.max"))},
        "raw": raw,
    }
    read_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    try:
        io_text = read_text(f("io.stat"))
    except CgroupNotFound:
        io_text = ""
    for line in io_text.splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        for key, op, out in (("rbytes", "Read", read_bytes), ("wbytes", "Write", read_bytes),
                             ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if key in values and major.isdigit() and minor.isdigit():
                out.append({"major": int(major), "minor": int(minor), "op": op,
                            "value": int(values[key])})
    return {"cpu": cpu, "memory": memory, "pids": _pids(driver, path),
            "blkio": {"ioServiceBytesRecursive": read_bytes, "ioServicedRecursive": serviced}}
