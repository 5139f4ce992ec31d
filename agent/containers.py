"""The node's containers: replicas turned into OCI bundles, run, stopped and removed.

A replica becomes a container named `<namespace>_<replica>` (an underscore
cannot occur in a DNS label, so the id is unambiguous) whose bundle lives in
`<state>/containers/<id>/`:

    config.json    what the runtime realizes (bundle/config.py); a symlink to
                   secrets/config.json when the replica uses a Secret (volumes.py)
    replica.pb     the replica as the scheduler sent it (for adoption)
    meta.json      restarts so far (none while absent); after a stop for
                   its disk use, why (and that the next start renews the
                   writable layer)
    rootfs/        overlay mount of the image's layers + upper/ + work/
    lower/         with a user namespace: idmapped mounts of the layers,
                   0..N-1 top first, which the overlay stacks (bundle/rootfs.py)
    etc/           hostname, hosts, resolv.conf bound into the container
    scratch/, volumes/, secrets/
                   the sources of its volumes' mounts (volumes.py)
    network.json   its network namespace, veth, address, hostPorts (network.py)
                   (and, with a user namespace, a host id range: idranges.py)
    state.json     written by the monitor once the container runs
    exit.json      written by the monitor when it exits (both: runtime/state.py)
    container.log  stdout and stderr, CRI log format
    previous.log   the same of the run before the latest restart (previouslog.py)

Everything the agent knows about a container can be rebuilt from this
directory, which is how a restarted agent adopts containers that kept running.
Teardown is idempotent and safe after a half-finished setup: each step
checks what exists and removes only that.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

from mctl.common import fsflags, metrics
from mctl.common.procfs import start_time as process_start_time
from mctl.v1 import types_pb2

from . import diskusage, hosts, previouslog
from . import volumes as vols
from .bundle import config as bundle_config
from .bundle import rootfs as bundle_rootfs
from .idranges import IdRange, IdRangeError, IdRanges
from .images.pull import image_of
from .images.store import ImageError, ImageStore
from .ipam import gateway_of, parse_subnet
from .network import Attachment, NetworkError, NodeNetwork
from .runtime import syscalls as sc
from .runtime.api import Runtime, StartError
from .runtime.cgroups.base import CgroupDriver, CgroupError
from .runtime.oci import config as oci
from .runtime.state import EXIT_FILE, LOG_FILE, STATE_FILE, Exit

log = logging.getLogger(__name__)

REPLICA_FILE = "replica.pb"
META_FILE = "meta.json"


class ContainerError(Exception):
    """A container could not be created or started; the message is for the user."""


@dataclass
class Container:
    id: str
    bundle: str
    replica: types_pb2.Replica
    cgroup: str
    restarts: int = 0
    monitor_pid: int = 0
    init_pid: int = 0
    # The monitor's (pid, /proc start time) from state.json, read once per
    # run: refresh checks it every pass (node.py) and the file never changes.
    monitor_identity: tuple[int, int] | None = None
    started_ms: int = 0
    # Set while a stop runs in the background, so the reconciler leaves it alone.
    busy: bool = False
    exit: Exit | None = None
    last_error: str = ""
    last_exit: str = ""              # why it ended before its latest restart
    unhealthy: str = ""              # why, while a failed health check stops it
    disk_limit: str = ""             # why, while it is stopped for its disk use (disklimit.py)
    # Its next start begins from an empty writable layer (after a DiskLimit stop).
    renew_rootfs: bool = False
    next_restart_ms: int = 0
    # Its share of the node network; None without one (loopback only).
    network: Attachment | None = None
    hosts_text: str = ""             # what etc/hosts holds, to rewrite only on change
    # The peer list that text was rendered from (compared by identity: node.py).
    hosts_peers: tuple[tuple[str, str], ...] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> tuple[str, str]:
        return self.replica.metadata.namespace, self.replica.metadata.name

    def running(self) -> bool:
        return self.exit is None and self.monitor_pid > 0

    @property
    def ip(self) -> str:
        return self.network.ip if self.network is not None else ""


def container_id(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def _read_json(path: str) -> dict[str, object] | None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _restarts(meta: dict[str, object]) -> int:
    """meta.json's restart count; 0 if it has none (a bundle of an older agent)."""
    value = meta.get("restarts", 0)
    return value if isinstance(value, int) else 0


def _meta(container: Container) -> dict[str, object]:
    """meta.json for `container`: what its bundle cannot tell once the agent restarts."""
    doc: dict[str, object] = {"restarts": container.restarts}
    if container.renew_rootfs:
        doc["renew_rootfs"] = True
    return doc


