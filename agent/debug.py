"""What `mctl debug node NODE TOPIC` shows: the node as its agent sees it.

Topics: containers (what the agent runs and their processes), cgroups (each
container's cgroup with usage and limits, plus any cgroup under the node's
parent that no container owns: a leak), mounts (the agent's mounts),
network (links, addresses and routes of the node's namespace, and its nft
rules), events (the agent's recent log records, kept in memory), drift
(what the agent's self-check found changed in the kernel behind its back
and what it did: selfcheck.py), services (the services this node balances:
virtual IPs, ports, endpoints ready or not, DNS names; services_sync.py),
volumes (the named volumes kept on this node with their size, and each
container's volume mounts: volumes.py).
"""

from __future__ import annotations

import collections
import logging
import subprocess
import time
from collections.abc import Callable

from mctl.common.quantity import format_bytes_short

from . import volumes as vols
from .containers import ContainerManager
from .drift import DriftLog

TOPICS = ("containers", "cgroups", "mounts", "network", "events", "drift", "services",
          "volumes")
KEPT_RECORDS = 500


class RecentLog(logging.Handler):
    """The last KEPT_RECORDS log lines of this agent, for `debug node ... events`."""

    def __init__(self) -> None:
        super().__init__()
        self.records: collections.deque[str] = collections.deque(maxlen=KEPT_RECORDS)
        self.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [headers, *rows]]


def inspect(topic: str, manager: ContainerManager, recent: RecentLog | None,
            limit: int = 0, drift: DriftLog | None = None,
            services: Callable[[], list[str]] | None = None) -> list[str]:
    if topic == "containers":
        return containers(manager)
    if topic == "cgroups":
        return cgroups(manager)
    if topic == "mounts":
        return mounts(manager)
    if topic == "network":
        return network()
    if topic == "events":
        lines = list(recent.records) if recent is not None else []
        return lines[-limit:] if limit > 0 else lines
    if topic == "drift":
        return drift.lines(limit) if drift is not None else ["no self-check runs here"]
    if topic == "services":
        return services() if services is not None else ["no services here"]
    if topic == "volumes":
        return volumes(manager)
    raise ValueError(f"unknown topic {topic!r}: use {', '.join(TOPICS)}")


def containers(manager: ContainerManager) -> list[str]:
    now = int(time.time() * 1000)
    rows = []
    for c in sorted(manager.snapshot(), key=lambda c: c.id):
        state = "running" if c.running() else (
            f"exited {c.exit.exit_code}" if c.exit else "not started")
        up = f"{(now - c.started_ms) // 1000}s" if c.started_ms and c.running() else "-"
        rows.append([c.id, state, up, str(c.restarts), str(c.monitor_pid or "-"),
                     str(c.init_pid or "-"), c.ip or "-"])
    if not rows:
        return ["no containers"]
    lines = table(["CONTAINER", "STATE", "UP", "RESTARTS", "MONITOR", "INIT", "IP"], rows)
    nets = [[c.id, c.network.netns, c.network.veth] for c in sorted(
        manager.snapshot(), key=lambda c: c.id) if c.network is not None]
    if nets:
        lines += [""] + table(["CONTAINER", "NETWORK NAMESPACE", "VETH"], nets)
    return lines


def cgroups(manager: ContainerManager) -> list[str]:
    driver = manager.cgroups
    owned = {c.cgroup for c in manager.snapshot()}
    rows = []
    for c in sorted(manager.snapshot(), key=lambda c: c.id):
        res = c.replica.spec.resources
        try:
            u = driver.usage(c.cgroup)
            used = [format_bytes_short(u.memory_working_set), str(u.pids),
                    f"{u.cpu_usage_ns / 1e9:.2f}s"]
        except OSError:
            used = ["-", "-", "-"]
        rows.append([c.cgroup, used[0] + "/" + format_bytes_short(res.memory_bytes),
                     f"{used[1]}/{res.pids or '-'}", used[2]])
    lines = table(["CGROUP", "MEMORY(WS/LIMIT)", "PIDS", "CPU TIME"], rows) if rows else [
        "no container cgroups"]
    try:
        parent = manager.cgroup_parent
        stray = [f"{parent}/{child}" for child in driver.list_children(parent)
                 if f"{parent}/{child}" not in owned]
    except OSError:
        stray = []
    lines.append(f"cgroup driver: {driver.mode}; parent: {manager.cgroup_parent}")
    lines += [f"NOT OWNED by any container (leak?): {p}" for p in stray]
    return lines


def mounts(manager: ContainerManager) -> list[str]:
    state_dir = manager.root.rsplit("/", 1)[0]
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4].startswith(state_dir):
                rows.append([fields[4], fields[sep + 1], fields[5]])
    return table(["MOUNT POINT", "TYPE", "OPTIONS"], rows) if rows else [
        f"no mounts under {state_dir}"]


def volumes(manager: ContainerManager) -> list[str]:
    users: dict[tuple[str, str], list[str]] = {}
    rows = []
    for c in sorted(manager.snapshot(), key=lambda c: c.id):
        by_name = {v.name: v for v in c.replica.spec.volumes}
        for m in c.replica.spec.volume_mounts:
            v = by_name.get(m.name)
            if v is None:
                continue
            kind = v.WhichOneof("source") or "-"
            if kind == "volume":
                users.setdefault((c.key[0], v.volume), []).append(c.replica.metadata.name)
            rows.append([c.id, m.name, kind, m.mount_path,
                         "ro" if vols.read_only(v, m) else "rw"])
    named = [[f"{ns}/{name}", format_bytes_short(used), ",".join(users.get((ns, name), [])) or
              "-"] for (ns, name), used in sorted(manager.volumes.named_usage().items())]
    lines = table(["VOLUME", "USED", "USED BY"], named) if named else [
        f"no named volumes under {manager.volumes.named_root}"]
    if rows:
        lines += [""] + table(["CONTAINER", "VOLUME", "KIND", "MOUNT PATH", "MODE"], rows)
    return lines


def network() -> list[str]:
    out = []
    for title, argv in (("links", ["ip", "-brief", "link"]),
                        ("addresses", ["ip", "-brief", "address"]),
                        ("routes", ["ip", "route"]),
                        ("nftables", ["nft", "list", "ruleset"])):
        out.append(f"== {title}: {' '.join(argv)}")
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=5,
                                  stdin=subprocess.DEVNULL)
            text = proc.stdout if proc.returncode == 0 else proc.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            text = f"cannot run {argv[0]}: {e}"
        out += text.rstrip().splitlines() or ["(none)"]
    return out
