"""`mctl-runtime run` against `runc run` and `crun run`, and start under the agent with each.

    .venv/bin/python bench/runtime_cli.py [--runs 30] [--warmup 3] [--installed PATH]
                                          [--compare-tree DIR] [--stages LIST]

Not a test; needs root. Three tables, runtimes taking turns within each run
so drift hits them alike. The first two are on bundles made as the agent
makes them (`ContainerManager.create`: busybox overlay rootfs, /etc files,
config.json with a 64 MiB memory limit), a fresh bundle per run:

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
3. The whole `run` process on a plain `runc spec` bundle (the reference
   bundle of issue 19): runc's own default config.json with
   process.terminal false, args /bin/true and a cgroup namespace added, the
   busybox image's layer as its read-only rootfs; a fresh bundle directory
   per run. runc's defaults have no resource limit but a deny-all device
   rule, seven mounts (/sys/fs/cgroup among them), masked and read-only
   paths.

--compare-tree DIR times another checkout's mctl-runtime too (e.g. a `git
worktree` of the commit before a change), in tables 1 and 3. Both that tree
and this one are then also run through the same small launcher (`sh`, then
`python -I -S` with `mctl` mapped to the tree), so the pair differs only in
the tree; the installed console script of this checkout is timed as well.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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


def tree_launcher(base: Path, label: str, tree: Path) -> Path:
    """An executable that runs checkout `tree`'s mctl-runtime as bin/mctl-runtime does:
    `sh` re-runs it as `python -I -S`, with `mctl` mapped to the tree's folders."""
    boot = ("import sys; end = sys.argv.index('--'); m = type(sys)('mctl'); "
            "m.__path__ = sys.argv[1:end]; sys.modules['mctl'] = m; del sys.argv[1:end + 1]; "
            "sys.argv[0] = 'mctl-runtime'; from mctl.agent.runtime.oci.cli import entry; entry()")
    path = base / f"launcher-{label}"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S -c "{boot}" {tree} -- "$@"\n')
    path.chmod(0o755)
    return path


def mctl_commands(base: Path, installed: str, compare_tree: Path | None) -> dict[str, list[str]]:
    """The runtimes to time: runc, crun, this checkout's mctl-runtime and the others asked for."""
    commands: dict[str, list[str]] = {}
    for name in ("runc", "crun", "mctl-runtime"):
        try:
            commands[name] = ociclient.base_argv(ociclient.resolve(name), str(base / name))
        except ociclient.RuntimeNotFound as e:
            print(f"skipping {name}: {e}")
    if installed:
        commands["mctl-runtime (--installed)"] = [installed, "--root", str(base / "installed")]
    if compare_tree is not None:
        here = Path(__file__).resolve().parent.parent
        for label, tree in (("this tree", here), ("compare tree", compare_tree.resolve())):
            launcher = tree_launcher(base, label.replace(" ", "-"), tree)
            commands[f"mctl-runtime ({label}, launcher)"] = [
                str(launcher), "--root", str(base / label.replace(" ", "-"))]
    return commands


def whole_process(b: Bundles, base: Path, runs: int, warmup: int,
                  commands: dict[str, list[str]]) -> None:
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


def plain_spec(base: Path, rootfs: str) -> dict[str, object]:
    """`runc spec`'s config.json, made to run /bin/true without a terminal in a cgroup ns."""
    spec_dir = base / "runc-spec"
    spec_dir.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(spec_dir)], check=True)
    doc = json.loads((spec_dir / "config.json").read_text())
    doc["process"]["terminal"] = False
    doc["process"]["args"] = ["/bin/true"]
    doc["root"]["path"] = rootfs
    doc["linux"]["namespaces"].append({"type": "cgroup"})
    return doc


def whole_process_plain(b: Bundles, base: Path, runs: int, warmup: int,
                        commands: dict[str, list[str]]) -> None:
    if "runc" not in commands:
        print("skipping the plain `runc spec` bundle: no runc")
        return
    image = b.manager.images.get("busybox")
    doc = plain_spec(base, b.manager.images.layer_path(image.layers[0]))
    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(warmup + runs):
        for label, argv in commands.items():
            bundle = base / "plain" / f"{i}-{len(samples[label])}-{label.split()[0]}"
            bundle.mkdir(parents=True)
            (bundle / "config.json").write_text(json.dumps(doc))
            cid = f"plain{i}x{abs(hash(label)) % 10**6}"
            try:
                elapsed = run_command([*argv, "run", "--bundle", str(bundle), cid])
            finally:
                shutil.rmtree(bundle, ignore_errors=True)
            if i >= warmup:
                samples[label].append(elapsed * 1000)
    table = Table("`<runtime> run` on a plain `runc spec` bundle (/bin/true, cgroup ns), "
                  "the whole process", "ms")
    for label in commands:
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
    p.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                   help="another checkout whose mctl-runtime is timed too (tables 1 and 3)")
    p.add_argument("--stages", default="agent-bundle,under-agent,plain-bundle",
                   help="which tables, comma-separated: agent-bundle, under-agent, plain-bundle")
    args = p.parse_args()
    wanted = set(args.stages.split(","))
    unknown = wanted - {"agent-bundle", "under-agent", "plain-bundle"}
    if unknown:
        p.error(f"--stages: unknown {', '.join(sorted(unknown))}")
    print_header("OCI runtime command line: mctl-runtime, runc, crun")
    stages: list[Callable[[], None]] = []
    with Cleanup() as stack:
        base = temp_dir(stack, "rtcli")
        b = Bundles(stack, base)
        commands = mctl_commands(base, args.installed, args.compare_tree)
        if "agent-bundle" in wanted:
            stages.append(lambda: whole_process(b, base, args.runs, args.warmup, commands))
        if "under-agent" in wanted:
            stages.append(lambda: under_agent(stack, b, base, args.runs, args.warmup))
        if "plain-bundle" in wanted:
            stages.append(lambda: whole_process_plain(b, base, args.runs, args.warmup, commands))
        for stage in stages:
            stage()
        prefix = b.prefix.name
    check_leftovers([str(base)], [prefix])


if __name__ == "__main__":
    main()
