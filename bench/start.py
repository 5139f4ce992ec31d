"""Container start: the agent's native runtime against runc, crun and bare unshare.

    .venv/bin/python bench/start.py [--runs 60] [--warmup 5] [--trace-runs 30]

Not a test; needs root. What is timed, per run, for a `busybox /bin/true`
container with a 64 MiB memory limit, on a bundle made as the agent makes
one (`ContainerManager.create`: overlay rootfs of the busybox image,
/etc files, `oci.write_config`), fresh for every run:

- native, started: `NativeRuntime.start(id, bundle)`, the agent's own call,
  from the request to the zygote until the reply that the container's
  process has exec'd (zygote -> monitor -> cgroup, namespaces, mounts,
  pivot_root, capabilities -> exec);
- native, exited: from the same request until the monitor has reaped the
  container and written exit.json (the monitor's own exit, seen by pidfd);
- runc: `runc run` of the same bundle, the whole process (it also removes
  its cgroup and state before it exits);
- crun: crun refuses this machine's hybrid cgroup mounts unless the
  unified (v2) hierarchy is not mounted, so it is measured two ways:
  `unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec crun run ...'`
  per run (what a caller pays here), and plain `crun run` from a helper
  process that made a private mount namespace with the unified hierarchy
  unmounted once (crun's own cost);
- floors: `unshare -fpmuinC --mount-proc true` (the same namespaces, no
  cgroup, no rootfs) and spawning `/bin/true` (what starting any process
  from this Python costs; every reference pays it, native does not).

Runtimes take turns within each run, so drift affects them alike. Then a
traced zygote (see _native_trace.py) says where the native time goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from _common import (
    CgroupPrefix,
    Cleanup,
    Table,
    check_leftovers,
    memory_of,
    print_header,
    run_command,
    temp_dir,
)
from _native_trace import Step, Traced, TracedZygote, child_stamps, collect

from mctl.agent.containers import Container, ContainerManager
from mctl.agent.images.store import ImageStore
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.cgroups import detect
from mctl.agent.runtime.native import NativeRuntime
from mctl.agent.runtime.state import EXIT_FILE, LOG_FILE
from mctl.v1 import types_pb2

MEMORY_LIMIT = 64 << 20
UNIFIED = "/sys/fs/cgroup/unified"


def replica(name: str, cpu_millis: int = 0) -> types_pb2.Replica:
    r = types_pb2.Replica(workload="start", spec_hash="bench")
    r.metadata.name = name
    r.metadata.namespace = "default"
    r.metadata.uid = name
    r.spec.image = "busybox"
    r.spec.command[:] = ["/bin/true"]
    r.spec.restart_policy = "Never"
    r.spec.resources.memory_bytes = MEMORY_LIMIT
    r.spec.resources.cpu_millis = cpu_millis
    return r


class Bench:
    def __init__(self, stack: Cleanup, base: Path) -> None:
        self.base = base
        self.prefix = CgroupPrefix(stack)
        images = ImageStore(str(base / "images"))
        images.ensure_busybox()
        self.runtime = NativeRuntime()
        stack.callback(self.runtime.close)
        self.manager = ContainerManager(str(base), "bench", images, detect(), self.runtime,
                                        cgroup_parent=self.prefix.path)
        stack.callback(self.teardown_all)
        self.state = base / "runtime-state"
        self.count = 0

    def teardown_all(self) -> None:
        for c in self.manager.snapshot():
            self.manager.stop(c, 0)
            self.manager.teardown(c)

    def bundle(self, cpu_millis: int = 0) -> tuple[Container, float]:
        """A fresh bundle; returns it and the seconds ContainerManager.create took."""
        self.count += 1
        start = time.perf_counter()
        c = self.manager.create(replica(f"s{self.count}", cpu_millis))
        return c, time.perf_counter() - start

    def teardown(self, c: Container) -> float:
        start = time.perf_counter()
        self.manager.teardown(c)
        return time.perf_counter() - start


def exit_record(c: Container) -> dict:
    with open(os.path.join(c.bundle, EXIT_FILE)) as f:
        return json.load(f)


def wait_exit(pid: int) -> None:
    """Returns once process `pid` has exited (pidfd; it is not our child)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], 10)
    finally:
        os.close(fd)


