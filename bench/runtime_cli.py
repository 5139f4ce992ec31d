"""`mctl-runtime run` against `runc run` and `crun run`, and start under the agent with each.

    .venv/bin/python bench/runtime_cli.py [--runs 30] [--warmup 3] [--installed PATH]

Not a test; needs root. Two tables, on bundles made as the agent makes them
(`ContainerManager.create`: busybox overlay rootfs, /etc files, config.json
with a 64 MiB memory limit), a fresh bundle per run, runtimes taking turns
within each run so drift hits them alike:

1. The whole `run` process, from spawn to exit, for a `/bin/true`
   container: create cgroup, namespaces, mounts, pivot_root, exec, wait,
   delete (all three remove their cgroup and state before exiting).
   - runc run;
   - crun run as a caller on this hybrid-cgroup machine must call it: in a
     private mount namespace with the cgroup2 mount detached
     (oci/client.base_argv: `unshare` + `sh` + `umount` + crun);
   - mctl-runtime run through this checkout's console script (an editable
     install: `site` loads setuptools' editable finder on every start);
   - mctl-runtime run of `--installed PATH`, e.g. the console script of a
     regular `pip install` in another virtualenv (no editable finder);
   - floors: this virtualenv's `python -c pass` and `python -S -c pass`
     (what any Python command pays before its first import) and /bin/true.
2. Start under the agent: `runtime.start(id, bundle)`, the agent's own call,
   from the request to its zygote until the monitor reports the container's
   process started, with the native runtime and with `--runtime` runc, crun
   and mctl-runtime (the monitor runs `<runtime> create` then `start`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from _common import (
    CgroupPrefix,
    Cleanup,
    Table,
    check_leftovers,
    print_header,
    run_command,
    temp_dir,
)

from mctl.agent.containers import Container, ContainerManager
from mctl.agent.images.store import ImageStore
from mctl.agent.runtime.api import Runtime
from mctl.agent.runtime.cgroups import detect
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.oci import client as ociclient
from mctl.agent.runtime.oci.command import OciCommandRuntime
from mctl.agent.runtime.state import EXIT_FILE
from mctl.v1 import types_pb2

MEMORY_LIMIT = 64 << 20


def replica(name: str) -> types_pb2.Replica:
    r = types_pb2.Replica(workload="rtcli", spec_hash="bench")
    r.metadata.name = name
    r.metadata.namespace = "default"
    r.metadata.uid = name
    r.spec.image = "busybox"
    r.spec.command[:] = ["/bin/true"]
    r.spec.restart_policy = "Never"
    r.spec.resources.memory_bytes = MEMORY_LIMIT
    return r


class Bundles:
    def __init__(self, stack: Cleanup, base: Path) -> None:
        self.prefix = CgroupPrefix(stack)
        images = ImageStore(str(base / "images"))
        images.ensure_busybox()
        self.manager = ContainerManager(str(base), "bench", images, detect(), NativeRuntime(),
                                        cgroup_parent=self.prefix.path)
        stack.callback(self.teardown_all)
        self.count = 0

    def make(self) -> Container:
        self.count += 1
        return self.manager.create(replica(f"r{self.count}"))

    def teardown(self, c: Container) -> None:
        self.manager.teardown(c)
        ociclient.remove_empty_cgroups(c.cgroup)

    def teardown_all(self) -> None:
        for c in self.manager.snapshot():
            self.manager.stop(c, 0)
            self.teardown(c)


def whole_process(b: Bundles, base: Path, runs: int, warmup: int, installed: str) -> None:
    commands: dict[str, list[str]] = {}
    for name in ("runc", "crun", "mctl-runtime"):
        try:
            commands[name] = ociclient.base_argv(ociclient.resolve(name), str(base / name))
        except ociclient.RuntimeNotFound as e:
            print(f"skipping {name}: {e}")
    if installed:
        commands["mctl-runtime (--installed)"] = [installed, "--root", str(base / "installed")]
    floors = {"python -c pass (this venv)": [sys.executable, "-c", "pass"],
              "python -S -c pass": [sys.executable, "-S", "-c", "pass"],
              "/bin/true": ["/bin/true"]}
    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(warmup + runs):
        for label, argv in commands.items():
            c = b.make()
            try:
                elapsed = run_command([*argv, "run", "--bundle", c.bundle, c.id])
            finally:
                b.teardown(c)
            if i >= warmup:
                samples[label].append(elapsed * 1000)
        for label, argv in floors.items():
            elapsed = run_command(argv)
            if i >= warmup:
                samples[label].append(elapsed * 1000)
    table = Table("`<runtime> run` of a /bin/true container, the whole process", "ms")
    for label in [*commands, *floors]:
        table.add(label, samples[label])
    for label in commands:
        if label != "runc":
            table.ratio(f"{label} / runc", label, "runc")


def wait_file(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout}s")
        time.sleep(0.002)


def under_agent(stack: Cleanup, b: Bundles, base: Path, runs: int, warmup: int) -> None:
    runtimes: dict[str, Runtime] = {"native": NativeRuntime()}
    for name in ("runc", "crun", "mctl-runtime"):
        try:
            runtimes[name] = OciCommandRuntime(ociclient.resolve(name),
                                             str(base / "agent-roots" / name))
        except ociclient.RuntimeNotFound as e:
            print(f"skipping {name}: {e}")
    for rt in runtimes.values():
        stack.callback(rt.close)
        rt.warm_up()
    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(warmup + runs):
        for label, rt in runtimes.items():
            c = b.make()
            try:
                start = time.perf_counter()
                rt.start(c.id, c.bundle)
                elapsed = time.perf_counter() - start
                wait_file(Path(c.bundle) / EXIT_FILE)
                code = json.loads((Path(c.bundle) / EXIT_FILE).read_text())["exit_code"]
                if code != 0:
                    raise SystemExit(f"{label}: the container exited {code}")
            finally:
                rt.delete(c.id, c.bundle, c.cgroup)
                b.teardown(c)
            if i >= warmup:
                samples[label].append(elapsed * 1000)
    table = Table("start under the agent: runtime.start() until the process has started", "ms")
    for label in runtimes:
        table.add(label, samples[label])
    for label in runtimes:
        if label != "native":
            table.ratio(f"{label} / native", label, "native")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--installed", default="",
                   help="another mctl-runtime to time too, e.g. from a regular pip install")
    args = p.parse_args()
    print_header("OCI runtime command line: mctl-runtime, runc, crun")
    stages: list[Callable[[], None]] = []
    with Cleanup() as stack:
        base = temp_dir(stack, "rtcli")
        b = Bundles(stack, base)
        stages = [lambda: whole_process(b, base, args.runs, args.warmup, args.installed),
                  lambda: under_agent(stack, b, base, args.runs, args.warmup)]
        for stage in stages:
            stage()
        prefix = b.prefix.name
    check_leftovers([str(base)], [prefix])


if __name__ == "__main__":
    main()
