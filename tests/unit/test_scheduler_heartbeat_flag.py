"""`mctl-scheduler --max-heartbeats-per-second`: validated, and what sets the lease TTL;
and --web-token-file refused without --web-listen."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fake_store import FakeStore

from mctl.scheduler.nodes import MAX_HEARTBEATS_PER_SECOND_LIMIT, NodeLeases


@pytest.mark.parametrize("value", ["0", "-5", str(MAX_HEARTBEATS_PER_SECOND_LIMIT + 1)])
def test_a_budget_out_of_range_is_refused_naming_the_flag(value):
    proc = subprocess.run([sys.executable, "-m", "mctl.scheduler.main", "--insecure",
                           "--etcd", "127.0.0.1:1", "--max-heartbeats-per-second", value],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mctl-scheduler: --max-heartbeats-per-second must be between 1 and "
        f"{MAX_HEARTBEATS_PER_SECOND_LIMIT}"]


def test_the_budget_sets_the_lease_ttl_of_a_large_cluster():
    # 1,000 nodes heartbeating three times per TTL: 10 s within 300 a second,
    # 30 s within 100, and the floor (--node-lease-ttl) with a budget to spare.
    ttls = [NodeLeases(FakeStore(), lease_ttl=3, count=lambda: 1000,
                       max_heartbeats_per_second=n).ttl_target() for n in (300, 100, 5000)]
    assert ttls == [10, 30, 3]


def test_a_web_token_file_without_web_listen_is_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("x" * 32)
    proc = subprocess.run([sys.executable, "-m", "mctl.scheduler.main", "--insecure",
                           "--etcd", "127.0.0.1:1", "--web-token-file", str(token)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mctl-scheduler: --web-token-file needs --web-listen (the web view is off without it)"]
