"""What the benchmarks share: statistics, the machine, clean-up on any exit, clusters.

The benchmarks are run by hand (never by CI, never as pass/fail tests). Each
prints every figure as median and spread over repeated runs, and the
reference it is compared with, measured in the same run on the same machine.

Every benchmark keeps what it makes (temporary dirs `mctl-bench-*`, cgroups
under `mctl/bench-*`, local clusters) on a `Cleanup` stack that runs on
normal exit, on error, on Ctrl-C and on SIGTERM, and checks at the end that
no mount, cgroup or process mentioning its names is left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MCTL = [PYTHON, "-m", "mctl.cli.main"]
CGROUP_ROOT = Path("/sys/fs/cgroup")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p10: float
    p90: float
    min: float
    max: float


def summarize(samples: Sequence[float]) -> Summary:
    """Median, 10th/90th percentiles (linear interpolation) and range of `samples`."""
    if not samples:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan)
    ordered = sorted(samples)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return Summary(len(ordered), statistics.median(ordered), pct(0.1), pct(0.9),
                   ordered[0], ordered[-1])


class Table:
    """Rows of `label n median p10 p90 min max unit`, printed as they come."""

    def __init__(self, title: str, unit: str, width: int = 46) -> None:
        self.unit = unit
        self.width = width
        self.rows: dict[str, Summary] = {}
        print(f"\n{title}")
        print(f"  {'':<{width}} {'n':>4} {'median':>9} {'p10':>9} {'p90':>9} "
              f"{'min':>9} {'max':>9}")

    def add(self, label: str, samples: Sequence[float], note: str = "") -> Summary:
        s = summarize(samples)
        self.rows[label] = s
        cells = " ".join(f"{v:>9.{_digits(v)}f}" for v in (s.median, s.p10, s.p90, s.min, s.max))
        print(f"  {label:<{self.width}} {s.n:>4} {cells} {self.unit}"
              + (f"  {note}" if note else ""))
        return s

    def note(self, text: str) -> None:
        print(f"  {text}")

    def ratio(self, label: str, of: str, to: str) -> None:
        """Prints median(of) / median(to), for "how far from the reference"."""
        a, b = self.rows.get(of), self.rows.get(to)
        if a is None or b is None or not b.median:
            return
        print(f"  {label:<{self.width}} {a.median / b.median:>9.2f}x  (median {of} / {to})")


def _digits(value: float) -> int:
    if math.isnan(value) or value == 0:
        return 1
    return 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0


# -- the machine ------------------------------------------------------------------------


def cgroup_mode() -> str:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "v2"
    with open("/proc/self/mountinfo") as f:
        hybrid = any(" - cgroup2 " in line for line in f)
    return "v1 hybrid (v2 mounted at /sys/fs/cgroup/unified)" if hybrid else "v1"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return head + (" + uncommitted changes" if dirty else "")


def print_header(title: str) -> None:
    """The title and what the figures depend on: date, machine, kernel, cgroups, commit."""
    print(title)
    print(f"  date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"nproc {os.cpu_count()}, kernel {platform.release()}, cgroups {cgroup_mode()}")
    print(f"  commit {commit()}, python {platform.python_version()} ({PYTHON})")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"  load average before the run: {load} (other work on the machine skews figures)")
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        # Every process then compiles each module changed since its bytecode was
        # written, and a tree without __pycache__ compiles all of them: +20-40 ms
        # per mctl call, and the compiler's garbage in every RSS.
        print("warning: PYTHONDONTWRITEBYTECODE is set: changed modules are compiled by every "
              "process that imports them; run with `env -u PYTHONDONTWRITEBYTECODE`",
              file=sys.stderr)


# -- clean-up on every exit ---------------------------------------------------------------


class Cleanup(contextlib.ExitStack):
    """An ExitStack that also runs on SIGTERM/SIGHUP and is not cut short by a second Ctrl-C.

    SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so every
    `finally` and registered callback runs. While the callbacks run, SIGINT
    is ignored (children started then inherit that), so clean-up finishes.
    """

    def __enter__(self) -> Cleanup:
        super().__enter__()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        return self

    def __exit__(self, *exc: object) -> bool:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return bool(super().__exit__(*exc))
        finally:
            signal.signal(signal.SIGINT, previous)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def temp_dir(stack: Cleanup, what: str) -> Path:
    """A fresh `mctl-bench-<what>-*` directory, removed at the end (never through a mount)."""
    path = Path(tempfile.mkdtemp(prefix=f"mctl-bench-{what}-"))

    def remove() -> None:
        if mounts_under(path):
            print(f"warning: mounts left under {path}; not removing it", file=sys.stderr)
            return
        shutil.rmtree(path, ignore_errors=True)
    stack.callback(remove)
    return path


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if str(path) in line.split()[4]]


def processes_mentioning(needle: str) -> list[str]:
    from mctl.common import procfs

    return [f"{pid}: {cmd[:100]}" for pid, cmd in procfs.processes_mentioning(needle)]


def cgroups_named(prefix: str) -> list[Path]:
    """Cgroup dirs `<hierarchy>/mctl/<prefix>*` in every hierarchy (v1 and v2)."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "mctl"
        if top.is_dir():
            found += [p for p in top.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return found


def check_leftovers(needles: Sequence[str], cgroup_prefixes: Sequence[str] = ()) -> None:
    """Warns about any mount, process or cgroup a benchmark should have removed."""
    left = []
    for needle in needles:
        left += [f"mount {m}" for m in mounts_under(Path(needle))]
        left += [f"process {p}" for p in processes_mentioning(needle)]
    for prefix in cgroup_prefixes:
        left += [f"cgroup {p}" for p in cgroups_named(prefix)]
    if left:
        print("warning: left behind:\n  " + "\n  ".join(left), file=sys.stderr)
    else:
        print("\nclean-up checked: no mount, process or cgroup left behind")


class CgroupPrefix:
    """A cgroup prefix `mctl/bench-<random>` of one run, swept in every hierarchy at the end.

    runc makes a container's cgroup in every hierarchy, not only cpu, memory
    and pids, so the sweep walks them all. The shared `mctl` parent is removed
    only where this run created it, and only if empty.
    """

    def __init__(self, stack: Cleanup) -> None:
        self.name = f"bench-{secrets.token_hex(3)}"
        self.path = f"mctl/{self.name}"
        self._had_top = {h for h in CGROUP_ROOT.iterdir() if (h / "mctl").is_dir()}
        stack.callback(self.sweep)

    def sweep(self) -> None:
        for hierarchy in CGROUP_ROOT.iterdir():
            mine = hierarchy / self.path
            if mine.is_dir():
                _remove_cgroup_tree(mine)
            if hierarchy not in self._had_top:
                with contextlib.suppress(OSError):
                    (hierarchy / "mctl").rmdir()


def _remove_cgroup_tree(top: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while top.is_dir() and time.monotonic() < deadline:
        for dirpath, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                for pid in Path(dirpath, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                os.rmdir(dirpath)
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOENT, errno.ENOTEMPTY):
                    raise
        if top.is_dir():
            time.sleep(0.02)


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, what: str, proc: subprocess.Popen | None = None,
              host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def wait_for(what: str, predicate: Callable[[], object], timeout: float,
             interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """TERM, then KILL after `timeout`; reaps. Only for processes this run started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes from /proc/PID/smaps_rollup (man 5 proc)."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_command(argv: list[str]) -> float:
    """Seconds `argv` took from spawn to exit; a RuntimeError with its stderr if it failed."""
    start = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    return elapsed


def children_of(pid: int) -> list[int]:
    from mctl.common import procfs

    return [child for child, _, _ in procfs.children(pid)]


# -- etcd ---------------------------------------------------------------------------------


class Etcd:
    """Debian's etcd on free loopback ports with its data dir under `base`."""

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.port}"
        self.log = base / "etcd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["/usr/bin/etcd", "--name", "mctl-bench", "--data-dir", str(base / "etcd"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"mctl-bench={peer}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_port(self.port, 20, "etcd", self.proc)
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        stop_process(self.proc)


# -- a local cluster ----------------------------------------------------------------------


WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: {replicas}
  image: busybox
  command: {command}
  restartPolicy: {policy}
  resources: {{cpu: {cpu}, memory: {memory}}}
"""


def workload_yaml(name: str, replicas: int, command: Sequence[str] = ("sleep", "3600"),
                  policy: str = "Always", cpu: str = "10m", memory: str = "16Mi") -> str:
    """A busybox workload; its small cpu request lets 100 replicas fit one 2-core node
    (the default request, 250m, would stop at 8 per node)."""
    return WORKLOAD.format(name=name, replicas=replicas, command=json.dumps(list(command)),
                           policy=policy, cpu=cpu, memory=memory)


def exited(pid: int) -> bool:
    """Exited (a zombie counts: `cluster up` is not there to reap what it started)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class LocalCluster:
    """`mctl cluster up` in a temporary --dir, with MCTL_HOME pointing to a temporary dir.

    The user's CLI config and default cluster are never touched. `down` runs
    from the clean-up stack, also after a half-finished `up`.
    """

    def __init__(self, stack: Cleanup, base: Path, nodes: int, stop_grace: float = 1.0,
                 extra: Sequence[str] = ()) -> None:
        self.dir = base / "cluster"
        self.home = base / "home"
        self.nodes = nodes
        self.env = {**os.environ, "MCTL_HOME": str(self.home),
                    "MCTL_CLUSTER_DIR": str(self.dir)}
        stack.callback(self.down)
        start = time.perf_counter()
        self.mctl("cluster", "up", "--nodes", str(nodes), "--dir", str(self.dir),
                  "--stop-grace", str(stop_grace), *extra, timeout=120)
        self.up_seconds = time.perf_counter() - start
        self.state = json.loads((self.dir / "cluster.json").read_text())
        self.id = str(self.state["id"])
        self.server = str(self.state["server"])
        self.etcd = str(self.state["etcd"])
        # A secured cluster's etcd admits only certificates of its own CA:
        # the bench watches it as a scheduler does.
        etcd_pki = self.dir / "pki" / "etcd"
        self.etcd_tls = ((str(etcd_pki / "ca.crt"), str(etcd_pki / "scheduler.crt"),
                          str(etcd_pki / "scheduler.key"))
                         if "tls" in self.state and etcd_pki.is_dir() else None)

    def mctl(self, *args: str, timeout: float = 60,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(MCTL + list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"mctl {' '.join(args)} exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()}")
        return proc

    def process(self, name: str) -> dict:
        state = json.loads((self.dir / "cluster.json").read_text())
        return next(p for p in state["processes"] if p["name"] == name)

    def pid(self, name: str) -> int:
        return int(self.process(name)["pid"])

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def kill(self, name: str) -> float:
        """SIGKILLs the cluster's process `name` (etcd, scheduler, node1...); returns when."""
        os.kill(self.pid(name), signal.SIGKILL)
        return time.monotonic()

    def restart(self, name: str) -> None:
        """Starts `name` again with the argv `cluster up` recorded, and records the new pid
        and start time in cluster.json, so `cluster down` stops it like the others."""
        from mctl.common.procfs import start_time

        path = self.dir / "cluster.json"
        state = json.loads(path.read_text())
        proc = next(p for p in state["processes"] if p["name"] == name)
        with open(proc["log"], "ab") as log:
            new = subprocess.Popen(proc["argv"], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, start_new_session=True)
        # Reaped as soon as it exits: a zombie still looks alive to `cluster down`.
        threading.Thread(target=new.wait, daemon=True).start()
        proc["pid"] = new.pid
        proc["start_time"] = wait_for(f"{name}'s start time", lambda: start_time(new.pid), 5)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)

    def restart_changed(self, name: str, change: Callable[[list[str]], None],
                        ready: bytes) -> None:
        """Stops `name`, lets `change` edit the argv `cluster up` recorded for it, starts
        it again and waits for `ready` in the part of its log written after the restart."""
        path = self.dir / "cluster.json"
        state = json.loads(path.read_text())
        change(next(p for p in state["processes"] if p["name"] == name)["argv"])
        path.write_text(json.dumps(state, indent=1))
        pid = self.pid(name)
        os.kill(pid, signal.SIGTERM)
        wait_for(f"{name} to exit", lambda: exited(pid), 60)
        offset = self.log(name).stat().st_size
        self.restart(name)
        wait_for(f"{name} to be ready again",
                 lambda: ready in self.log(name).read_bytes()[offset:], 60)

    def down(self) -> None:
        if not self.dir.exists():
            return
        proc = self.mctl("cluster", "down", "--dir", str(self.dir), timeout=180, check=False)
        if proc.returncode != 0:
            print(f"warning: cluster down: {proc.stderr.strip()}", file=sys.stderr)


# -- profiles -----------------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy next to this interpreter, if installed (`.venv/bin/pip install py-spy`)."""
    path = Path(PYTHON).parent / "py-spy"
    return str(path) if path.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def py_spy_record(pid: int, out: Path, rate: int = 200) -> Iterator[None]:
    """Samples `pid` with py-spy while the block runs.

    Only the thread holding the GIL is sampled (--gil): in these gRPC
    servers most threads wait in C most of the time, and py-spy cannot
    always tell such a wait from work; the GIL holder is the one running
    Python, so the samples show where the process's Python CPU goes.
    """
    tool = py_spy()
    if tool is None:
        print("py-spy not found; no profile (.venv/bin/pip install py-spy)", file=sys.stderr)
        yield
        return
    proc = subprocess.Popen([tool, "record", "--pid", str(pid), "--rate", str(rate), "--gil",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)   # py-spy attaches before the measured work starts
    try:
        yield
    finally:
        # py-spy writes its output on SIGINT.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Profile:
    samples: int
    self_share: dict[str, float]       # frame -> share of samples it was the leaf of
    inclusive: dict[str, float]        # frame -> share of samples it was anywhere in


def read_profile(raw: Path) -> Profile:
    """A py-spy raw profile: one line per distinct stack, `frame;frame;...;leaf COUNT`."""
    self_counts: dict[str, int] = defaultdict(int)
    incl_counts: dict[str, int] = defaultdict(int)
    total = 0
    try:
        lines = raw.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = [_short_frame(f) for f in stack.split(";")]
        self_counts[frames[-1]] += samples
        for f in set(frames):
            incl_counts[f] += samples
    share = 1 / total if total else 0.0
    return Profile(total, {f: c * share for f, c in self_counts.items()},
                   {f: c * share for f, c in incl_counts.items()})


# Frames of mctl's own code, after _short_frame: "(scheduler/api.py)" and the like.
_OWN = ("(scheduler/", "(agent/", "(common/", "(cli/", "(proto/")


def _short_frame(frame: str) -> str:
    # "reconcile_once (/work/main/scheduler/controller.py:120)" -> "... (scheduler/controller.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def print_profile(title: str, raw: Path, count: int = 12) -> None:
    """The busiest frames (self) and mctl's own functions by inclusive share."""
    p = read_profile(raw)
    if not p.samples:
        print(f"\n{title}: no samples")
        return
    print(f"\n{title} (py-spy --gil, {p.samples} samples; share of samples)")
    print("  self   where the GIL holder was")
    for frame, share in sorted(p.self_share.items(), key=lambda kv: -kv[1])[:count]:
        print(f"  {share * 100:5.1f}%  {frame}")
    print("  incl.  mctl's functions, including what they call")
    own = [(f, s) for f, s in p.inclusive.items() if f.endswith(")") and
           any(m in f for m in _OWN)]
    for frame, share in sorted(own, key=lambda kv: -kv[1])[:count]:
        print(f"  {share * 100:5.1f}%  {frame}")


# -- watching the cluster's state in etcd ---------------------------------------------------


@dataclass
class ReplicaProgress:
    """When this run saw a replica appear, get a node, and report Running (monotonic s)."""

    workload: str
    created: float
    node: str = ""
    placed: float = 0.0
    running: float = 0.0
    phase: int = 0              # types_pb2.ReplicaPhase; 0 until the first record
    wall_placed: float = 0.0    # time.time() of `placed`, to line up with log time stamps
    wall_running: float = 0.0


class ReplicaWatch:
    """Every replica's progress, from a watch on the scheduler's keys in etcd.

    The scheduler keeps each replica at `<prefix>replicas/<ns>/<name>` (see
    scheduler/store.py). Watching etcd directly times each change to the
    moment etcd announces it and adds no load to the scheduler, unlike
    polling its API. Workload keys are tracked too, for "apply landed", and
    the leader key and node heartbeats (lease-bound: deleted when they lapse).
    """

    TRACKED = ("leader", "heartbeats/")

    def __init__(self, endpoint: str, prefix: str = "/mctl/",
                 tls: tuple[str, str, str] | None = None) -> None:
        """`tls`: etcd's CA, a client certificate of it and its key (None: plain text)."""
        # Imported here: start.py and the others that never watch etcd skip their cost.
        import pyetcd
        from pyetcd.events import DeleteEvent

        from mctl.v1 import types_pb2

        self._delete_event = DeleteEvent
        self._replica = types_pb2.Replica
        self._running = types_pb2.REPLICA_PHASE_RUNNING
        host, _, port = endpoint.rpartition(":")
        self.prefix = prefix
        self.client = pyetcd.client(host=host, port=int(port), timeout=10,
                                    ca_cert=tls[0] if tls else None,
                                    cert_cert=tls[1] if tls else None,
                                    cert_key=tls[2] if tls else None)
        self.cond = threading.Condition()
        self.replicas: dict[str, ReplicaProgress] = {}
        self.gone: dict[str, float] = {}          # replica key -> when it was deleted
        # Per workload: replicas, replicas placed, replicas Running (kept up to date per
        # event, so waiting on 10,000 replicas does not rescan them all on every event).
        self.count_n: dict[str, int] = defaultdict(int)
        self.placed_n: dict[str, int] = defaultdict(int)
        self.running_n: dict[str, int] = defaultdict(int)
        self.workloads: dict[str, float] = {}     # workload key -> when last written
        # The leader key and node heartbeats: (value, when written); when deleted.
        self.keys: dict[str, tuple[bytes, float]] = {}
        self.deleted: dict[str, float] = {}
        self.last_event = 0.0
        self.error: BaseException | None = None
        resp = self.client.get_prefix_response(prefix)
        now = time.monotonic()
        for kv in resp.kvs:
            self._put(kv.key.decode(), kv.value, now)
        self._watch = self.client.add_watch_prefix_callback(
            prefix, self._on_response, start_revision=resp.header.revision + 1)

    def _put(self, key: str, value: bytes, now: float) -> None:
        rest = key[len(self.prefix):]
        if rest.startswith("workloads/"):
            self.workloads[rest] = now
            return
        if rest.startswith(self.TRACKED):
            self.keys[rest] = (value, now)
            return
        if not rest.startswith("replicas/"):
            return
        r = self._replica.FromString(value)
        p = self.replicas.get(rest)
        if p is None:
            p = self.replicas[rest] = ReplicaProgress(r.workload, now)
            self.gone.pop(rest, None)
            self.count_n[p.workload] += 1
        p.phase = r.status.phase
        if r.node and r.node != p.node:
            if not p.node:
                self.placed_n[p.workload] += 1
            if p.running:
                self.running_n[p.workload] -= 1
            p.node, p.placed, p.wall_placed = r.node, now, time.time()
            p.running = p.wall_running = 0.0
        if r.status.phase == self._running and not p.running and p.node:
            p.running, p.wall_running = now, time.time()
            self.running_n[p.workload] += 1

    def _on_response(self, response: object) -> None:
        now = time.monotonic()
        with self.cond:
            if isinstance(response, BaseException):
                self.error = response
            else:
                for event in response.events:
                    key = event.key.decode()
                    if isinstance(event, self._delete_event):
                        self._delete(key[len(self.prefix):], now)
                    else:
                        self._put(key, event.value, now)
            self.last_event = now
            self.cond.notify_all()

    def _delete(self, rest: str, now: float) -> None:
        p = self.replicas.pop(rest, None)
        if p is not None:
            self.gone[rest] = now
            self.count_n[p.workload] -= 1
            self.placed_n[p.workload] -= bool(p.node)
            self.running_n[p.workload] -= bool(p.running)
        self.workloads.pop(rest, None)
        if self.keys.pop(rest, None) is not None:
            self.deleted[rest] = now

    def of(self, workload: str) -> list[ReplicaProgress]:
        return [p for p in self.replicas.values() if p.workload == workload]

    def wait(self, what: str, predicate: Callable[[ReplicaWatch], bool],
             timeout: float) -> float:
        """Waits until `predicate(self)` holds; returns when (the event that made it so)."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.error is not None or predicate(self),
                                      timeout):
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            if self.error is not None:
                raise RuntimeError(f"etcd watch failed: {self.error}")
            return self.last_event

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.cancel_watch(self._watch)
        self.client.close()


def running_count(watch: ReplicaWatch, workload: str) -> int:
    return watch.running_n[workload]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class AgentProcesses:
    """An agent, its zygote and the monitors the zygote forked (one per container)."""

    agent: int
    zygote: int
    monitors: list[int]


def agent_processes(agent_pid: int) -> AgentProcesses:
    zygotes = [p for p in children_of(agent_pid) if "runtime.zygote" in cmdline(p)]
    zygote = zygotes[0] if zygotes else 0
    return AgentProcesses(agent_pid, zygote, children_of(zygote) if zygote else [])


# pyproject.toml's package-dir: where each mctl sub-package lives in a checkout.
LAYOUT = {"v1": "proto/mctl/v1", "common": "common", "scheduler": "scheduler",
          "agent": "agent", "cli": "cli"}


def tree_layout(base: Path, tree: Path) -> Path:
    """A directory whose `mctl` namespace is the checkout `tree`, for PYTHONPATH."""
    top = base / "mctl"
    top.mkdir(parents=True)
    for package, folder in LAYOUT.items():
        (top / package).symlink_to(tree / folder)
    return base
