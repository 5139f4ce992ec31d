"""podman drives mctl-runtime: `podman --runtime .../mctl-runtime` through a whole lifecycle.

Needs root and podman (Debian's 4.3.1: `apt-get install podman`; skipped with
that reason where it is absent). podman runs the runtime through conmon the
way it runs runc and crun: `create --bundle --pid-file [--console-socket]`,
`start`, `state`, `kill`, `delete --force`, `exec --process --detach
--pid-file [--console-socket]`, `pause`, `resume`.

Everything of podman's is in one temporary directory: the image store
(`--root`, vfs driver), `--runroot`, `--tmpdir`, the events file; the image
is busybox-static imported from a tar (`podman import`), no registry and
no network (`--network none`). Containers' cgroups go under a cgroup parent
of the test's own (`mctl/test-podman-<random>`, conmon's under it too).
The module checks at the end that no container, process, mount or cgroup
is left, and removes /run/containers if podman made it (netavark's run
directory, made even for --network none) and /run/mctl-runtime if the
runtime made it (podman gives a runtime it does not know no --root).

The limits podman asks for by default (RLIMIT_NOFILE and RLIMIT_NPROC of
1048576) need CAP_SYS_RESOURCE, which runc and crun also fail without in a
sandbox; the test asks for 1024 of each instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mctl.agent.runtime.oci import client as ociclient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from busybox_tty import add_busybox_root, leftovers, talk  # noqa: E402

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
    pytest.mark.skipif(shutil.which("podman") is None,
                       reason="podman is not installed (apt-get install podman)"),
]

IMAGE = "localhost/mctl-busybox:test"
RUNTIME_ROOT = "/run/mctl-runtime"


class Podman:
    def __init__(self, tmp: str, runtime: str, cgroup_parent: str) -> None:
        self.tmp = tmp
        self.cgroup_parent = cgroup_parent
        self.base = ["podman", "--root", f"{tmp}/root", "--runroot", f"{tmp}/runroot",
                     "--tmpdir", f"{tmp}/tmp", "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--runtime", runtime]
        self.run_options = ["--network", "none", "--cgroup-parent", f"/{cgroup_parent}",
                            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.base, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    runtime = ociclient.resolve("mctl-runtime")
    tmp = tempfile.mkdtemp(prefix="mctl-podman-")
    run_containers_existed = os.path.exists("/run/containers")
    # podman runs a runtime it does not know without --root: mctl-runtime's
    # default root, whose seccomp cache would outlive the test.
    runtime_root_existed = os.path.exists(RUNTIME_ROOT)
    parent = f"mctl/test-podman-{secrets.token_hex(3)}"
    pm = Podman(tmp, runtime, parent)
    try:
        image = os.path.join(tmp, "image.tar")
        with tarfile.open(image, "w") as tar:
            add_busybox_root(tar)
        pm("import", image, IMAGE)
        yield pm
    finally:
        pm("rm", "--all", "--force", "--time", "0", check=False)
        pm("system", "reset", "--force", check=False)
        ociclient.remove_empty_cgroups(f"{parent}/conmon")
        if not run_containers_existed:
            shutil.rmtree("/run/containers", ignore_errors=True)
        if not runtime_root_existed:
            shutil.rmtree(RUNTIME_ROOT, ignore_errors=True)
        leaks = leftovers(tmp, parent)
        assert leaks == {"mounts": [], "cgroups": [], "processes": []}


def test_run_rm_prints_the_output_and_leaves_no_container(podman):
    out = podman("run", "--rm", *podman.run_options, IMAGE, "sh", "-c",
                 "echo hello from podman; id -u")
    assert out.stdout == "hello from podman\n0\n"
    assert podman("ps", "--all", "--quiet").stdout == ""


def test_run_rm_passes_the_exit_status(podman):
    assert podman("run", "--rm", *podman.run_options, IMAGE, "sh", "-c", "exit 7",
                  check=False).returncode == 7


def test_run_detached_exec_and_stop(podman):
    name = f"t{secrets.token_hex(3)}"
    podman("run", "--detach", "--name", name, *podman.run_options, IMAGE, "sleep", "300")
    try:
        init = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        got = podman("exec", name, "sh", "-c",
                     "for n in pid mnt net ipc uts; do readlink /proc/self/ns/$n; done; "
                     "cat /proc/1/cmdline").stdout.splitlines()
        want = [os.readlink(f"/proc/{init}/ns/{n}") for n in ("pid", "mnt", "net", "ipc", "uts")]
        # The exec'd process is in every namespace of the init, which is its pid 1.
        assert got == [*want, "sleep\x00300\x00"]
        assert podman("exec", name, "sh", "-c", "exit 5", check=False).returncode == 5
        podman("stop", "--time", "1", name)
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                       name).stdout.split()
        # sleep as pid 1 ignores SIGTERM: podman kills it after the timeout.
        assert state == ["exited", "137"]
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def test_run_interactive_with_a_terminal(podman):
    out, code = talk([*podman.base, "run", "--rm", "-it", *podman.run_options, IMAGE, "sh"],
                      b"tty; stty size; echo $((6*7)); exit 3\n", 50, 132)
    assert code == 3, out
    # The container's own pty, our window size, and what the shell computed.
    assert b"\r\n/dev/pts/0\r\n50 132\r\n42\r\n" in out, out


def test_exec_interactive_with_a_terminal(podman):
    name = f"t{secrets.token_hex(3)}"
    podman("run", "--detach", "--name", name, *podman.run_options, IMAGE, "sleep", "300")
    try:
        out, code = talk([*podman.base, "exec", "-it", name, "sh"],
                          b"tty; stty size; exit 4\n", 30, 90)
        assert code == 4, out
        assert b"\r\n/dev/pts/0\r\n30 90\r\n" in out, out
    finally:
        podman("rm", "--force", "--time", "0", name)


def test_pause_and_unpause(podman):
    name = f"t{secrets.token_hex(3)}"
    podman("run", "--detach", "--name", name, *podman.run_options, IMAGE, "sh", "-c",
           "while true; do date +%s%N > /tmp/tick; sleep 0.05; done")
    try:
        time.sleep(0.3)
        podman("pause", name)
        assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() == \
            "paused"
        init = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        # Frozen: the loop writes nothing while paused.
        tick = f"/proc/{init}/root/tmp/tick"
        with open(tick) as f:
            before = f.read()
        time.sleep(0.4)
        with open(tick) as f:
            assert f.read() == before
        podman("unpause", name)
        assert podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() == \
            "running"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(tick) as f:
                if f.read() != before:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the container did not run again after unpause")
    finally:
        podman("rm", "--force", "--time", "0", name)