def run_native(b: Bench, c: Container) -> tuple[float, float]:
    start = time.perf_counter()
    result = b.runtime.start(c.id, c.bundle)
    started = time.perf_counter()
    wait_exit(result.monitor_pid)
    exited = time.perf_counter()
    code = exit_record(c)["exit_code"]
    if code != 0:
        raise RuntimeError(f"native container {c.id} exited {code}")
    return started - start, exited - start


def runc(b: Bench, c: Container) -> list[str]:
    return ["runc", "--root", str(b.state / "runc"), "run", "--bundle", c.bundle, c.id]


def crun_wrapped(b: Bench, c: Container) -> list[str]:
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"umount {UNIFIED} && exec crun --root {b.state / 'crun'} run "
            f"--bundle {c.bundle} {c.id}"]


def cpu_limited(b: Bench, runs: int, millis: int) -> None:
    """The same starts with a CPU limit on the container's cgroup (as workloads have).

    The container's first process joins its cgroup before it sets up the
    namespaces and mounts, so that setup runs under the container's CFS
    quota: `millis` of CPU per 100 ms period.
    """
    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(runs + 1):
        c, _ = b.bundle(millis)
        try:
            started, exited = run_native(b, c)
        finally:
            b.teardown(c)
        c, _ = b.bundle(millis)
        try:
            t = run_command(runc(b, c))
        finally:
            b.teardown(c)
        if i:
            samples["native: start -> exec'd"].append(started)
            samples["native: start -> exited, reaped, recorded"].append(exited)
            samples["runc run (whole process)"].append(t)
    table = Table(f"the same with a CPU limit of {millis}m ({millis / 10:g} ms of CPU per "
                  f"100 ms), {runs} runs", "ms")
    for label, values in samples.items():
        table.add(label, [v * 1e3 for v in values])
    table.ratio("native exited / runc", "native: start -> exited, reaped, recorded",
                "runc run (whole process)")


