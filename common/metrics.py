"""Prometheus metrics of the scheduler and the agents (`--metrics-listen ADDR`).

Each daemon can serve Prometheus' text format on an HTTP port of its own,
off the gRPC port (a scrape needs no client certificate, and a slow scraper
takes no gRPC worker). Every metric is declared once, in SCHEDULER or AGENT
below; docs/observability.md lists the same names.

The code that counts calls the functions here (inc, observe, time_since)
whether or not metrics are served: until serve() runs they return at once.

The values are kept here and the page is written by common/promtext.py,
served by common/metricshttp.py; both are imported by serve(), so a
daemon without --metrics-listen loads neither. prometheus_client did this
before, but importing it loads `ssl` and `urllib.request` (its exposition
module's push gateway and HTTPS server), i.e. OpenSSL, which put 7 MiB on
an idle agent that otherwise never maps libssl; http.server would load
`ssl` too (through http.client). What a scraper reads is unchanged: the
same families, types, labels (bucket bounds spelled alike) and values,
counters' `_created` series included; tests/unit/test_metrics.py checks a
page against prometheus_client's own, parsed by Prometheus' parser.

Values known only as a state (pending replicas by reason, nodes by state,
per-replica cpu and memory) are not kept up to date by the code that
changes them: a source registered with add_source() computes them at each
scrape from what the daemon already holds. Their label sets are therefore
bounded by that state (at most the node's replicas, the cluster's nodes)
and a removed replica's series disappear with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import promtext
    from .metricshttp import MetricsServer

log = logging.getLogger(__name__)

PREFIX = "mctl_"
# Latency buckets in seconds: from a fast etcd read (1 ms) to a slow image
# unpack or container start (a minute).
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Metric:
    kind: str                     # counter, histogram, gauge (set at scrape: a source's)
    help: str
    labels: tuple[str, ...] = ()


SCHEDULER: dict[str, Metric] = {
    "placements_total": Metric("counter", "Replicas placed onto a node.", ("result",)),
    "placement_seconds": Metric("histogram", "Time to decide one workload's placements."),
    "reconcile_pass_seconds": Metric("histogram", "Duration of one controller pass "
                                                  "(decide, commit, tell the nodes)."),
    "etcd_request_seconds": Metric("histogram", "Latency of etcd requests.", ("op",)),
    "etcd_request_errors_total": Metric("counter", "etcd requests that failed.", ("op",)),
    "pending_replicas": Metric("gauge", "Replicas not running, by reason.", ("reason",)),
    "nodes": Metric("gauge", "Nodes by state.", ("state",)),
    "leader": Metric("gauge", "1 on the scheduler that leads, 0 on the others."),
}

AGENT: dict[str, Metric] = {
    "container_starts_total": Metric("counter", "Containers started.", ("result",)),
    "container_start_seconds": Metric("histogram", "Time the runtime takes to start a "
                                                   "container (monitor, namespaces, exec)."),
    "container_restarts_total": Metric("counter", "Containers restarted, by reason.",
                                       ("reason",)),
    "oom_kills_total": Metric("counter", "Containers killed for exceeding their memory."),
    "image_import_bytes_total": Metric("counter", "Bytes of image archives imported."),
    "image_pull_bytes_total": Metric("counter", "Bytes of images pulled from registries."),
    "replica_cpu_millis": Metric("gauge", "CPU used by a replica, in millicores.",
                                 ("workload", "replica")),
    "replica_memory_bytes": Metric("gauge", "Memory used by a replica.",
                                   ("workload", "replica")),
    "replica_pids": Metric("gauge", "Processes of a replica.", ("workload", "replica")),
}

# A source gives (name, labels, value) for the gauges it computes at scrape time.
Sample = tuple[str, dict[str, str], float]
Source = Callable[[], Iterable[Sample]]

# Label values of counters and histograms come from the code (results,
# reasons, etcd ops), but a bug passing an object's name would grow a family
# without end: past this many series, new ones are dropped (logged once).
MAX_SERIES = 1000

_lock = threading.Lock()
_declared: dict[str, Metric] = {}
_live: dict[str, _Family] = {}    # name -> its values, once serving
_sources: list[Source] = []
_server: MetricsServer | None = None


def serving() -> bool:
    return bool(_live)


def inc(name: str, amount: float = 1.0, **labels: str) -> None:
    """Adds to a counter; nothing until serve() has run."""
    family = _live.get(name)
    if family is not None:
        if amount < 0:
            raise ValueError(f"counter {name} can only grow, not by {amount}")
        family.add(labels, amount)


def observe(name: str, value: float, **labels: str) -> None:
    """Records one value into a histogram; nothing until serve() has run."""
    family = _live.get(name)
    if family is not None:
        family.add(labels, value)


def time_since(name: str, started: float, **labels: str) -> None:
    """observe(name, seconds since `started`, a time.monotonic() value)."""
    if name in _live:
        observe(name, time.monotonic() - started, **labels)


def add_source(source: Source) -> None:
    """Registers a function computing gauges at each scrape (kept while serving)."""
    with _lock:
        _sources.append(source)


def parse_address(address: str) -> tuple[str, int]:
    """host:port (or [v6]:port) of --metrics-listen; ValueError names the flag."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-listen {address!r}: must be host:port, e.g. 127.0.0.1:9100")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(address: str, declared: dict[str, Metric]) -> int:
    """Starts the HTTP endpoint on `address` with the `declared` metrics; the port."""
    host, port = parse_address(address)
    from .metricshttp import MetricsServer
    global _server
    server = MetricsServer((host, port), page)
    with _lock:
        for name, m in declared.items():
            if m.kind in ("counter", "histogram"):
                _live[name] = _Family(name, m)
        _declared.update(declared)
        _server = server
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    bound: int = server.server_address[1]
    return bound


