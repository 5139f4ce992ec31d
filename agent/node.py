"""The agent's control loop: make this node's containers match the desired set.

The scheduler sends the node's whole desired set (SetDesired); a single loop
thread compares it with the containers (reconcile.plan) and acts. Making
and starting a container takes milliseconds, mostly spent in the kernel
(mounts, namespaces, veths) and in the monitor the zygote forks, so
independent replicas are made and started concurrently on a bounded pool
(`--max-parallel-starts`); a replica in flight is left out of the next
passes' plans until its start has finished, so none is started twice.
Stopping can take a grace period, so each stop runs on its own thread while
the container is marked busy and the loop leaves it alone. After every pass
the loop builds the node's status report and hands it to the reporter when
it changed.
Every pass also starts with the self-check (selfcheck.py): what the agent
owns in the kernel (routes, bridge, nft tables, veths, cgroups, mounts) is
compared with what it should be and repaired, so drift made by anyone
else is undone within a resync, or at once after a kernel notification.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from mctl.common import imageref, metrics, registryauth
from mctl.common.phases import reason_name
from mctl.v1 import agent_pb2, node_pb2, types_pb2

from . import reconcile
from .containers import Container, ContainerError, ContainerManager, container_id
from .drift import DROPPED
from .images.pull import Progress, Puller, image_of, is_pulled
from .network import PeerNode
from .runtime.state import Exit
from .selfcheck import SelfCheck
from .services_sync import NodeServices
from .usage import UsageSampler
from .volumes import Sources

log = logging.getLogger(__name__)

RESYNC_SECONDS = 1.0
# While starts are in flight, their ends wake the loop (to report them) at most this often.
FLIGHT_WAKE_SECONDS = 0.25
# A pull in flight is reported at most this often (each change of its
# progress is a status write on the scheduler).
PULL_REPORT_SECONDS = 3.0
# The image digests a node reports (scheduler/imagescore.py's MAX_NODE_IMAGES).
MAX_REPORTED_IMAGES = 256


# Each start in flight is a pool thread and a monitor mid-setup: a bound
# far above what helps (bench/apply.py) keeps a typo from forking hundreds.
MAX_PARALLEL_STARTS = 64


def default_parallel_starts() -> int:
    """Starts in flight at once on a node, unless --max-parallel-starts says: twice its CPUs.

    A start mostly waits on the kernel (mounts, namespaces, veths) and on
    its monitor, another process, so two per CPU keep the CPUs busy; beyond
    that they only queue for the same CPUs (docs/parallel-starts.md has the
    figures). At least 2, at most MAX_PARALLEL_STARTS.
    """
    return min(MAX_PARALLEL_STARTS, max(2, 2 * len(os.sched_getaffinity(0))))


def now_ms() -> int:
    return int(time.time() * 1000)


def policy_code(ex: Exit) -> int:
    """The exit code the restart policy reads: its own, unless the agent stopped it for its
    disk use, which is a failure even if it exited 0 on the TERM (as an evicted pod fails)."""
    return ex.exit_code or (1 if ex.disk_limit else 0)


def exit_reason(ex: Exit) -> tuple[types_pb2.ReplicaReason, str]:
    """Why a container ended, as (reason, detail), from what its monitor recorded."""
    code = ex.exit_code
    if ex.disk_limit:
        return types_pb2.REPLICA_REASON_DISK_LIMIT, ex.disk_limit
    if ex.unhealthy:
        return types_pb2.REPLICA_REASON_UNHEALTHY, f"{ex.unhealthy} (exit code {code})"
    reason = (types_pb2.REPLICA_REASON_OOM_KILLED if ex.oom_killed else
              types_pb2.REPLICA_REASON_START_ERROR if ex.start_error else
              types_pb2.REPLICA_REASON_MONITOR_LOST if ex.lost else
              types_pb2.REPLICA_REASON_COMPLETED if code == 0 else
              types_pb2.REPLICA_REASON_ERROR)
    return reason, ex.start_error or f"exit code {code}"


class NodeLoop:
    def __init__(self, manager: ContainerManager, sampler: UsageSampler,
                 report: Callable[[node_pb2.StatusReport], None], node: str,
                 stop_grace: float, max_parallel_starts: int = 0) -> None:
        self.manager = manager
        self.sampler = sampler
        self.report = report
        self.node = node
        self.stop_grace = stop_grace
        self._desired: dict[str, types_pb2.Replica] = {}
        self._desired_revision = -1
        self._received_desired = False
        self._create_errors: dict[str, tuple[str, int]] = {}  # id -> (message, retry at ms)
        # Containers being made or started on the pool, by id, with their
        # replica: no pass plans them until that ends, and reports show them
        # Starting meanwhile. The lock guards _create_errors too (the pool
        # writes it).
        self._in_flight: dict[str, types_pb2.Replica] = {}
        self._flight_lock = threading.Lock()
        self._flight_woken = 0.0     # monotonic time a finished start last woke the loop
        self.max_parallel_starts = max_parallel_starts or default_parallel_starts()
        self._starts = ThreadPoolExecutor(self.max_parallel_starts, thread_name_prefix="start")
        # id -> (pull failed, message): replicas waiting for their image.
        self._pull_waits: dict[str, tuple[bool, str]] = {}
        # Pulls images from registries (images/pull.py); None: imported images only.
        self.puller: Puller | None = None
        # ref -> (time quantum, progress): what the last report said of a pull in flight.
        self._pull_shown: dict[str, tuple[int, Progress]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_report: bytes = b""
        # The network as the scheduler last described it (set_network).
        self._nodes: tuple[PeerNode, ...] | None = None
        self._routed: tuple[PeerNode, ...] | None = None
        # (namespace, workload) -> its peer list as last written to /etc/hosts files.
        self._hosts_lists: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        self._peers: dict[tuple[str, str], list[tuple[str, str]]] = {}
        # Services (the nft table, the DNS responder) as the desired set says.
        self.services = NodeServices(manager)
        self.selfcheck = SelfCheck(manager, self.wake, more_nft=self.services.repair)
        # Whether a container passes its readiness check (health.py sets it).
        self.ready_of: Callable[[Container], bool] = lambda _c: True

    # -- input ---------------------------------------------------------------

    def set_desired(self, revision: int, replicas: list[types_pb2.Replica],
                    configs: Iterable[types_pb2.Config] = (),
                    secrets: Iterable[types_pb2.Secret] = ()) -> bool:
        """Takes a new desired set unless it is older than the one we have.

        `configs` and `secrets` are those its replicas use, read when a
        container is made (env valueFrom, config and secret volumes); a
        change of their data comes as new replicas (a roll), so running
        containers are left as they are.
        """
        if revision < self._desired_revision:
            log.info("dropping stale desired set revision=%d < %d", revision,
                     self._desired_revision)
            return False
        # Before the replicas that need them.
        self.manager.sources = Sources.of(configs, secrets)
        self._desired = {container_id(r.metadata.namespace, r.metadata.name): r
                         for r in replicas}
        self._desired_revision = revision
        self._received_desired = True
        self._wake.set()
        return True

    def set_network(self, nodes: list[agent_pb2.NodeRoute],
                    peers: list[agent_pb2.ReplicaAddress]) -> None:
        """Takes the other nodes' subnets and the addresses of this node's workloads' replicas."""
        by_workload: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for p in peers:
            by_workload.setdefault((p.namespace, p.workload), []).append((p.name, p.ip))
        self._nodes = tuple(PeerNode(n.name, n.address, n.pod_subnet) for n in nodes)
        self._peers = by_workload
        self._wake.set()

    def set_services(self, services: list[agent_pb2.Service]) -> None:
        """Takes every service of the cluster with its endpoints (from the desired set)."""
        self.services.set(services)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def wanted_images(self) -> set[str]:
        """The images of the replicas this node should run (kept by image GC, as those in use)."""
        return {imageref.normalize_reference(image_of(r)) for r in self._desired.values()}

    # -- the loop -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-loop", daemon=True)
        self._thread.start()
        self.selfcheck.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        # Starts already running finish (each takes milliseconds); queued ones are dropped.
        self._starts.shutdown(wait=True, cancel_futures=True)
        self.selfcheck.close()
        self.services.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(RESYNC_SECONDS)
            self._wake.clear()
            try:
                self.reconcile_once()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("reconcile pass failed")

    def _observed(self) -> dict[str, reconcile.Have]:
        out = {}
        for c in self.manager.snapshot():
            self.manager.refresh(c)
            ex = c.exit
            out[c.id] = reconcile.Have(
                uid=c.replica.metadata.uid, spec_hash=c.replica.spec_hash,
                busy=c.busy or bool(c.unhealthy) or bool(c.disk_limit),
                exited=ex is not None, exit_code=policy_code(ex) if ex is not None else 0,
                finished_ms=ex.finished_unix_ms if ex is not None else 0,
                started_ms=c.started_ms,
                restarts=c.restarts)
        return out

    def reconcile_once(self) -> None:
        # Containers being stopped are left out: their teardown removes
        # their veth, which must not be mistaken for drift. So are those
        # being made or started: their cgroup and mounts are half made.
        in_flight = self.in_flight()
        self.selfcheck.run((c for c in self.manager.snapshot()
                            if not c.busy and c.id not in in_flight), starting=bool(in_flight))
        # Until the scheduler has told us what to run, adopted containers are
        # kept: removing them on a restart before the first desired set would
        # restart every replica of the node.
        if not self._received_desired or not self.manager.network_ready():
            self._send_report()
            return
        desired = self._desired
        want = {cid: reconcile.Want(r.metadata.uid, r.spec_hash, r.spec.restart_policy)
                for cid, r in desired.items()}
        now = now_ms()
        in_flight = self.in_flight()
        for action in reconcile.plan(want, self._observed(), now):
            if action.id in in_flight:
                continue    # planned again once its start has finished
            container = self.manager.containers.get(action.id)
            if action.do is reconcile.Do.CREATE:
                self._create(desired[action.id], now)
            elif action.do is reconcile.Do.RESTART and container is not None:
                self._dispatch(action.id, container.replica,
                               functools.partial(self._restart, container))
            elif container is not None:
                self._stop_in_background(container)
        with self._flight_lock:
            self._create_errors = {k: v for k, v in self._create_errors.items() if k in desired}
        self._pull_waits = {k: v for k, v in self._pull_waits.items() if k in desired}
        if self.puller is not None:
            self.puller.retain(image_of(r) for r in desired.values())
        self._sync_network()
        self.services.sync()
        self._send_report()

    def _sync_network(self) -> None:
        """Routes to the other nodes, and every container's /etc/hosts, as last told."""
        network = self.manager.network
        if network is None or not network.ready:
            return
        nodes = self._nodes
        if nodes is not None and nodes != self._routed:
            try:
                network.sync_routes(nodes)
                self._routed = nodes
            except Exception:  # noqa: BLE001 - retried on the next pass
                log.exception("routes to other nodes not updated")
        in_flight = self.in_flight()     # a restart may be renewing their etc/ files
        containers = [c for c in self.manager.snapshot()
                      if c.network is not None and not c.busy and c.id not in in_flight]
        # Local replicas' addresses are known here first; the scheduler's
        # view of the others arrives with the next desired set.
        local: dict[tuple[str, str], dict[str, str]] = {}
        for c in containers:
            key = (c.replica.metadata.namespace, c.replica.workload)
            local.setdefault(key, {})[c.replica.metadata.name] = c.ip
        # One peer list per workload, and the same tuple object as last pass
        # while it is unchanged: then update_hosts skips each container at
        # once instead of re-rendering n hosts files of n lines every second.
        lists: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        for key, mine in local.items():
            peers = dict(self._peers.get(key, []))
            peers.update(mine)
            items = tuple(sorted(peers.items()))
            previous = self._hosts_lists.get(key)
            lists[key] = previous if previous == items else items
        self._hosts_lists = lists
        # One line per workload and pass: while a workload's replicas start,
        # each pass rewrites the hosts file of every replica so far; a line
        # for each made ~40 lines per node for an apply of 30 (0.25 ms each).
        updated: dict[tuple[str, str], int] = {}
        for c in containers:
            key = (c.replica.metadata.namespace, c.replica.workload)
            try:
                if self.manager.update_hosts(c, lists[key]):
                    updated[key] = updated.get(key, 0) + 1
            except OSError as e:
                log.warning("container=%s /etc/hosts not updated: %s", c.id, e)
        for (namespace, workload), count in updated.items():
            log.info("workload=%s/%s /etc/hosts of %d containers here lists %d peers",
                     namespace, workload, count, len(lists[(namespace, workload)]) - 1)

    def _dispatch(self, cid: str, replica: types_pb2.Replica, work: Callable[[], None]) -> None:
        """Runs `work` (a make or start of container `cid`) on the start pool.

        `cid` is in flight from now until `work` has ended, so later passes
        leave it alone; then the loop is woken to report it and plan again.
        """
        with self._flight_lock:
            self._in_flight[cid] = replica

        def run() -> None:
            try:
                work()
            except Exception:  # noqa: BLE001 - one replica's bug must not end the pool
                log.exception("starting container=%s failed", cid)
            finally:
                now = time.monotonic()
                with self._flight_lock:
                    self._in_flight.pop(cid, None)
                    # A pass (and a status report of every replica, which the
                    # scheduler writes) per finished start cost more than the
                    # starts of 100 replicas: the loop is woken when the pool
                    # runs dry, or at most every FLIGHT_WAKE_SECONDS meanwhile.
                    wake = (not self._in_flight
                            or now - self._flight_woken >= FLIGHT_WAKE_SECONDS)
                    if wake:
                        self._flight_woken = now
                if wake:
                    self._wake.set()

        try:
            self._starts.submit(run)
        except RuntimeError:     # the pool is shut down: the agent is stopping
            with self._flight_lock:
                self._in_flight.pop(cid, None)

    def in_flight(self) -> set[str]:
        """The containers being made or started now."""
        with self._flight_lock:
            return set(self._in_flight)

    def _create(self, replica: types_pb2.Replica, now: int) -> None:
        """Makes and starts `replica` on the pool once its image is here (else it waits)."""
        cid = container_id(replica.metadata.namespace, replica.metadata.name)
        with self._flight_lock:
            error = self._create_errors.get(cid)
        if error is not None and now < error[1]:
            return
        if self.puller is not None:
            # The pull runs in the background; the replica waits, Pending, until
            # its image is in the store (then on_change wakes this loop).
            try:
                auth = self._pull_auth(replica)
            except registryauth.AuthError as e:
                self._pull_waits[cid] = (True, f"imagePullSecret {replica.spec.image_pull_secret}: "
                                               f"{e}")
                return
            wait = self.puller.wait_for(image_of(replica), auth)
            if wait is not None:
                self._pull_waits[cid] = wait
                return
            self._pull_waits.pop(cid, None)
        self._dispatch(cid, replica, functools.partial(self._make, replica))

    def _make(self, replica: types_pb2.Replica) -> None:
        """Makes the container of `replica` and starts it (on the pool)."""
        cid = container_id(replica.metadata.namespace, replica.metadata.name)
        wanted = self._desired.get(cid)
        if wanted is None or wanted.metadata.uid != replica.metadata.uid:
            return     # no longer desired while it waited for a free slot
        try:
            # Not while `image rm` or image GC decides that its image is
            # unused; other containers are made meanwhile (userslock.py).
            with self.manager.images.users_lock.shared():
                container = self.manager.create(replica)
        except ContainerError as e:
            log.warning("cannot create container=%s: %s", cid, e)
            with self._flight_lock:
                self._create_errors[cid] = (str(e), now_ms() + 5_000)
            return
        with self._flight_lock:
            self._create_errors.pop(cid, None)
        self.manager.images.touch(image_of(replica))   # image GC removes the least recent
        self._start(container)

    def _pull_auth(self, replica: types_pb2.Replica) -> bytes | None:
        """The auth.json the replica's imagePullSecret gives (None: the node's default).

        The Secret comes with the desired set, as those of env and volumes do.
        """
        name = replica.spec.image_pull_secret
        ref = image_of(replica)
        if not name or not is_pulled(ref):
            return None
        ns = replica.metadata.namespace or "default"
        secret = self.manager.sources.secrets.get((ns, name))
        if secret is None:
            raise registryauth.AuthError(f"secret {name!r} not found in namespace {ns!r}")
        return registryauth.auth_json(secret.data, imageref.registry_of(ref) or "")

    def _pull_progress(self, replica: types_pb2.Replica,
                       status: types_pb2.ReplicaStatus) -> None:
        """Sets the status's image_pull from the puller, a pull in flight every few seconds."""
        if self.puller is None or not is_pulled(replica.spec.image):
            return
        ref = imageref.normalize_reference(image_of(replica))
        progress = self.puller.progress(ref)
        if progress is None:
            return
        if not progress.done:
            quantum = progress.elapsed_ms // int(PULL_REPORT_SECONDS * 1000)
            shown = self._pull_shown.get(ref)
            if shown is not None and shown[0] == quantum:
                progress = shown[1]
            else:
                self._pull_shown[ref] = (quantum, progress)
        status.image_pull.done = progress.done
        status.image_pull.bytes = progress.bytes
        status.image_pull.total_bytes = progress.total
        status.image_pull.elapsed_ms = progress.elapsed_ms

    def _start(self, container: Container) -> None:
        try:
            self.manager.start(container)
            container.last_error = ""
        except ContainerError as e:
            # A failed start counts as an exit: the restart policy and its
            # back-off apply, and the reason reaches the user.
            log.warning("container=%s failed to start: %s", container.id, e)
            container.last_error = str(e)
            container.exit = Exit.start_failed(str(e))
            container.started_ms = container.started_ms or now_ms()

    def _restart(self, container: Container) -> None:
        log.info("restarting container=%s restarts=%d", container.id, container.restarts + 1)
        if container.exit is not None:
            reason, detail = exit_reason(container.exit)
            container.last_exit = f"{reason_name(reason)}: {detail}"
            metrics.inc("container_restarts_total", reason=reason_name(reason) or "Exited")
        self.manager.reset(container)
        self._start(container)

    def _stop_in_background(self, container: Container) -> None:
        container.busy = True

        def stop() -> None:
            try:
                self.manager.stop(container, self.stop_grace)
                self.manager.teardown(container)
            except Exception:  # noqa: BLE001 - logged; the next pass retries
                log.exception("removing container=%s failed", container.id)
                container.busy = False
            self._wake.set()

        threading.Thread(target=stop, name=f"stop-{container.id}", daemon=True).start()

    # -- status -----------------------------------------------------------------

    def status_of(self, c: Container, now: int) -> types_pb2.ReplicaStatus:
        st = types_pb2.ReplicaStatus(restarts=c.restarts, started_unix_ms=c.started_ms,
                                     ip=c.ip, last_exit=c.last_exit)
        if c.busy:
            st.phase = types_pb2.REPLICA_PHASE_TERMINATING
        elif c.unhealthy:
            st.phase = types_pb2.REPLICA_PHASE_RUNNING
            st.reason = types_pb2.REPLICA_REASON_UNHEALTHY
            st.message = f"stopping to restart: {c.unhealthy}"
        elif c.disk_limit:
            st.phase = types_pb2.REPLICA_PHASE_RUNNING
            st.reason = types_pb2.REPLICA_REASON_DISK_LIMIT
            st.message = f"stopping: {c.disk_limit}"
        elif c.exit is None:
            st.phase = (types_pb2.REPLICA_PHASE_RUNNING if c.monitor_pid
                        else types_pb2.REPLICA_PHASE_STARTING)
            # Only a running container that is not being stopped may take
            # service traffic, and only while it passes its readiness check.
            st.ready = st.phase == types_pb2.REPLICA_PHASE_RUNNING and self.ready_of(c)
        else:
            ex = c.exit
            code = policy_code(ex)
            st.exit_code = ex.exit_code
            st.finished_unix_ms = ex.finished_unix_ms
            reason, detail = exit_reason(ex)
            policy = c.replica.spec.restart_policy
            if reconcile.should_restart(policy, code):
                have = reconcile.Have(c.replica.metadata.uid, c.replica.spec_hash, False, True,
                                      code, st.finished_unix_ms, c.started_ms, c.restarts)
                wait_s = max(0, reconcile.restart_due_ms(have) - now) / 1000
                st.phase = types_pb2.REPLICA_PHASE_STARTING
                st.reason = types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF
                st.message = f"{reason_name(reason)}: {detail}; restarting in {wait_s:.0f}s"
            else:
                st.phase = (types_pb2.REPLICA_PHASE_SUCCEEDED if code == 0
                            else types_pb2.REPLICA_PHASE_FAILED)
                st.reason = reason
                st.message = detail
        return st

    def build_report(self) -> node_pb2.StatusReport:
        now = now_ms()
        report = node_pb2.StatusReport(node=self.node, complete=True)
        report.image_digests.extend(self.manager.images.pinned_digests(MAX_REPORTED_IMAGES))
        seen = set()
        with self._flight_lock:
            create_errors = dict(self._create_errors)
            in_flight = dict(self._in_flight)
        for c in self.manager.snapshot():
            if (c.id in in_flight and not c.started_ms and c.exit is None
                    and not c.restarts and not c.last_exit):
                # Made but its first start not ended: plain Starting, as
                # below, until it runs. Its address, known since the
                # attach, waits for that: it was one more write to etcd
                # per replica (and a push of its workload's peer lists)
                # in the middle of an apply.
                continue
            seen.add(c.id)
            r = report.replicas.add(namespace=c.replica.metadata.namespace,
                                    name=c.replica.metadata.name, uid=c.replica.metadata.uid,
                                    spec_hash=c.replica.spec_hash)
            r.status.CopyFrom(self.status_of(c, now))
            self._pull_progress(c.replica, r.status)
            usage = self.sampler.latest(c.id)
            if usage is not None:
                r.usage.CopyFrom(usage)
        for (namespace, name), used in sorted(self.manager.volumes.latest_usage().items()):
            report.volumes.add(namespace=namespace, name=name, used_bytes=used)
        for cid, flying in in_flight.items():
            # Queued or being made: Starting, as a kubelet's ContainerCreating.
            # Absent, a replica being deleted would count as removed while
            # its container may still be made (scheduler/status.py).
            if cid in seen:
                continue
            seen.add(cid)
            r = report.replicas.add(namespace=flying.metadata.namespace,
                                    name=flying.metadata.name, uid=flying.metadata.uid,
                                    spec_hash=flying.spec_hash)
            r.status.phase = types_pb2.REPLICA_PHASE_STARTING
        for cid, (message, _) in create_errors.items():
            replica = self._desired.get(cid)
            if replica is None or cid in seen:
                continue
            r = report.replicas.add(namespace=replica.metadata.namespace,
                                    name=replica.metadata.name, uid=replica.metadata.uid,
                                    spec_hash=replica.spec_hash)
            r.status.phase = types_pb2.REPLICA_PHASE_PENDING
            r.status.reason = types_pb2.REPLICA_REASON_CREATE_ERROR
            r.status.message = message
        for cid, (failed, message) in self._pull_waits.items():
            replica = self._desired.get(cid)
            if replica is None or cid in seen or cid in create_errors:
                continue
            r = report.replicas.add(namespace=replica.metadata.namespace,
                                    name=replica.metadata.name, uid=replica.metadata.uid,
                                    spec_hash=replica.spec_hash)
            r.status.phase = types_pb2.REPLICA_PHASE_PENDING
            if failed:
                r.status.reason = types_pb2.REPLICA_REASON_IMAGE_PULL_ERROR
            else:
                self._pull_progress(replica, r.status)
            r.status.message = message
        wanted = {imageref.normalize_reference(image_of(r)) for r in self._desired.values()}
        self._pull_shown = {k: v for k, v in self._pull_shown.items() if k in wanted}
        return report

    def _send_report(self) -> None:
        report = self.build_report()
        raw = report.SerializeToString(deterministic=True)
        # Incidents (drift repaired) ride on the report; an unchanged status
        # with incidents waiting is still worth sending.
        incidents = self.selfcheck.incidents.peek()
        if raw == self._last_report and not incidents:
            return
        for type_, reason, message, times, unix_ms in incidents:
            report.events.add(kind="Node", name=self.node, type=type_, reason=reason,
                              message=message if times == 1 or reason == DROPPED
                              else f"{message} (x{times})",
                              unix_ms=unix_ms, source=f"node/{self.node}")
        try:
            self.report(report)
            self._last_report = raw
            self.selfcheck.incidents.delivered(incidents)
        except Exception as e:  # noqa: BLE001 - retried on the next pass
            log.warning("status report not delivered: %s", e)

    def force_report(self) -> None:
        """The next pass reports even if nothing changed (e.g. after re-registering)."""
        self._last_report = b""
        self._wake.set()
