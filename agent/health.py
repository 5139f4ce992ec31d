"""Health checks: restart a running container that stops answering; track which are ready.

Two kinds of check, with one shape and one code path (as the kubelet's
liveness and readiness probes):

- `healthCheck` (liveness): failing it restarts the container;
- `readiness`: failing it takes the replica out of its service's rotation
  (the agent reports ReplicaStatus.ready; the scheduler sends every node
  the new endpoints), passing it again puts it back. A container without
  one is ready while running; one with it is not ready until it passes,
  and its first check runs at once (not one period later), so a new
  replica joins the rotation as soon as it answers.


A check is either `exec` (a command run inside the
container, through runtime/nsexec.py: healthy when it exits 0) or `tcpPort`
(healthy when the port accepts a connection on the container's address).
The first liveness check runs one period after the container started; after
`failureThreshold` failures in a row the container is stopped (TERM, grace,
KILL) with the reason recorded in its exit, and the node loop restarts it
under its restartPolicy and back-off, as the kubelet does for a failed
liveness probe. The reason shows as `Unhealthy` while it waits, and as the
replica's last exit after the restart. After `failureThreshold` failed
readiness checks in a row the replica is not ready; one success makes it
ready again.

Probes run on a small thread pool, so a hanging probe delays nothing else;
each has a timeout (a probe that times out has failed).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

from mctl.v1 import types_pb2

from .containers import Container, ContainerManager
from .execution import nsexec_argv

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
DEFAULT_PERIOD = 10
DEFAULT_THRESHOLD = 3
LIVENESS = "liveness"
READINESS = "readiness"


@dataclass
class ProbeState:
    started_ms: int
    next_due_ms: int
    failures: int = 0
    running: bool = False      # a probe of it is in flight
    passed: bool = False       # readiness: the last checks leave it ready


def probe_timeout(period: int) -> float:
    # Generous against a busy node (a Python start for exec probes), never
    # longer than the period.
    return float(min(max(period, 3), 10))


def check_of(container: Container, kind: str) -> types_pb2.HealthCheck | None:
    """The container's check of `kind` (LIVENESS or READINESS), None if it has none."""
    spec = container.replica.spec
    field = "health_check" if kind == LIVENESS else "readiness"
    return getattr(spec, field) if spec.HasField(field) else None


def run_probe(container: Container, check: types_pb2.HealthCheck) -> str:
    """Runs `check` against the container once; "" when it passes, else why not."""
    timeout = probe_timeout(check.period_seconds or DEFAULT_PERIOD)
    if check.exec:
        try:
            proc = subprocess.run(nsexec_argv(container.init_pid, container.bundle,
                                              list(check.exec)),
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{' '.join(check.exec)} timed out after {timeout:.0f}s"
        if proc.returncode == 0:
            return ""
        said = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        return f"{' '.join(check.exec)} exited {proc.returncode}" + (
            f": {said[-1][:200]}" if said else "")
    host = container.ip or "127.0.0.1"
    try:
        with socket.create_connection((host, check.tcp_port), timeout=timeout):
            return ""
    except OSError as e:
        return f"tcp {host}:{check.tcp_port}: {e.strerror or e}"


class HealthChecker:
    def __init__(self, manager: ContainerManager, stop_grace: float,
                 on_change: Callable[[], None],
                 probe: Callable[[Container, types_pb2.HealthCheck], str] = run_probe,
                 pool: futures.Executor | None = None) -> None:
        self.manager = manager
        self.stop_grace = stop_grace
        self.on_change = on_change
        self.probe = probe
        self._states: dict[tuple[str, str], ProbeState] = {}   # (kind, container id)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = pool or futures.ThreadPoolExecutor(max_workers=4,
                                                        thread_name_prefix="probe")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def ready(self, c: Container) -> bool:
        """Whether `c` passes its readiness check (True without one; running is not checked)."""
        if check_of(c, READINESS) is None:
            return True
        with self._lock:
            st = self._states.get((READINESS, c.id))
            return st is not None and st.started_ms == c.started_ms and st.passed

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick(int(time.time() * 1000))
            except Exception:  # noqa: BLE001 - the checker must outlive one bad tick
                log.exception("health tick failed")

    def tick(self, now: int) -> None:
        """Starts the probes that are due; forgets containers that are gone."""
        seen = set()
        for c in self.manager.snapshot():
            if c.busy or c.unhealthy or not c.running():
                continue
            for kind in (LIVENESS, READINESS):
                check = check_of(c, kind)
                if check is None:
                    continue
                key = (kind, c.id)
                seen.add(key)
                period_ms = (check.period_seconds or DEFAULT_PERIOD) * 1000
                with self._lock:
                    st = self._states.get(key)
                    if st is None or st.started_ms != c.started_ms:   # new, or restarted
                        # Liveness gives a starting container one period;
                        # readiness asks at once, so it joins the rotation soon.
                        first = c.started_ms + (period_ms if kind == LIVENESS else 0)
                        st = ProbeState(c.started_ms, first)
                        self._states[key] = st
                    if st.running or now < st.next_due_ms:
                        continue
                    st.running = True
                    st.next_due_ms = now + period_ms
                self._pool.submit(self._check, c, kind, check, st)
        with self._lock:
            for key in set(self._states) - seen:
                if not self._states[key].running:
                    del self._states[key]

    def _check(self, c: Container, kind: str, check: types_pb2.HealthCheck,
               st: ProbeState) -> None:
        try:
            problem = self.probe(c, check)
        except Exception as e:  # noqa: BLE001 - a probe that breaks has failed
            problem = f"probe error: {e}"
        threshold = check.failure_threshold or DEFAULT_THRESHOLD
        with self._lock:
            st.running = False
            if st.started_ms != c.started_ms:
                return          # it restarted meanwhile; this result is stale
            st.failures = 0 if not problem else st.failures + 1
            failures = st.failures
            was = st.passed
            if not problem:
                st.passed = True
            elif failures >= threshold:
                st.passed = False
            changed = st.passed != was
        if kind == READINESS:
            if changed:
                log.info("container=%s %s", c.id, "ready" if st.passed else
                         f"not ready after {failures} failed readiness checks: {problem}")
                self.on_change()
            elif problem:
                log.info("container=%s readiness check failed (%d/%d): %s", c.id, failures,
                         threshold, problem)
            return
        if not problem:
            return
        log.warning("container=%s health check failed (%d/%d): %s", c.id, failures,
                    threshold, problem)
        if failures >= threshold:
            self._kill(c, f"health check failed {failures} times: {problem}")

    def _kill(self, c: Container, why: str) -> None:
        if c.busy or c.unhealthy or c.disk_limit:
            return      # being removed, or already being stopped
        log.warning("container=%s unhealthy, stopping it: %s", c.id, why)
        # Not `busy`: that means "being removed", which the scheduler would
        # see as Terminating and replace; this replica stays and restarts.
        c.unhealthy = why
        try:
            self.manager.stop(c, self.stop_grace)
            if c.exit is not None:
                c.exit = c.exit.replace(unhealthy=why)
        finally:
            c.unhealthy = ""
            self.on_change()
