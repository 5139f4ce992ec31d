"""Real containers for kernel tests: bundles as the agent builds them, started natively.

Not a test module: the user namespace, escape and rlimit tests import it
(pytest puts tests/kernel on sys.path). `Boxes` holds one temporary
directory ``mctl-ktest-*`` (searchable by others, as /var/lib is, so a user
namespace's mapped root can reach its rootfs), the busybox image, a cgroup
prefix ``mctl/test-<tag>-<random>`` and a NativeRuntime; `make` writes a
bundle like agent/containers.py does (overlay rootfs, /etc files, the
default mounts, capabilities and rlimits, optionally a user namespace with
ids from a real IdRanges pool, whose overlay then stacks idmapped layers at
bundle/lower/N), `start` runs it through the zygote.
`teardown` does what the agent's stop and teardown do, and `close` checks
that no mount, cgroup or process of these containers is left.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass

from mctl.agent.bundle import idmap, overlay
from mctl.agent.bundle.config import default_rlimits
from mctl.agent.idranges import IdRange, IdRanges
from mctl.agent.images.store import DEFAULT_PATH, ImageStore
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.cgroups import CgroupDriver, detect
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.state import EXIT_FILE, LOG_FILE
from mctl.common import containerlog
from mctl.common.procfs import mounts_mentioning, processes_mentioning, start_time

CGROUP_ROOT = "/sys/fs/cgroup"
MiB = 1 << 20
WAIT = 10.0
# Host ids for the tests' user namespaces: far from the agent's default
# 100000 (a local cluster may run beside the tests) and from real users.
TEST_ID_BASE = 1_500_000_000


@dataclass
class Box:
    id: str
    bundle: str
    cgroup: str
    ids: IdRange | None = None
    monitor_pid: int = 0
    init_pid: int = 0

    def path(self, *names: str) -> str:
        return os.path.join(self.bundle, *names)

    def wait_exit(self, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.path(EXIT_FILE)) as f:
                    return json.load(f)
            except FileNotFoundError:
                time.sleep(0.02)
        raise AssertionError(f"container {self.id} did not exit within {timeout}s")

    def lines(self, stream: str = "stdout") -> list[str]:
        return [data.decode(errors="replace")
                for batch in containerlog.read(self.path(LOG_FILE), -1, False, lambda: True)
                for _, s, data in batch if s == stream]

    def stdout(self) -> str:
        return "".join(line + "\n" for line in self.lines("stdout"))

    def output(self) -> str:
        """stdout and stderr, in the order they were logged."""
        return "".join(data.decode(errors="replace") + "\n"
                       for batch in containerlog.read(self.path(LOG_FILE), -1, False,
                                                      lambda: True)
                       for _, _, data in batch)


class Boxes:
    def __init__(self, tag: str) -> None:
        self.cgroups: CgroupDriver = detect(CGROUP_ROOT)
        self.tmp = tempfile.mkdtemp(prefix="mctl-ktest-")
        # mkdtemp makes it 0700; a user namespace's root must pass through it.
        os.chmod(self.tmp, 0o755)
        self.sys = sc.libc()
        self.images = ImageStore(os.path.join(self.tmp, "images"))
        image = self.images.ensure_busybox()
        self.lower = [self.images.layer_path(d) for d in reversed(image.layers)]
        self.runtime = NativeRuntime(CGROUP_ROOT)
        self.prefix = f"mctl/test-{tag}-{secrets.token_hex(4)}"
        self.id_ranges = IdRanges(os.path.join(self.tmp, "userns"), base=TEST_ID_BASE)
        self.boxes: list[Box] = []
        self.started: list[tuple[int, int]] = []

    def make(self, command: str | list[str], *, userns: bool = False, hostname: str = "kbox",
             memory: int | None = 64 * MiB, pids: int | None = 64,
             extra_mounts: tuple[oci.Mount, ...] = (), **overrides: object) -> Box:
        """A bundle for `command` (a shell script, or argv), not started."""
        cid = f"k{secrets.token_hex(4)}"
        box = Box(id=cid, bundle=os.path.join(self.tmp, "containers", cid),
                  cgroup=f"{self.prefix}/{cid}")
        os.makedirs(box.bundle)
        self.boxes.append(box)
        if userns:
            box.ids = self.id_ranges.allocate(cid)
        owner = (box.ids.start, box.ids.start) if box.ids else None
        args = ["sh", "-c", command, box.bundle] if isinstance(command, str) else command
        os.makedirs(box.path("etc"))
        mounts = oci.default_mounts()
        for name, text in {"hostname": f"{hostname}\n",
                           "hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n",
                           "resolv.conf": ""}.items():
            with open(box.path("etc", name), "w") as f:
                f.write(text)
            if owner:
                os.chown(box.path("etc", name), *owner)
            mounts.append(oci.Mount(f"/etc/{name}", "bind", box.path("etc", name),
                                    ("bind", "rw")))
        user: dict[str, object] = {}
        if box.ids:
            mapping = (oci.IdMapping(0, box.ids.start, box.ids.size),)
            user = {"namespaces": ("user", *oci.DEFAULT_NAMESPACES),
                    "uid_mappings": mapping, "gid_mappings": mapping}
        config = oci.Config(
            args=tuple(args),
            env=(f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"),
            hostname=hostname,
            mounts=tuple(mounts) + extra_mounts,
            cgroups_path=f"/{box.cgroup}",
            resources=oci.Resources(memory_limit=memory, memory_swap=memory,
                                    cpu_period=100_000, pids_limit=pids),
            rlimits=default_rlimits(),
            **user,  # type: ignore[arg-type]
        )
        config = config.replace(**overrides)
        lower = self.lower
        if box.ids:
            # As the agent (containers.py), without its fallback: a kernel
            # that cannot idmap fails the test rather than hiding it.
            mapping = (oci.IdMapping(0, box.ids.start, box.ids.size),)
            lower = idmap.mount_layers(self.sys, lower, box.path(idmap.LAYERS_DIR),
                                       mapping, mapping)
        overlay.mount_overlay(self.sys, lower, box.path("upper"), box.path("work"),
                             box.path("rootfs"), owner=owner)
        oci.write_config(box.bundle, config)
        return box

    def start(self, box: Box) -> Box:
        result = self.runtime.start(box.id, box.bundle)
        box.monitor_pid, box.init_pid = result.monitor_pid, result.init_pid
        for pid in (result.monitor_pid, result.init_pid):
            t = start_time(pid)
            if t:
                self.started.append((pid, t))
        return box

    def run(self, command: str | list[str], **options: object) -> Box:
        return self.start(self.make(command, **options))

    def teardown(self, box: Box) -> None:
        """What the agent's stop and teardown do: kill by cgroup, unmount, remove."""
        self.cgroups.destroy(box.cgroup, timeout=5.0)
        if box.monitor_pid:
            t = start_time(box.monitor_pid)
            deadline = time.monotonic() + WAIT
            while t and _alive(box.monitor_pid, t) and time.monotonic() < deadline:
                time.sleep(0.02)
        while overlay.unmount(self.sys, box.path("rootfs")):
            pass
        idmap.unmount_layers(self.sys, box.path(idmap.LAYERS_DIR))
        assert overlay.mounts_under(box.bundle) == []   # never rmtree through a mount
        shutil.rmtree(box.bundle)
        self.id_ranges.release(box.id)
        self.boxes.remove(box)

    def close(self) -> dict[str, list]:
        """Tears down what is left and returns whatever could not be removed."""
        for box in list(self.boxes):
            self.teardown(box)
        self.runtime.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and any(_alive(*p) for p in self.started):
            time.sleep(0.02)
        leaks = {
            "mounts": mounts_mentioning(self.tmp),
            "cgroups": glob.glob(f"{CGROUP_ROOT}/*/{self.prefix}"),
            "processes": processes_mentioning(self.tmp),
            "started pids": [p for p, t in self.started if _alive(p, t)],
            "id ranges": list(self.id_ranges.held()),
        }
        if not leaks["mounts"]:  # never rmtree through a mount
            shutil.rmtree(self.tmp)
        return {k: v for k, v in leaks.items() if v}


def _alive(pid: int, start: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != b"Z" and int(fields[19]) == start


def status_field(text: str, name: str) -> str:
    """A field of /proc/PID/status text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"{name} not in {text!r}")
