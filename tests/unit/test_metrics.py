"""common/metrics.py and common/promtext.py: served over loopback, scraped and parsed with
Prometheus' own parser, and compared with the page prometheus_client (a test-only
dependency) writes for the same events."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mctl.common import metrics, metricshttp, promtext
from mctl.scheduler.gauges import NODE_STATES, node_state


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def served() -> Iterator[int]:
    port = metrics.serve("127.0.0.1:0", {**metrics.SCHEDULER, **metrics.AGENT})
    yield port
    metrics.close()


def test_counters_histograms_and_scrape_time_gauges(served: int):
    metrics.inc("placements_total", result="placed")
    metrics.inc("placements_total", result="placed")
    metrics.inc("oom_kills_total")
    metrics.inc("image_import_bytes_total", 1234)
    metrics.observe("etcd_request_seconds", 0.003, op="snapshot")
    metrics.observe("container_start_seconds", 0.2)
    metrics.observe("container_start_seconds", 40)
    replicas = [("default/web", "default/web-1"), ("default/web", "default/web-2")]

    def per_replica() -> Iterator[metrics.Sample]:
        for workload, replica in replicas:
            labels = {"workload": workload, "replica": replica}
            yield "replica_memory_bytes", labels, 1e6
    metrics.add_source(per_replica)
    metrics.add_source(lambda: [("leader", {}, 1.0)])

    got = scrape(served)
    assert got["mctl_placements_total"] == {(("result", "placed"),): 2.0}
    assert got["mctl_oom_kills_total"] == {(): 1.0}
    assert got["mctl_image_import_bytes_total"] == {(): 1234.0}
    assert got["mctl_etcd_request_seconds_count"] == {(("op", "snapshot"),): 1.0}
    assert got["mctl_container_start_seconds_bucket"][(("le", "0.25"),)] == 1.0
    assert got["mctl_container_start_seconds_bucket"][(("le", "+Inf"),)] == 2.0
    assert got["mctl_leader"] == {(): 1.0}
    assert len(got["mctl_replica_memory_bytes"]) == 2
    # A replica gone is a series gone: the gauges are the state at the scrape.
    replicas.pop()
    assert list(scrape(served)["mctl_replica_memory_bytes"]) == [
        (("replica", "default/web-1"), ("workload", "default/web"))]
    assert "process_resident_memory_bytes" in got


def test_a_failing_source_loses_its_samples_not_the_scrape(served: int):
    def broken() -> Iterator[metrics.Sample]:
        raise RuntimeError("boom")
    metrics.add_source(broken)
    metrics.add_source(lambda: [("leader", {}, 0.0)])
    assert scrape(served)["mctl_leader"] == {(): 0.0}


def parsed(text: str) -> dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], float]]]:
    """{family: (type, help, {sorted labels + sample name: value})} of a page."""
    out = {}
    for f in text_string_to_metric_families(text):
        out[f.name] = (f.type, f.documentation,
                       {(("__name__", s.name), *sorted(s.labels.items())): s.value
                        for s in f.samples})
    return out


def test_the_page_reads_as_prometheus_clients_did():
    """The same events into prometheus_client (as common/metrics.py used it up to
    f9a9ba2) and into ours: every family, type, help, label set and value alike."""
    import prometheus_client as prom
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry

    declared = {**metrics.SCHEDULER, **metrics.AGENT}
    registry = CollectorRegistry(auto_describe=True)
    theirs = {}
    for name, m in declared.items():
        if m.kind == "counter":
            theirs[name] = prom.Counter("mctl_" + name.removesuffix("_total"), m.help, m.labels,
                                        registry=registry)
        elif m.kind == "histogram":
            theirs[name] = prom.Histogram("mctl_" + name, m.help, m.labels,
                                          buckets=metrics._SECONDS, registry=registry)
    gauge_samples = [("leader", {}, 1.0), ("nodes", {"state": 'Ready "x"\\n'}, 2.0),
                     ("replica_cpu_millis", {"workload": "a/b", "replica": "a/b-1"}, float("nan")),
                     ("replica_memory_bytes", {"workload": "a/b", "replica": "a/b-1"}, 3e9)]

    class Gauges:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            for name, m in declared.items():
                if m.kind == "gauge":
                    f = GaugeMetricFamily("mctl_" + name, m.help, labels=list(m.labels))
                    for n, labels, v in gauge_samples:
                        if n == name:
                            f.add_metric([labels[k] for k in m.labels], v)
                    yield f
    registry.register(Gauges())
    prom.ProcessCollector(registry=registry)
    events = [("inc", "placements_total", 1.0, {"result": "placed"}),
              ("inc", "placements_total", 2.0, {"result": "no\nfit\\"}),
              ("inc", "image_pull_bytes_total", 12345678901.0, {}),
              ("observe", "etcd_request_seconds", 0.001, {"op": "get"}),
              ("observe", "etcd_request_seconds", 0.0011, {"op": "get"}),
              ("observe", "etcd_request_seconds", 1e6, {"op": "put"}),
              ("observe", "container_start_seconds", 60.0, {})]
    metrics.serve("127.0.0.1:0", declared)
    try:
        for kind, name, value, labels in events:
            getattr(metrics, kind)(name, value, **labels)
            child = theirs[name].labels(**labels) if labels else theirs[name]
            getattr(child, kind)(value)
        metrics.add_source(lambda: iter(gauge_samples))
        ours = parsed(metrics.page().decode())
    finally:
        metrics.close()
    want = parsed(prom.generate_latest(registry).decode())
    # The process metrics: the same families, types, help and samples' names.
    process = {k: (t, h, sorted(s)) for k, (t, h, s) in ours.items() if k.startswith("process_")}
    assert process == {k: (t, h, sorted(s)) for k, (t, h, s) in want.items()
                       if k.startswith("process_")}
    assert len(process) == 6
    rss = next(v for k, v in ours["process_resident_memory_bytes"][2].items())
    assert 5 * 2**20 < rss < 2**30

    def without_times(page: dict) -> dict:
        """_created values are times of first use: same series, different clocks."""
        return {k: (t, h, {s: (0 if k.endswith("_created") else v) for s, v in samples.items()})
                for k, (t, h, samples) in page.items() if not k.startswith("process_")}
    mine, theirs_page = without_times(ours), without_times(want)
    assert list(mine) == list(theirs_page)          # same families, same order
    for family in mine:
        assert repr(mine[family]) == repr(theirs_page[family]), family   # NaN == NaN too


def test_encoder_spells_numbers_as_go_and_escapes():
    assert [promtext.number(v) for v in (float("inf"), float("-inf"), float("nan"))] == \
        ["+Inf", "-Inf", "NaN"]
    assert [promtext.number(v) for v in (0.0, 1.0, 0.25, 60.0, 1e-05, 123456.0)] == \
        ["0.0", "1.0", "0.25", "60.0", "1e-05", "123456.0"]
    assert [promtext.number(v) for v in (2e9, 28778496.0, 1.7965512834481177e9, 1e22, -5e9)] \
        == ["2e+09", "2.8778496e+07", "1.7965512834481177e+09", "1e+22", "-5000000000.0"]
    f = promtext.Family("mctl_x_total", "counter", 'a \\ help\nline "quoted"')
    f.add("_total", [("b", "1"), ("a", 'q"\\\n')], 2.0)
    f.add("_total", [], 3.0)
    g = promtext.Family("mctl_g", "gauge", "g")
    assert promtext.encode([f, g]).decode() == (
        '# HELP mctl_x_total a \\\\ help\\nline "quoted"\n'
        "# TYPE mctl_x_total counter\n"
        'mctl_x_total{b="1",a="q\\"\\\\\\n"} 2.0\n'      # labels kept in the order given
        "mctl_x_total 3.0\n"
        "# HELP mctl_g g\n# TYPE mctl_g gauge\n")
    assert promtext.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_http_answers(served: int):
    with urllib.request.urlopen(f"http://127.0.0.1:{served}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        body = reply.read()
        assert int(reply.headers["Content-Length"]) == len(body)
    head = raw(served, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    for path, status in (("/", 200), ("/metrics?name[]=x", 200), ("/other", 404)):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{served}{path}", timeout=5) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == status, path
    assert raw(served, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw(served, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(served, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n") \
        .startswith(b"HTTP/1.1 431 ")
    assert raw(served, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_idle_connections_are_bounded(served: int, monkeypatch: pytest.MonkeyPatch):
    """MAX_CONNECTIONS clients that send nothing: the next is refused (closed at
    once), and once they go, scrapes are answered again."""
    idle = [socket.create_connection(("127.0.0.1", served), timeout=5)
            for _ in range(metricshttp.MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        assert raw(served, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while raw(served, b"GET /metrics HTTP/1.1\r\n\r\n") == b"":
        assert time.monotonic() < deadline, "slots not released"
        time.sleep(0.05)


def test_a_silent_client_is_dropped_after_the_timeout(served: int,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metricshttp._Handler, "timeout", 0.3)
    with socket.create_connection(("127.0.0.1", served), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")          # and never the blank line
        started = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - started < 3


def test_series_per_family_are_bounded(served: int):
    for i in range(metrics.MAX_SERIES + 50):
        metrics.inc("placements_total", result=f"r{i}")
    got = scrape(served)["mctl_placements_total"]
    assert len(got) == metrics.MAX_SERIES
    metrics.inc("placements_total", result="r0")     # an existing series still counts
    assert scrape(served)["mctl_placements_total"][(("result", "r0"),)] == 2.0


def test_misuse_is_an_error_naming_the_metric(served: int):
    with pytest.raises(ValueError, match="placements_total"):
        metrics.inc("placements_total", reason="x")
    with pytest.raises(ValueError, match="placements_total"):
        metrics.inc("placements_total", -1, result="x")


def test_serving_loads_neither_ssl_nor_prometheus_client():
    """The reason this module writes the format itself: OpenSSL stays unmapped."""
    code = ("import sys, socket\n"
            "from mctl.common import metrics\n"
            "port = metrics.serve('127.0.0.1:0', metrics.AGENT)\n"
            "s = socket.create_connection(('127.0.0.1', port))\n"
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
            "assert b'mctl_oom_kills_total 0.0' in s.makefile('rb').read()\n"
            "for m in ('prometheus_client', 'ssl', 'http.server', 'http.client'):\n"
            "    assert m not in sys.modules, m\n"
            "assert 'libssl' not in open('/proc/self/maps').read(), 'libssl mapped'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_serve_counting_is_free_and_prometheus_client_unloaded():
    code = ("import sys\n"
            "from mctl.common import metrics\n"
            "metrics.inc('placements_total', result='placed')\n"
            "metrics.observe('placement_seconds', 0.1)\n"
            "metrics.time_since('reconcile_pass_seconds', 0.0)\n"
            "assert not metrics.serving()\n"
            "for m in ('prometheus_client', 'socketserver', 'mctl.common.promtext',\n"
            "          'mctl.common.metricshttp'):\n"
            "    assert m not in sys.modules, m\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("address", ["7070", "host:", "127.0.0.1:99999", "a:b"])
def test_bad_listen_address_names_the_flag(address: str):
    with pytest.raises(ValueError, match="--metrics-listen"):
        metrics.parse_address(address)


def test_listen_address_forms():
    assert metrics.parse_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert metrics.parse_address("[::1]:9100") == ("::1", 9100)
    assert metrics.parse_address(":9100") == ("0.0.0.0", 9100)


def test_node_states_are_kubectls():
    assert node_state(True, False) == "Ready"
    assert node_state(False, True) == "NotReady,SchedulingDisabled"
    assert {node_state(r, c) for r in (True, False) for c in (True, False)} == set(NODE_STATES)


def test_every_declared_metric_is_documented():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    for name in {**metrics.SCHEDULER, **metrics.AGENT}:
        assert f"mctl_{name}" in doc, name