def crun_in_private_namespace(b: Bench, runs: int, warmup: int) -> tuple[list[float], str]:
    """Runs `crun run` from a forked helper in a private mount namespace without the
    unified hierarchy; the helper makes and removes the bundles there too."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            sys = sc.libc()
            sys.unshare(sc.CLONE_NEWNS)
            sys.mount("", "/", "", sc.MS_REC | sc.MS_PRIVATE)
            sys.umount(UNIFIED, sc.MNT_DETACH)
            samples = []
            for i in range(warmup + runs):
                c, _ = b.bundle()
                try:
                    t = run_command(["crun", "--root", str(b.state / "crun"), "run",
                                     "--bundle", c.bundle, c.id])
                finally:
                    b.teardown(c)
                if i >= warmup:
                    samples.append(t)
            os.write(w, json.dumps({"samples": samples}).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": str(e)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    doc = json.loads(b"".join(chunks) or b'{"error": "helper died"}')
    return doc.get("samples", []), doc.get("error", "")


def compare(b: Bench, runs: int, warmup: int) -> None:
    samples: dict[str, list[float]] = defaultdict(list)
    references: dict[str, Callable[[Container], float]] = {
        "runc run (whole process)": lambda c: run_command(runc(b, c)),
        "crun run via unshare -m sh -c 'umount; exec'": lambda c: run_command(crun_wrapped(b, c)),
    }
    floors = {
        "unshare -fpmuinC --mount-proc true": ["unshare", "-fpmuinC", "--mount-proc", "true"],
        "spawn /bin/true": ["/bin/true"],
    }
    b.runtime.warm_up()
    for i in range(warmup + runs):
        keep = i >= warmup
        c, prep = b.bundle()
        try:
            started, exited = run_native(b, c)
        finally:
            down = b.teardown(c)
        if keep:
            samples["native: start -> exec'd (NativeRuntime.start)"].append(started)
            samples["native: start -> exited, reaped, recorded"].append(exited)
            samples["agent: bundle (ContainerManager.create)"].append(prep)
            samples["agent: teardown (cgroup, unmount, rm)"].append(down)
        for label, step in references.items():
            c, _ = b.bundle()
            try:
                t = step(c)
            finally:
                b.teardown(c)
            if keep:
                samples[label].append(t)
        for label, argv in floors.items():
            t = run_command(argv)
            if keep:
                samples[label].append(t)
    crun_samples, error = crun_in_private_namespace(b, runs, warmup)

    table = Table(f"container start, busybox /bin/true, memory limit 64 MiB ({runs} runs, "
                  f"{warmup} warm-up)", "ms")
    for label in ("native: start -> exec'd (NativeRuntime.start)",
                  "native: start -> exited, reaped, recorded"):
        table.add(label, [s * 1e3 for s in samples[label]])
    table.add("runc run (whole process)", [s * 1e3 for s in samples["runc run (whole process)"]])
    if crun_samples:
        table.add("crun run in a private mount ns (made once)", [s * 1e3 for s in crun_samples])
    else:
        table.note(f"crun run in a private mount ns: failed: {error}")
    for label in ("crun run via unshare -m sh -c 'umount; exec'",
                  "unshare -fpmuinC --mount-proc true", "spawn /bin/true",
                  "agent: bundle (ContainerManager.create)",
                  "agent: teardown (cgroup, unmount, rm)"):
        table.add(label, [s * 1e3 for s in samples[label]])
    print()
    exited = "native: start -> exited, reaped, recorded"
    table.ratio("native exited / crun", exited, "crun run in a private mount ns (made once)")
    table.ratio("native exited / runc", exited, "runc run (whole process)")
    table.ratio("native exited / unshare floor", exited, "unshare -fpmuinC --mount-proc true")
    zygote = b.runtime.zygote.pid
    if zygote:
        rss, pss = memory_of(zygote)
        table.note(f"zygote: RSS {rss / 2**20:.1f} MiB, PSS {pss / 2**20:.1f} MiB "
                   "(what each monitor fork copies page tables of)")


def keyed(steps: list[Step]) -> list[tuple[str, Step]]:
    """Each step with a key that names it alike in every run ("label", "label #2", ...)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for st in steps:
        seen[st.label] += 1
        out.append((st.label if seen[st.label] == 1 else f"{st.label} #{seen[st.label]}", st))
    return out


def untimed(steps: list[tuple[str, Step]]) -> list[tuple[str, Step]]:
    """The gaps within each process between its timed steps, as steps of their own.

    In the child, the gap after the fork is joining the cgroup (a write to
    cgroup.procs per hierarchy), which runs inline and has no function to
    wrap; in the monitor, it is setsid, stdio and pipes.
    """
    gaps = []
    for role in ("zygote", "monitor", "child"):
        prefix = f"{role}: "
        previous: tuple[str, float] | None = None   # (key, end) of the last step
        for key, st in steps:
            if not key.startswith(prefix):
                continue
            if previous is not None and st.start_ms > previous[1]:
                gaps.append((f"{prefix}(untimed) between {previous[0][len(prefix):]} and "
                             f"{key[len(prefix):]}", Step("", previous[1], st.start_ms)))
            if previous is None or st.end_ms > previous[1]:
                previous = (key, st.end_ms)
    return gaps