# A bundle directory: search (x) for others, nothing else (see create).
BUNDLE_MODE = 0o711


def _write_json(path: str, doc: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def pid_alive(pid: int, start_time: int) -> bool:
    """Whether `pid` is still the process that had `start_time` (pids are reused)."""
    return pid > 0 and process_start_time(pid) == start_time != 0


class ContainerManager:
    def __init__(
        self,
        state_dir: str,
        node: str,
        images: ImageStore,
        cgroups: CgroupDriver,
        runtime: Runtime,
        cgroup_parent: str,
        sys: sc.Syscalls | None = None,
        network: NodeNetwork | None = None,
        id_ranges: IdRanges | None = None,
        default_disk_limit: int = diskusage.DEFAULT_LIMIT_BYTES,
        host_path_allow: tuple[str, ...] = (),
    ) -> None:
        self.node = node
        self.root = os.path.join(state_dir, "containers")
        os.makedirs(self.root, exist_ok=True)
        # Each bundle in a block group of its own choosing (common/fsflags.py).
        fsflags.spread_subdirs(self.root)
        self.images = images
        self.cgroups = cgroups
        self.runtime = runtime
        self.cgroup_parent = cgroup_parent.strip("/")
        self.sys = sys or sc.libc()
        # None: containers get a network namespace with loopback only.
        self.network = network
        # Host ids of containers with a user namespace.
        self.id_ranges = id_ranges or IdRanges(os.path.join(state_dir, "userns"))
        self.rlimits = bundle_config.default_rlimits()
        # resources.disk of a workload that gives none (mctl-agent --default-disk-limit).
        self.default_disk_limit = default_disk_limit
        self.volumes = vols.VolumeManager(state_dir, self.sys, host_path_allow)
        # The Configs and Secrets of the latest desired set (node.py sets it).
        self.sources = vols.Sources()
        self._lock = threading.Lock()
        self.containers: dict[str, Container] = {}

    # -- bundle -------------------------------------------------------------

    def _config(self, replica: types_pb2.Replica, bundle: str,
                net: Attachment | None = None, ids: IdRange | None = None) -> oci.Config:
        image = self.images.get(image_of(replica))
        try:
            config = bundle_config.build(
                replica, image, self._layers(image.layers), bundle, self.node,
                f"/{self.cgroup_parent}/{container_id(*self._key(replica))}", self.rlimits,
                ip=net.ip if net is not None else "", netns=net.netns if net is not None else "",
                ids=ids,
                # The gateway is the node's DNS responder too (services_sync.py).
                nameserver=str(gateway_of(parse_subnet(net.subnet))) if net is not None else "",
                env_from=vols.environment(replica, self.sources))
            if not replica.spec.volume_mounts:
                return config
            # The container's user as the host sees it: the owner of its secrets.
            shift = ids.start if ids is not None else 0
            owner = vols.Owner(config.uid + shift, config.gid + shift, ids is not None)
            mounts = self.volumes.prepare(replica, bundle, owner, self.sources)
            return config.replace(mounts=config.mounts + tuple(mounts))
        except (bundle_config.BundleError, vols.VolumeError) as e:
            raise ContainerError(str(e)) from None

    def _layers(self, digests: tuple[str, ...]) -> list[str]:
        """The image's layer directories, top first (as overlay's lowerdir wants them)."""
        return [self.images.layer_path(d) for d in reversed(digests)]

    @staticmethod
    def _key(replica: types_pb2.Replica) -> tuple[str, str]:
        return replica.metadata.namespace, replica.metadata.name

    def create(self, replica: types_pb2.Replica, restarts: int = 0) -> Container:
        """Makes the bundle of `replica`: overlay rootfs, etc files, config.json."""
        cid = container_id(*self._key(replica))
        bundle = os.path.join(self.root, cid)
        # Others may pass through (a user namespace's mapped root reaches its
        # rootfs and /etc files here) but not list or read: config.json and
        # the replica hold the workload's environment.
        os.makedirs(bundle, mode=BUNDLE_MODE, exist_ok=True)
        os.chmod(bundle, BUNDLE_MODE)
        container = Container(id=cid, bundle=bundle, replica=replica,
                              cgroup=f"{self.cgroup_parent}/{cid}", restarts=restarts)
        try:
            # Inside the try: a full disk (ENOSPC) is this replica's create
            # error, retried later, not a failed pass of the whole node loop.
            fd = os.open(os.path.join(bundle, REPLICA_FILE),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                f.write(replica.SerializeToString())
            if restarts:
                # Without meta.json, adoption reads 0 restarts: a file less
                # to make per start (a new inode costs, see bench/README.md).
                _write_json(os.path.join(bundle, META_FILE), {"restarts": restarts})
            image = self.images.get(image_of(replica))
            container.network = self._attach(cid, replica)
            if container.network is not None:
                container.network.save(bundle)
            ids = (self.id_ranges.allocate(cid)
                   if replica.spec.security_context.user_namespace else None)
            config = self._config(replica, bundle, container.network, ids)
            bundle_rootfs.assemble(self.sys, cid, self._layers(image.layers), bundle, config)
            self.volumes.write_config(replica, bundle, config)
        except (ImageError, ContainerError, NetworkError, IdRangeError, OSError) as e:
            self.teardown(container)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ContainerError(f"node disk full: cannot write the bundle in {self.root}"
                                     f" ({e.strerror})") from e
            raise ContainerError(str(e)) from e
        with self._lock:
            self.containers[cid] = container
        return container

    def network_ready(self) -> bool:
        """Whether containers can be made now (the node network, if any, is set up)."""
        return self.network is None or self.network.ready or self.network.disabled

    def _attach(self, cid: str, replica: types_pb2.Replica) -> Attachment | None:
        if self.network is None or self.network.disabled:
            return None
        if not self.network.ready:
            # Never fall back to a container without its network.
            raise ContainerError("the node network is not set up yet")
        ports = [(p.protocol or "TCP", p.host_port, p.container_port)
                 for p in replica.spec.ports if p.host_port]
        return self.network.attach(cid, ports)

    def update_hosts(self, container: Container, peers: tuple[tuple[str, str], ...]) -> bool:
        """Rewrites the container's /etc/hosts (in place) with `peers`; True if it changed."""
        if peers is container.hosts_peers:
            return False  # the very list written last time (node.py keeps it while unchanged)
        spec, meta = container.replica.spec, container.replica.metadata
        text = hosts.render(spec.hostname or meta.name, container.ip, peers, meta.name)
        if text == container.hosts_text:
            container.hosts_peers = peers
            return False
        try:
            changed = hosts.rewrite_in_place(os.path.join(container.bundle, "etc", "hosts"), text)
        except FileNotFoundError:
            return False
        container.hosts_text = text
        container.hosts_peers = peers
        return changed

    def disk_limit_of(self, container: Container) -> int:
        """The container's disk limit in bytes: its workload's resources.disk, else the node's."""
        return container.replica.spec.resources.disk_bytes or self.default_disk_limit

    def mark_disk_limit(self, container: Container, why: str) -> None:
        """Records that `container` is being stopped for its disk use (disklimit.py).

        Kept in meta.json too, so that an agent restarted meanwhile still
        reports the reason and still starts the container afresh.
        """
        container.renew_rootfs = True
        _write_json(os.path.join(container.bundle, META_FILE),
                    _meta(container) | {"disk_limit": why})

    def renew_rootfs(self, container: Container) -> None:
        """A fresh writable layer and /etc files, and the logs trimmed (diskusage.trim_logs).

        After a DiskLimit stop: what the container wrote is what put it over,
        so its next run must not begin with it. The overlay is unmounted
        first (overlayfs forbids changing an upper dir under a mount), then
        assembled again as create does.
        """
        bundle, replica = container.bundle, container.replica
        try:
            # Its emptyDirs go too: what a kubelet's eviction would leave the
            # pod's replacement, and maybe what put it over its limit.
            self.volumes.teardown(bundle)
            left = bundle_rootfs.take_apart(self.sys, bundle)
            if left:
                raise ContainerError(f"writable layer not renewed: still mounted: {left[0]}")
            for name in ("upper", "work", "etc"):
                shutil.rmtree(os.path.join(bundle, name), ignore_errors=True)
            diskusage.trim_logs(bundle, self.disk_limit_of(container))
            image = self.images.get(image_of(replica))
            ids = (self.id_ranges.allocate(container.id)
                   if replica.spec.security_context.user_namespace else None)
            config = self._config(replica, bundle, container.network, ids)
            bundle_rootfs.assemble(self.sys, container.id, self._layers(image.layers), bundle,
                                   config)
            self.volumes.write_config(replica, bundle, config)
        except (ImageError, IdRangeError, OSError) as e:
            raise ContainerError(f"writable layer not renewed: {e}") from e
        # etc/hosts was written anew: update_hosts must write its peers again.
        container.hosts_text = ""
        container.hosts_peers = None
        container.renew_rootfs = False
        _write_json(os.path.join(bundle, META_FILE), _meta(container))
        log.info("container=%s starts from an empty writable layer", container.id)

    def start(self, container: Container) -> None:
        # A failure here is a failed start (node.py): back-off, and retried
        # on the next restart since renew_rootfs stays set.
        if container.renew_rootfs:
            self.renew_rootfs(container)
        t0 = time.perf_counter()
        try:
            result = self.runtime.start(container.id, container.bundle)
        except StartError as e:
            metrics.inc("container_starts_total", result="error")
            raise ContainerError(str(e)) from e
        metrics.inc("container_starts_total", result="started")
        metrics.observe("container_start_seconds", time.perf_counter() - t0)
        container.monitor_pid = result.monitor_pid
        container.init_pid = result.init_pid
        container.monitor_identity = None
        container.started_ms = int(time.time() * 1000)
        container.exit = None
        log.info("container started container=%s replica=%s/%s monitor_pid=%d init_pid=%d "
                 "ms=%.1f", container.id, *container.key, result.monitor_pid, result.init_pid,
                 (time.perf_counter() - t0) * 1000)

    def reset(self, container: Container) -> None:
        """Readies an exited container to run again in the same bundle (restart).

        The rootfs is kept, like `docker restart`, and the log becomes the
        previous one (previouslog.py); the cgroup is made anew so its
        counters and OOM events start from zero.
        """
        try:
            self.cgroups.destroy(container.cgroup)
        except CgroupError as e:
            log.warning("container=%s old cgroup not removed: %s", container.id, e)
        for name in (STATE_FILE, EXIT_FILE):
            try:
                os.unlink(os.path.join(container.bundle, name))
            except FileNotFoundError:
                pass
        # The ended run's log is kept, once, for `mctl logs --previous`.
        previouslog.keep_previous(container.bundle)
        container.restarts += 1
        _write_json(os.path.join(container.bundle, META_FILE), _meta(container))
        container.exit = None
        container.monitor_pid = container.init_pid = 0
        container.monitor_identity = None

    # -- observing -----------------------------------------------------------

    def refresh(self, container: Container) -> None:
        """Reads what the monitor recorded: did the container exit, and how."""
        if container.exit is not None or container.monitor_pid == 0:
            return
        ended = self.runtime.exit(container.bundle)
        if ended is not None:
            container.exit = ended
            if ended.oom_killed:     # counted once: exit stays set until a restart
                metrics.inc("oom_kills_total")
            return
        monitor = container.monitor_identity
        if monitor is None:
            state = self.runtime.state(container.bundle)
            if state is None:
                return
            monitor = (state.monitor_pid, state.monitor_start_time)
            container.monitor_identity = monitor
        if not pid_alive(*monitor):
            # The monitor is gone and wrote nothing: look once more (it may
            # have written exit.json just now), else record it as lost.
            container.exit = self.runtime.exit(container.bundle) or Exit.monitor_lost()

    # -- stopping and removing -------------------------------------------------

    def stop(self, container: Container, grace: float) -> None:
        """TERM to the container's init, KILL to all of it after `grace` seconds."""
        self.refresh(container)
        if container.running() and pid_alive(container.init_pid,
                                              self._init_start_time(container)):
            log.info("stopping container=%s grace=%.1fs", container.id, grace)
            self.runtime.kill(container.id, container.bundle, container.init_pid,
                              signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.refresh(container)
                if not container.running():
                    break
                time.sleep(0.05)
        # Whatever is left in the cgroup now gets SIGKILL; destroy waits until empty.
        try:
            if self.cgroups.exists(container.cgroup):
                for pid in self.cgroups.pids(container.cgroup):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except CgroupError as e:
            log.warning("container=%s cannot list its cgroup: %s", container.id, e)
        self._wait_monitor(container, 5.0)

    def _init_start_time(self, container: Container) -> int:
        state = self.runtime.state(container.bundle)
        return state.init_start_time if state is not None else 0

    def _wait_monitor(self, container: Container, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.refresh(container)
            if not container.running():
                return
            time.sleep(0.02)
        log.warning("container=%s monitor pid=%d still running after %.0fs",
                    container.id, container.monitor_pid, timeout)

    def teardown(self, container: Container) -> None:
        """Removes every trace of the container; safe to call at any point of setup."""
        state = self.runtime.state(container.bundle)
        if state is not None and pid_alive(state.monitor_pid, state.monitor_start_time):
            # Only reached when stop() could not end it: end the monitor too.
            try:
                os.kill(state.monitor_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.cgroups.destroy(container.cgroup)
        except CgroupError as e:
            log.error("container=%s cgroup not removed: %s", container.id, e)
        # runc/crun keep state of their own (and cgroups in more hierarchies).
        self.runtime.delete(container.id, container.bundle, container.cgroup)
        if self.network is not None:
            # After every process is gone: nothing may still use the namespace.
            self.network.detach(container.id, container.network
                                or Attachment.load(container.bundle))
        # Before the rootfs: take_apart answers what is still mounted in the bundle.
        self.volumes.teardown(container.bundle)
        left = bundle_rootfs.take_apart(self.sys, container.bundle)
        if left:
            # rmtree would go through them: an idmapped layer is the image's own files.
            log.error("container=%s bundle kept: still mounted there: %s", container.id,
                      ", ".join(left))
        else:
            shutil.rmtree(container.bundle, ignore_errors=True)
        # Last: no process and no file of the container holds its ids any more.
        self.id_ranges.release(container.id)
        with self._lock:
            if self.containers.get(container.id) is container:
                del self.containers[container.id]
        log.info("container removed container=%s replica=%s/%s", container.id, *container.key)

    # -- adoption -------------------------------------------------------------

    def adopt_all(self) -> list[Container]:
        """Rebuilds the container table from the bundles on disk (agent restart)."""
        adopted = []
        for cid in sorted(os.listdir(self.root)):
            bundle = os.path.join(self.root, cid)
            if not os.path.isdir(bundle) or os.path.islink(bundle):
                # Not ours (a bundle is a directory): tearing it down as one
                # failed on the first unmount and the agent never started.
                log.warning("%s in the containers dir is no bundle; left alone", bundle)
                continue
            try:
                with open(os.path.join(bundle, REPLICA_FILE), "rb") as f:
                    replica = types_pb2.Replica.FromString(f.read())
            except (OSError, ValueError):
                log.warning("bundle %s has no readable replica record; removing it", bundle)
                self.teardown(Container(id=cid, bundle=bundle, replica=types_pb2.Replica(),
                                        cgroup=f"{self.cgroup_parent}/{cid}"))
                continue
            if self.runtime.state(bundle) is None:
                # No state.json: no monitor recorded a container here, and
                # none ever will (a start dies with the agent until it has
                # recorded one: runtime/zygote.py). The agent was killed
                # while making or starting it, or its start failed; which
                # step it reached is unknown (an address, a namespace,
                # mounts, a cgroup with a process in it), so it is removed
                # and the node loop makes it again. Adopted as it is, it
                # showed Starting for good: nothing would ever start it.
                log.warning("container=%s was never started (cut short by the agent's end, or "
                            "failed): removing it to make it again", cid)
                self.teardown(Container(id=cid, bundle=bundle, replica=replica,
                                        cgroup=f"{self.cgroup_parent}/{cid}"))
                continue
            meta = _read_json(os.path.join(bundle, META_FILE)) or {}
            container = Container(id=cid, bundle=bundle, replica=replica,
                                  cgroup=f"{self.cgroup_parent}/{cid}",
                                  restarts=_restarts(meta))
            disk_limit = meta.get("disk_limit")
            container.renew_rootfs = bool(meta.get("renew_rootfs") or disk_limit)
            container.network = Attachment.load(bundle)
            if container.network is not None and self.network is not None:
                self.network.adopt(cid, container.network)
            state = self.runtime.state(bundle)
            if state is not None:
                container.monitor_pid = state.monitor_pid
                container.init_pid = state.init_pid
                container.started_ms = state.started_unix_ms
                self.refresh(container)
            if container.exit is not None and isinstance(disk_limit, str) and disk_limit:
                container.exit = container.exit.replace(disk_limit=disk_limit)
            with self._lock:
                self.containers[cid] = container
            adopted.append(container)
            log.info("adopted container=%s running=%s ip=%s", cid, container.running(),
                     container.ip or "-")
        if self.network is not None:
            # Addresses and namespaces of containers whose bundles are gone.
            self.network.forget_unowned({c.id for c in adopted if c.network is not None})
        for owner in self.id_ranges.release_all_but({c.id for c in adopted}):
            log.info("freed the user namespace ids of container=%s, which is gone", owner)
        return adopted

    def log_path(self, namespace: str, name: str, previous: bool = False) -> str:
        """The replica's current log, or with `previous` the one of its run before."""
        return os.path.join(self.root, container_id(namespace, name),
                            previouslog.PREVIOUS_LOG_FILE if previous else LOG_FILE)

    def snapshot(self) -> list[Container]:
        with self._lock:
            return list(self.containers.values())
