"""The node's containers: replicas turned into OCI bundles, run, stopped and removed.

A replica becomes a container named `<namespace>_<replica>` (an underscore
cannot occur in a DNS label, so the id is unambiguous) whose bundle lives in
`<state>/containers/<id>/`:

    config.json    what the runtime realizes (oci.py)
    replica.pb     the replica as the scheduler sent it (for adoption)
    meta.json      restarts so far
    rootfs/        overlay mount of the image's layers + upper/ + work/
    lower/         with a user namespace: idmapped mounts of the layers,
                   0..N-1 top first, which the overlay stacks (runtime/idmap.py)
    etc/           hostname, hosts, resolv.conf bound into the container
    network.json   its network namespace, veth, address, hostPorts (network.py)
                   (and, with a user namespace, a host id range: idranges.py)
    state.json     written by the monitor once the container runs
    exit.json      written by the monitor when it exits
    container.log  stdout and stderr, CRI log format

Everything the agent knows about a container can be rebuilt from this
directory, which is how a restarted agent adopts containers that kept running.
Teardown is idempotent and safe after a half-finished setup: each step
checks what exists and removes only that.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

from mctl.common.procfs import start_time as process_start_time
from mctl.v1 import types_pb2

from . import hosts
from .idranges import IdRange, IdRangeError, IdRanges
from .network import Attachment, NetworkError, NodeNetwork
from .runtime import capabilities, idmap, imageuser, oci, rootfs, seccomp, seccomp_default
from .runtime import syscalls as sc
from .runtime.cgroups.base import CgroupDriver, CgroupError
from .runtime.images import DEFAULT_PATH, ImageError, ImageStore
from .runtime.monitor import EXIT_FILE, LOG_FILE, STATE_FILE
from .runtime.native import NativeRuntime, StartError

log = logging.getLogger(__name__)

REPLICA_FILE = "replica.pb"
META_FILE = "meta.json"
# Open files a container may have, soft and hard, unless the host allows
# fewer (fs.nr_open): Docker's default (containerd's LimitNOFILE).
DEFAULT_NOFILE = 1 << 20


def default_rlimits(nr_open_path: str = "/proc/sys/fs/nr_open",
                    status_path: str = "/proc/self/status") -> tuple[oci.Rlimit, ...]:
    """The rlimits of every container: RLIMIT_NOFILE as Docker sets it, if it can be set.

    Above fs.nr_open setrlimit fails for anyone; above the agent's own hard
    limit it fails without CAP_SYS_RESOURCE (a root confined by a container
    or a systemd unit may lack it), so the default stays within both.
    """
    nofile = DEFAULT_NOFILE
    try:
        with open(nr_open_path) as f:
            nofile = min(nofile, int(f.read()))
    except (OSError, ValueError):
        pass
    if not _has_capability(status_path, capabilities.CAPABILITIES["CAP_SYS_RESOURCE"]):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < nofile:
            log.warning("no CAP_SYS_RESOURCE: containers get RLIMIT_NOFILE %d, the agent's "
                        "own hard limit, not %d", hard, nofile)
            nofile = hard
    return (oci.Rlimit("RLIMIT_NOFILE", nofile, nofile),)


def _has_capability(status_path: str, number: int) -> bool:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> number & 1)
    except (OSError, ValueError):
        pass
    return False


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
    exit: dict[str, object] | None = None
    last_error: str = ""
    last_exit: str = ""              # why it ended before its latest restart
    unhealthy: str = ""              # why, while a failed health check stops it
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


def _user_namespace(ids: IdRange) -> dict[str, object]:
    """config.json's part of a user namespace: ids 0..size-1 inside are `ids` on the host."""
    mapping = (oci.IdMapping(0, ids.start, ids.size),)
    return {"namespaces": ("user", *oci.DEFAULT_NAMESPACES),
            "uid_mappings": mapping, "gid_mappings": mapping}


def _seccomp_profile(choice: str, caps: tuple[str, ...]) -> seccomp.Profile | None:
    """securityContext.seccompProfile as config.json's linux.seccomp; None for Unconfined.

    "" is RuntimeDefault (common/spec.py stores the default so). The profile
    is compiled once per agent process (seccomp.parse keeps it), and the
    zygote has it warm too.
    """
    if choice == "Unconfined":
        return None
    if choice not in ("", "RuntimeDefault"):
        raise ContainerError(f"securityContext.seccompProfile: unknown profile {choice!r}")
    arch = seccomp.native_arch()
    if not arch:
        raise ContainerError(f"securityContext.seccompProfile RuntimeDefault: no system call "
                             f"table for {os.uname().machine}; use Unconfined")
    try:
        return seccomp.parse(seccomp_default.runtime_default(caps, arch))
    except oci.ConfigError as e:  # a bug in the profile, never the user's
        raise ContainerError(f"securityContext.seccompProfile RuntimeDefault: {e}") from None


