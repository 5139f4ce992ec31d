"""common/metrics.py: served over loopback, scraped and parsed with Prometheus' own parser."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mctl.common import metrics
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


def test_without_serve_counting_is_free_and_prometheus_client_unloaded():
    code = ("import sys\n"
            "from mctl.common import metrics\n"
            "metrics.inc('placements_total', result='placed')\n"
            "metrics.observe('placement_seconds', 0.1)\n"
            "metrics.time_since('reconcile_pass_seconds', 0.0)\n"
            "assert not metrics.serving()\n"
            "assert 'prometheus_client' not in sys.modules, 'imported'\n")
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
