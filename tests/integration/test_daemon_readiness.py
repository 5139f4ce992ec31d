"""A real mctl-scheduler on a real etcd: readiness over grpc.health.v1 and sd_notify, metrics.

The scheduler is started while etcd is frozen (SIGSTOP), so it serves its
gRPC port but cannot load its state: it must say NOT_SERVING and tell
systemd nothing. Once etcd runs again it must turn SERVING, send READY=1 to
the notify socket (a real unix datagram socket standing in for systemd's),
become the leader ("mctl.leader" SERVING), and serve Prometheus metrics
that the client library's own parser reads. Its log is JSON, one object a line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from mctl.common import health


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_scheduler_turns_ready_once_its_cache_is_loaded(etcd):
    work = Path(tempfile.mkdtemp(prefix="mctl-test-readiness-"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(work / "notify"))
    api, metrics_port = free_port(), free_port()
    log = work / "scheduler.log"
    argv = [sys.executable, "-m", "mctl.scheduler.main", "--etcd", etcd.endpoint,
            "--prefix", f"/test-{uuid.uuid4().hex[:8]}/", "--listen", f"127.0.0.1:{api}",
            "--insecure", "--leader-ttl", "2", "--cluster-cidr", "", "--service-cidr", "",
            "--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-format", "json",
            "--log-file", str(log)]
    env = {**os.environ, "NOTIFY_SOCKET": str(work / "notify")}
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    channel = grpc.insecure_channel(f"127.0.0.1:{api}")
    try:
        wait_for("the gRPC port", lambda: health.check(channel) != "UNREACHABLE")
        # etcd frozen: the port answers, the scheduler is not ready.
        assert health.check(channel) == "NOT_SERVING"
        assert health.check(channel, health.LEADER) == "NOT_SERVING"
        assert health.check(channel, "no.such.service") == "SERVICE_UNKNOWN"
        # Longer than the store's 5 s timeout: the first etcd calls fail meanwhile.
        notify.settimeout(6.0)
        try:
            early = notify.recv(4096)
        except TimeoutError:
            early = b""
        assert early == b"", early

        os.kill(etcd.proc.pid, signal.SIGCONT)
        notify.settimeout(60)
        assert notify.recv(4096) == b"READY=1"
        assert health.check(channel) == "SERVING"
        wait_for("leadership", lambda: health.check(channel, health.LEADER) == "SERVING")

        got = scrape(metrics_port)
        assert got["mctl_leader"] == [({}, 1.0)]
        assert {labels["state"] for labels, _ in got["mctl_nodes"]} == {
            "Ready", "NotReady", "Ready,SchedulingDisabled", "NotReady,SchedulingDisabled"}
        assert sum(v for _, v in got["mctl_nodes"]) == 0
        ops = {labels["op"]: v for labels, v in got["mctl_etcd_request_seconds_count"]}
        assert ops.get("snapshot", 0) >= 1, ops
        # Timed-out calls while etcd was frozen count as errors.
        assert sum(v for _, v in got.get("mctl_etcd_request_errors_total", [])) >= 1
        wait_for("a reconcile pass", lambda: any(
            v >= 1 for _, v in scrape(metrics_port).get("mctl_reconcile_pass_seconds_count", [])))

        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert any(e["message"].startswith("scheduler ready") for e in entries)
        serving = next(e for e in entries if e["message"].startswith("scheduler serving"))
        assert serving["address"] == f"127.0.0.1:{api}" and serving["component"] == "scheduler"
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
        channel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        proc.stderr and proc.stderr.close()
        notify.close()
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    assert "Traceback" not in stderr, stderr