def close() -> None:
    """Stops the endpoint; the counting functions turn into no-ops again."""
    global _server
    with _lock:
        _live.clear()
        _sources.clear()
        _declared.clear()
        server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()


def page() -> bytes:
    """The text a scrape reads: counters and histograms in declaration order,
    then the gauges the sources compute now, then the process' own."""
    from . import promtext
    with _lock:
        families = list(_live.values())
        gauges = {n: m for n, m in _declared.items() if m.kind == "gauge"}
        sources = list(_sources)
    out: list[promtext.Family] = []
    for family in families:
        out.extend(family.written())
    out.extend(_scrape_time_gauges(gauges, sources))
    out.extend(_process_families())
    return promtext.encode(out)


class _Family:
    """A counter's or histogram's series, by label values (in declared order)."""

    def __init__(self, name: str, metric: Metric) -> None:
        self.name = name
        self.metric = metric
        self.lock = threading.Lock()
        # labels -> [created, value] for a counter,
        #           [created, sum, count per bucket..., count above the last] for a histogram
        self.series: dict[tuple[str, ...], list[float]] = {}
        self.warned = False
        if not metric.labels:
            # A family without labels has its one series from the start (at
            # 0), as prometheus_client's did: a scrape sees it before the first event.
            self.series[()] = self._new()

    def _new(self) -> list[float]:
        width = 1 if self.metric.kind == "counter" else 1 + len(_SECONDS) + 1
        return [time.time()] + [0.0] * width

    def add(self, labels: dict[str, str], value: float) -> None:
        names = self.metric.labels
        if len(labels) != len(names) or any(n not in labels for n in names):
            raise ValueError(f"metric {self.name} takes labels {names}, not {tuple(labels)}")
        key = tuple(str(labels[n]) for n in names)
        with self.lock:
            series = self.series.get(key)
            if series is None:
                if len(self.series) >= MAX_SERIES:
                    if not self.warned:
                        self.warned = True
                        log.warning("metric %s has %d series: new label values dropped",
                                    self.name, MAX_SERIES)
                    return
                series = self.series[key] = self._new()
            if self.metric.kind == "counter":
                series[1] += value
                return
            series[1] += value
            for i, bound in enumerate(_SECONDS):
                if value <= bound:
                    series[2 + i] += 1
                    break
            else:
                series[2 + len(_SECONDS)] += 1

    def written(self) -> list[promtext.Family]:
        """Its family and the `_created` one (each series' first-use time, as
        prometheus_client wrote them: scrapers may already keep them)."""
        from . import promtext
        full = PREFIX + self.name
        names = self.metric.labels
        with self.lock:
            series = [(k, list(v)) for k, v in self.series.items()]
        if self.metric.kind == "counter":
            base = full.removesuffix("_total")
            main = promtext.Family(base + "_total", "counter", self.metric.help)
        else:
            base = full
            main = promtext.Family(full, "histogram", self.metric.help)
        created = promtext.Family(base + "_created", "gauge", self.metric.help)
        for key, values in series:
            labels = list(zip(names, key, strict=True))
            if self.metric.kind == "counter":
                main.add("_total", labels, values[1])
            else:
                cumulative = 0.0
                for bound, count in zip((*_SECONDS, float("inf")), values[2:], strict=True):
                    cumulative += count
                    main.add("_bucket", [*labels, ("le", promtext.number(bound))], cumulative)
                main.add("_count", labels, cumulative)
                main.add("_sum", labels, values[1])
            created.add("", labels, values[0])
        # prometheus_client wrote no _created lines at all for a family with no series yet.
        return [main, created] if created.rows else [main]


def _scrape_time_gauges(gauges: dict[str, Metric],
                        sources: list[Source]) -> list[promtext.Family]:
    from . import promtext
    families = {n: promtext.Family(PREFIX + n, "gauge", m.help) for n, m in gauges.items()}
    for source in sources:
        try:
            samples = list(source())
            rows = []
            for name, labels, value in samples:
                if name not in gauges:
                    raise ValueError(f"metrics source gave undeclared gauge {name}")
                rows.append((name, [(k, str(labels[k])) for k in gauges[name].labels],
                             float(value)))
        except Exception:   # a scrape must not take the daemon down, nor fail whole
            log.exception("metrics source %s failed", getattr(source, "__name__", source))
            continue
        for name, labels_list, value in rows:
            families[name].add("", labels_list, value)
    return list(families.values())


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _process_families() -> list[promtext.Family]:
    """The process metrics every Prometheus client library serves (same names
    and help as prometheus_client's), from /proc/self."""
    from . import promtext
    out: list[promtext.Family] = []

    def add(name: str, kind: str, help: str, value: float) -> None:
        family = promtext.Family(name, kind, help)
        family.add("_total" if kind == "counter" else "", [], value)
        out.append(family)
    try:
        with open("/proc/self/stat", "rb") as f:
            # Fields after the command name, which may hold spaces: state is [0].
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
        import resource
        max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        open_fds = len(os.listdir("/proc/self/fd"))
    except (OSError, StopIteration, IndexError, ValueError):
        return out   # no /proc (a sandbox): the process metrics are missing, not the page
    add("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
        float(fields[20]))
    add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
        float(int(fields[21]) * _PAGE))
    add("process_start_time_seconds", "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot + int(fields[19]) / _CLOCK_TICKS)
    add("process_cpu_seconds_total", "counter",
        "Total user and system CPU time spent in seconds.",
        (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    add("process_open_fds", "gauge", "Number of open file descriptors.", float(open_fds))
    add("process_max_fds", "gauge", "Maximum number of open file descriptors.", float(max_fds))
    return out
