"""The node's containers: replicas turned into OCI bundles, run, stopped and removed.

A replica becomes a container named `<namespace>_<replica>` (an underscore
cannot occur in a DNS label, so the id is unambiguous) whose bundle lives in
`<state>/containers/<id>/`:

    config.json    what the runtime realizes (oci.py)
    replica.pb     the replica as the scheduler sent it (for adoption)
    meta.json      restarts so far
    rootfs/        overlay mount of the image's layers + upper/ + work/
    etc/           hostname, hosts, resolv.conf bound into the container
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
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

from mctl.common.procfs import start_time as process_start_time
from mctl.v1 import types_pb2

from .runtime import oci, rootfs
from .runtime import syscalls as sc
from .runtime.cgroups.base import CgroupDriver, CgroupError
from .runtime.images import DEFAULT_PATH, ImageError, ImageStore
from .runtime.monitor import EXIT_FILE, LOG_FILE, STATE_FILE
from .runtime.native import NativeRuntime, StartError

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
    started_ms: int = 0
    # Set while a stop runs in the background, so the reconciler leaves it alone.
    busy: bool = False
    exit: dict[str, object] | None = None
    last_error: str = ""
    next_restart_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> tuple[str, str]:
        return self.replica.metadata.namespace, self.replica.metadata.name

    def running(self) -> bool:
        return self.exit is None and self.monitor_pid > 0


def container_id(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def _read_json(path: str) -> dict[str, object] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
    ) -> None:
        self.node = node
        self.root = os.path.join(state_dir, "containers")
        os.makedirs(self.root, exist_ok=True)
        self.images = images
        self.cgroups = cgroups
        self.runtime = runtime
        self.cgroup_parent = cgroup_parent.strip("/")
        self.sys = sys or sc.libc()
        self._lock = threading.Lock()
        self.containers: dict[str, Container] = {}

    # -- bundle -------------------------------------------------------------

    def _config(self, replica: types_pb2.Replica, bundle: str) -> oci.Config:
        spec = replica.spec
        image = self.images.get(spec.image)
        if spec.command:
            args = list(spec.command) + list(spec.args)
        else:
            args = list(image.entrypoint) + (list(spec.args) or list(image.cmd))
        if not args:
            raise ContainerError(f"image {spec.image!r} has no default command; set spec.command")
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
            "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{hostname}\n",
            # Only loopback exists in the container's network namespace for now.
            "resolv.conf": "",
        }
        mounts = oci.default_mounts()
        for name, text in files.items():
            with open(os.path.join(etc, name), "w") as f:
                f.write(text)
            mounts.append(oci.Mount(f"/etc/{name}", "bind", os.path.join(etc, name),
                                    ("bind", "rw")))
        res = spec.resources
        memory = res.memory_bytes or None
        return oci.Config(
            args=tuple(args),
            env=tuple(f"{k}={v}" for k, v in env.items()),
            cwd=spec.working_dir or image.working_dir or "/",
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
        os.makedirs(bundle, exist_ok=True)
        container = Container(id=cid, bundle=bundle, replica=replica,
                              cgroup=f"{self.cgroup_parent}/{cid}", restarts=restarts)
        with open(os.path.join(bundle, REPLICA_FILE), "wb") as f:
            f.write(replica.SerializeToString())
        _write_json(os.path.join(bundle, META_FILE), {"restarts": restarts})
        try:
            image = self.images.get(replica.spec.image)
            config = self._config(replica, bundle)
            lower = [self.images.layer_path(d) for d in reversed(image.layers)]
            rootfs.mount_overlay(self.sys, lower, os.path.join(bundle, "upper"),
                                 os.path.join(bundle, "work"), os.path.join(bundle, "rootfs"))
            oci.write_config(bundle, config)
        except (ImageError, ContainerError, OSError) as e:
            self.teardown(container)
            raise ContainerError(str(e)) from e
        with self._lock:
            self.containers[cid] = container
        return container

    def start(self, container: Container) -> None:
        t0 = time.perf_counter()
        try:
            result = self.runtime.start(container.id, container.bundle)
        except StartError as e:
            raise ContainerError(str(e)) from e
        container.monitor_pid = result.monitor_pid
        container.init_pid = result.init_pid
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

    # -- observing -----------------------------------------------------------

    def refresh(self, container: Container) -> None:
        """Reads what the monitor recorded: did the container exit, and how."""
        if container.exit is not None or container.monitor_pid == 0:
            return
        doc = _read_json(os.path.join(container.bundle, EXIT_FILE))
        if doc is not None:
            container.exit = doc
            return
        state = _read_json(os.path.join(container.bundle, STATE_FILE))
        if state is None:
            return
        if not pid_alive(int(state["monitor_pid"]), int(state["monitor_start_time"])):
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
            try:
                os.kill(container.init_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
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
        for mount in (os.path.join(container.bundle, "rootfs"),):
            # Unmount until nothing is left: a crashed earlier setup may have stacked two.
            while rootfs.unmount(self.sys, mount):
                pass
        shutil.rmtree(container.bundle, ignore_errors=True)
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
            state = _read_json(os.path.join(bundle, STATE_FILE))
            if state is not None:
                container.monitor_pid = int(state["monitor_pid"])
                container.init_pid = int(state["init_pid"])
                container.started_ms = int(state["started_unix_ms"])
                self.refresh(container)
            with self._lock:
                self.containers[cid] = container
            adopted.append(container)
            log.info("adopted container=%s running=%s", cid, container.running())
        return adopted

    def log_path(self, namespace: str, name: str) -> str:
        return os.path.join(self.root, container_id(namespace, name), LOG_FILE)

    def snapshot(self) -> list[Container]:
        with self._lock:
            return list(self.containers.values())