def container_id(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def _read_json(path: str) -> dict[str, object] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
        runtime: NativeRuntime,
        cgroup_parent: str,
        sys: sc.Syscalls | None = None,
        network: NodeNetwork | None = None,
        id_ranges: IdRanges | None = None,
    ) -> None:
        self.node = node
        self.root = os.path.join(state_dir, "containers")
        os.makedirs(self.root, exist_ok=True)
        self.images = images
        self.cgroups = cgroups
        self.runtime = runtime
        self.cgroup_parent = cgroup_parent.strip("/")
        self.sys = sys or sc.libc()
        # None: containers get a network namespace with loopback only.
        self.network = network
        # Host ids of containers with a user namespace.
        self.id_ranges = id_ranges or IdRanges(os.path.join(state_dir, "userns"))
        self.rlimits = default_rlimits()
        self._lock = threading.Lock()
        self.containers: dict[str, Container] = {}

    # -- bundle -------------------------------------------------------------

    def _config(self, replica: types_pb2.Replica, bundle: str,
                net: Attachment | None = None, ids: IdRange | None = None) -> oci.Config:
        spec = replica.spec
        image = self.images.get(spec.image)
        if spec.command:
            args = list(spec.command) + list(spec.args)
        else:
            args = list(image.entrypoint) + (list(spec.args) or list(image.cmd))
        if not args:
            raise ContainerError(f"image {spec.image!r} has no default command; set spec.command")
        try:
            # The image's User, looked up in its own /etc/passwd and /etc/group.
            uid, gid, groups = imageuser.resolve(
                image.user, [self.images.layer_path(d) for d in reversed(image.layers)])
        except imageuser.UserError as e:
            raise ContainerError(f"image {spec.image!r}: {e}") from None
        env = dict(e.split("=", 1) for e in image.env if "=" in e)
        env.setdefault("PATH", DEFAULT_PATH)
        hostname = spec.hostname or replica.metadata.name
        env["HOSTNAME"] = hostname
        for var in spec.env:
            env[var.name] = var.value
        etc = os.path.join(bundle, "etc")
        os.makedirs(etc, exist_ok=True)
        files = {
            "hostname": f"{hostname}\n",
            # Peers are added by update_hosts once the scheduler tells them.
            "hosts": hosts.render(hostname, net.ip if net else "", (), replica.metadata.name),
            # No DNS: names of peers come from hosts, nothing leaves the cluster.
            "resolv.conf": "",
        }
        mounts = oci.default_mounts()
        for name, text in files.items():
            with open(os.path.join(etc, name), "w") as f:
                f.write(text)
            if ids is not None:
                # As Docker with userns-remap: root in the container may edit them.
                os.chown(os.path.join(etc, name), ids.start, ids.start)
            mounts.append(oci.Mount(f"/etc/{name}", "bind", os.path.join(etc, name),
                                    ("bind", "rw")))
        res = spec.resources
        memory = res.memory_bytes or None
        return oci.Config(
            args=tuple(args),
            env=tuple(f"{k}={v}" for k, v in env.items()),
            cwd=spec.working_dir or image.working_dir or "/",
            uid=uid, gid=gid, additional_gids=groups,
            hostname=hostname,
            root_readonly=spec.security_context.read_only_rootfs,
            mounts=tuple(mounts),
            cgroups_path=f"/{self.cgroup_parent}/{container_id(*self._key(replica))}",
            resources=oci.Resources(
                memory_limit=memory,
                # Swap limit equal to the memory limit: no swap beyond it.
                memory_swap=memory,
                cpu_quota=res.cpu_millis * 100 if res.cpu_millis else None,
                cpu_period=100_000,
                pids_limit=res.pids or None,
            ),
            namespace_paths={"network": net.netns} if net is not None else {},
            **(_user_namespace(ids) if ids is not None else {}),
            rlimits=self.rlimits,
            seccomp=_seccomp_profile(spec.security_context.seccomp_profile,
                                     tuple(oci.DEFAULT_CAPABILITIES)),
            annotations={"mctl.replica": replica.metadata.name,
                         "mctl.namespace": replica.metadata.namespace,
                         "mctl.uid": replica.metadata.uid, "mctl.node": self.node},
        )

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
        fd = os.open(os.path.join(bundle, REPLICA_FILE),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(replica.SerializeToString())
        _write_json(os.path.join(bundle, META_FILE), {"restarts": restarts})
        try:
            image = self.images.get(replica.spec.image)
            container.network = self._attach(cid, replica)
            if container.network is not None:
                container.network.save(bundle)
            ids = (self.id_ranges.allocate(cid)
                   if replica.spec.security_context.user_namespace else None)
            config = self._config(replica, bundle, container.network, ids)
            lower = [self.images.layer_path(d) for d in reversed(image.layers)]
            if ids is not None:
                lower = self._idmapped_layers(cid, lower, bundle, config)
            rootfs.mount_overlay(self.sys, lower, os.path.join(bundle, "upper"),
                                 os.path.join(bundle, "work"), os.path.join(bundle, "rootfs"),
                                 owner=(ids.start, ids.start) if ids is not None else None)
            oci.write_config(bundle, config)
        except (ImageError, ContainerError, NetworkError, IdRangeError, OSError) as e:
            self.teardown(container)
            raise ContainerError(str(e)) from e
        with self._lock:
            self.containers[cid] = container
        return container

    def _idmapped_layers(self, cid: str, lower: list[str], bundle: str,
                         config: oci.Config) -> list[str]:
        """The layers as the user namespace's root sees its own (idmap.py), or as they are.

        Where the kernel or the layers' file system cannot idmap, the
        container still runs, as before idmapped layers: image files show as
        65534 inside and are read-only to it.
        """
        t0 = time.perf_counter()
        try:
            mounted = idmap.mount_layers(self.sys, lower, os.path.join(bundle, idmap.LAYERS_DIR),
                                         config.uid_mappings, config.gid_mappings)
        except idmap.IdmapUnsupported as e:
            log.warning("container=%s no idmapped layers (%s): image files stay read-only "
                        "to its root", cid, e)
            return lower
        log.debug("container=%s idmapped %d layers ms=%.1f", cid, len(lower),
                  (time.perf_counter() - t0) * 1000)
        return mounted

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

    def start(self, container: Container) -> None:
        t0 = time.perf_counter()
        try:
            result = self.runtime.start(container.id, container.bundle)
        except StartError as e:
            raise ContainerError(str(e)) from e
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

        The rootfs and the log are kept, like `docker restart`; the cgroup is
        made anew so its counters and OOM events start from zero.
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
        container.restarts += 1
        _write_json(os.path.join(container.bundle, META_FILE), {"restarts": container.restarts})
        container.exit = None
        container.monitor_pid = container.init_pid = 0
        container.monitor_identity = None

    # -- observing -----------------------------------------------------------

    def refresh(self, container: Container) -> None:
        """Reads what the monitor recorded: did the container exit, and how."""
        if container.exit is not None or container.monitor_pid == 0:
            return
        doc = _read_json(os.path.join(container.bundle, EXIT_FILE))
        if doc is not None:
            container.exit = doc
            return
        monitor = container.monitor_identity
        if monitor is None:
            state = _read_json(os.path.join(container.bundle, STATE_FILE))
            if state is None:
                return
            monitor = (int(state["monitor_pid"]), int(state["monitor_start_time"]))
            container.monitor_identity = monitor
        if not pid_alive(*monitor):
            # The monitor is gone and wrote nothing: look once more (it may
            # have written exit.json just now), else record it as lost.
            doc = _read_json(os.path.join(container.bundle, EXIT_FILE))
            container.exit = doc or {"exit_code": 255, "signal": 0, "oom_killed": False,
                                     "lost": True, "finished_unix_ms": int(time.time() * 1000)}

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
        state = _read_json(os.path.join(container.bundle, STATE_FILE)) or {}
        return int(state.get("init_start_time", 0))

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
        state = _read_json(os.path.join(container.bundle, STATE_FILE))
        if state and pid_alive(int(state["monitor_pid"]), int(state["monitor_start_time"])):
            # Only reached when stop() could not end it: end the monitor too.
            try:
                os.kill(int(state["monitor_pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.cgroups.destroy(container.cgroup)
        except CgroupError as e:
            log.error("container=%s cgroup not removed: %s", container.id, e)
        # runc/crun keep state of their own (and cgroups in more hierarchies).
        self.runtime.remove(container.id, container.bundle, container.cgroup)
        if self.network is not None:
            # After every process is gone: nothing may still use the namespace.
            self.network.detach(container.id, container.network
                                or Attachment.load(container.bundle))
        for mount in (os.path.join(container.bundle, "rootfs"),):
            # Unmount until nothing is left: a crashed earlier setup may have stacked two.
            while rootfs.unmount(self.sys, mount):
                pass
        # The overlay's idmapped layers (user namespace), after the overlay.
        idmap.unmount_layers(self.sys, os.path.join(container.bundle, idmap.LAYERS_DIR))
        left = rootfs.mounts_under(container.bundle)
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
            try:
                with open(os.path.join(bundle, REPLICA_FILE), "rb") as f:
                    replica = types_pb2.Replica.FromString(f.read())
            except (OSError, ValueError):
                log.warning("bundle %s has no readable replica record; removing it", bundle)
                self.teardown(Container(id=cid, bundle=bundle, replica=types_pb2.Replica(),
                                        cgroup=f"{self.cgroup_parent}/{cid}"))
                continue
            meta = _read_json(os.path.join(bundle, META_FILE)) or {}
            container = Container(id=cid, bundle=bundle, replica=replica,
                                  cgroup=f"{self.cgroup_parent}/{cid}",
                                  restarts=int(meta.get("restarts", 0)))
            container.network = Attachment.load(bundle)
            if container.network is not None and self.network is not None:
                self.network.adopt(cid, container.network)
            state = _read_json(os.path.join(bundle, STATE_FILE))
            if state is not None:
                container.monitor_pid = int(state["monitor_pid"])
                container.init_pid = int(state["init_pid"])
                container.started_ms = int(state["started_unix_ms"])
                self.refresh(container)
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

    def log_path(self, namespace: str, name: str) -> str:
        return os.path.join(self.root, container_id(namespace, name), LOG_FILE)

    def snapshot(self) -> list[Container]:
        with self._lock:
            return list(self.containers.values())
