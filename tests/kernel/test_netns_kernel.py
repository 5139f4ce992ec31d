"""Named network namespaces next to `ip netns` (common/netns.py).

Each test runs in a child with a private mount namespace and a tmpfs on
/run, so /run/netns starts as a plain directory, as on a machine where
nothing has made a namespace yet, and nothing reaches the host's mounts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mount and network namespaces"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="needs util-linux unshare and iproute2"),
]


def in_private_run(code: str) -> str:
    script = textwrap.dedent("""
        import os, subprocess, sys
        subprocess.run(["mount", "-t", "tmpfs", "mctl-test-run", "/run"], check=True)
        os.makedirs("/run/netns")
        from mctl.common import netns
    """) + textwrap.dedent(code)
    out = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                          script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_namespace_removed_after_ip_netns_add_leaves_no_hidden_mount():
    # `ip netns add` binds /run/netns onto itself unless it is already a
    # shared mount; a namespace mounted before that would stay hidden.
    out = in_private_run("""
        netns.create("mctl-test-ours")
        subprocess.run(["ip", "netns", "add", "mctl-test-theirs"], check=True)
        netns.remove("mctl-test-ours")
        subprocess.run(["ip", "netns", "delete", "mctl-test-theirs"], check=True)
        with open("/proc/self/mountinfo") as f:
            print("".join(line for line in f if "mctl-test-ours" in line or
                          "mctl-test-theirs" in line), end="")
    """)
    assert out == ""


def test_the_netns_dir_is_made_a_shared_mount_once():
    out = in_private_run("""
        netns.create("mctl-test-a")
        netns.create("mctl-test-b")
        with open("/proc/self/mountinfo") as f:
            # (The host's own /run/netns mounts are copied in too: count ours.)
            dirs = [line for line in f
                    if line.split()[4] == "/run/netns" and "mctl-test-run" in line]
        print(len(dirs), "shared:" in dirs[0])
        for name in ("mctl-test-a", "mctl-test-b"):
            netns.remove(name)
    """)
    assert out.split() == ["1", "True"]
