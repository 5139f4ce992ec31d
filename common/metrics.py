"""Prometheus metrics of the scheduler and the agents (`--metrics-listen ADDR`).

Each daemon can serve Prometheus' text format on an HTTP port of its own,
off the gRPC port (a scrape needs no client certificate, and a slow scraper
takes no gRPC worker). Every metric is declared once, in SCHEDULER or AGENT
below; docs/observability.md lists the same names.

The code that counts calls the functions here (inc, observe, time_since)
whether or not metrics are served: until serve() runs they return at once,
and prometheus_client is not even imported. It costs an idle agent about
2.5 MiB of RSS (bench/footprint.py --metrics) and 40 ms of start-up, paid
only with --metrics-listen.

Values known only as a state (pending replicas by reason, nodes by state,
per-replica cpu and memory) are not kept up to date by the code that
changes them: a source registered with add_source() computes them at each
scrape from what the daemon already holds. Their label sets are therefore
bounded by that state (at most the node's replicas, the cluster's nodes)
and a removed replica's series disappear with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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

_lock = threading.Lock()
_declared: dict[str, Metric] = {}
_live: dict[str, Any] = {}        # name -> prometheus_client metric, once serving
_sources: list[Source] = []
_server: Any = None


def serving() -> bool:
    return bool(_live)


def inc(name: str, amount: float = 1.0, **labels: str) -> None:
    """Adds to a counter; nothing until serve() has run."""
    metric = _live.get(name)
    if metric is not None:
        (metric.labels(**labels) if labels else metric).inc(amount)


def observe(name: str, value: float, **labels: str) -> None:
    """Records one value into a histogram; nothing until serve() has run."""
    metric = _live.get(name)
    if metric is not None:
        (metric.labels(**labels) if labels else metric).observe(value)


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
    # Imported here, not at the top: a daemon without --metrics-listen never loads it.
    import prometheus_client as prom
    from prometheus_client.registry import CollectorRegistry

    global _server
    registry = CollectorRegistry(auto_describe=True)
    with _lock:
        for name, m in declared.items():
            full = PREFIX + name
            if m.kind == "counter":
                _live[name] = prom.Counter(full.removesuffix("_total"), m.help, m.labels,
                                           registry=registry)
            elif m.kind == "histogram":
                _live[name] = prom.Histogram(full, m.help, m.labels, buckets=_SECONDS,
                                             registry=registry)
        _declared.update(declared)
    registry.register(_ScrapeTime(_gauges_of(declared)))
    # Process metrics (RSS, cpu seconds, open files), as every Prometheus client has.
    prom.ProcessCollector(registry=registry)
    server, _thread = prom.start_http_server(port, addr=host, registry=registry)
    _server = server
    bound: int = server.server_port
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


def _gauges_of(declared: dict[str, Metric]) -> dict[str, Metric]:
    return {n: m for n, m in declared.items() if m.kind == "gauge"}


class _ScrapeTime:
    """The gauges the sources compute, asked for at each scrape."""

    def __init__(self, gauges: dict[str, Metric]) -> None:
        self.gauges = gauges

    def describe(self) -> list[Any]:
        return list(self._families())

    def collect(self) -> Iterator[Any]:
        families = {f.name.removeprefix(PREFIX): f for f in self._families()}
        with _lock:
            sources = list(_sources)
        for source in sources:
            try:
                samples = list(source())
            except Exception:   # a scrape must not take the daemon down, nor fail whole
                log.exception("metrics source %s failed", getattr(source, "__name__", source))
                continue
            for name, labels, value in samples:
                family = families.get(name)
                if family is None:
                    raise ValueError(f"metrics source gave undeclared gauge {name}")
                family.add_metric([labels[k] for k in self.gauges[name].labels], value)
        yield from families.values()

    def _families(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily
        for name, m in self.gauges.items():
            yield GaugeMetricFamily(PREFIX + name, m.help, labels=list(m.labels))