def trace(b: Bench, runs: int, parallel: int = 1) -> tuple[list[float], float]:
    """Where the native start's time goes: traced zygotes' steps, medians over runs.

    With `parallel` > 1, that many zygotes start containers at the same time,
    as the agents of a local cluster's nodes do on one machine. Returns the
    reply times (ms) and the starts per second over all zygotes.
    """
    outs = [str(b.base / f"trace-{parallel}-{i}.jsonl") for i in range(parallel)]
    warmup = 3
    zygotes: list[TracedZygote] = []
    bundles: list[list[Container]] = []
    traced: list[list[Traced]] = [[] for _ in range(parallel)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for k, c in enumerate(bundles[i]):
                result, sent, replied = zygotes[i].start(c.id, c.bundle)
                if result.error:
                    raise RuntimeError(f"traced start failed: {result.error}")
                wait_exit(result.monitor_pid)
                # The zygote forks its next spare (and the spare its init,
                # spawn.InitAhead) once a start has reported; the untimed
                # comparison gives it the references' turns, this a pause.
                time.sleep(0.02)
                if k >= warmup:
                    log = os.path.join(c.bundle, LOG_FILE)
                    traced[i].append(Traced(result.monitor_pid, sent, replied,
                                            child_stamps(log)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)
    try:
        # Forks first, threads after: never fork while a thread runs.
        zygotes += [TracedZygote(out) for out in outs]
        bundles += [[b.bundle()[0] for _ in range(runs + warmup)] for _ in range(parallel)]
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallel)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        for z in zygotes:
            z.close()
        for group in bundles:
            for c in group:
                b.teardown(c)
    if errors:
        raise errors[0]
    runs_steps = [steps for i in range(parallel) for steps in collect(outs[i], traced[i])]
    print_waterfall(runs_steps, f"{parallel} zygote{'s' if parallel > 1 else ''} starting "
                                f"at once, {len(runs_steps)} starts")
    replied = [s.end_ms for steps in runs_steps for s in steps
               if s.label == "agent: reply received"]
    return replied, parallel * (runs + warmup) / wall


def print_waterfall(runs_steps: list[list[Step]], what: str) -> None:
    by_label: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for steps in runs_steps:
        named = keyed(steps)
        for key, st in named + untimed(named):
            by_label[key].append((st.start_ms, st.end_ms))
    rows = []
    for label, spans in by_label.items():
        took = statistics.median(e - a for a, e in spans)
        if len(spans) < len(runs_steps) // 2 or ("(untimed)" in label and took < 0.1):
            continue   # a step of only some runs, or a gap of a few statements
        rows.append((statistics.median(a for a, _ in spans),
                     statistics.median(e for _, e in spans), took, label))
    rows.sort()
    print(f"\nwhere the native start's time goes ({what}; ms since the agent sent the "
          "request, medians)")
    print(f"  {'from':>7} {'to':>7} {'took':>7}  step")
    for start, end, took, label in rows:
        print(f"  {start:>7.3f} {end:>7.3f} {took:>7.3f}  {label}")


def traced_runs(b: Bench, runs: int, parallel: int) -> None:
    results = [(1, *trace(b, runs))]
    if parallel > 1:
        results.append((parallel, *trace(b, runs, parallel)))
    table = Table("traced native start -> exec'd: one zygote, and several starting at once "
                  "(as a local cluster's agents do)", "ms")
    for n, replied, rate in results:
        table.add(f"{n} zygote{'s' if n > 1 else ''} at once, per start", replied,
                  f"{rate:.0f} starts/s in all")
    table.note("(the wrappers add a little to the untraced figures above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cpu-runs", type=int, default=15,
                        help="runs with a CPU limit (0: none)")
    parser.add_argument("--cpu-millis", type=int, default=100,
                        help="that CPU limit, in millicores")
    parser.add_argument("--trace-runs", type=int, default=30, help="0: no trace")
    parser.add_argument("--parallel", type=int, default=3,
                        help="zygotes starting at once in the second trace (1: none)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("start.py: needs root (namespaces, cgroups, mounts)")
    logging.basicConfig(level=logging.WARNING)
    print_header("bench/start.py: container start")
    with Cleanup() as stack:
        base = temp_dir(stack, "start")
        b = Bench(stack, base)
        compare(b, args.runs, args.warmup)
        if args.cpu_runs:
            cpu_limited(b, args.cpu_runs, args.cpu_millis)
        if args.trace_runs:
            traced_runs(b, args.trace_runs, args.parallel)
        prefix = b.prefix.name
    check_leftovers([str(base)], [prefix])


if __name__ == "__main__":
    main()
