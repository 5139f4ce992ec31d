"""mctl-agent: one per node. Registers the node, runs what the scheduler places on it.

    mctl-agent --scheduler 127.0.0.1:7070 --name node1 --state-dir /var/lib/mctl/node1 \
        --tls-ca ca.crt --tls-cert node1.crt --tls-key node1.key
    mctl-agent cleanup --state-dir DIR     # remove every container a dead agent left

On SIGTERM the agent stops serving and leaves its containers running (a
restarted agent adopts them), unless --cleanup-on-exit is given, as the
local cluster does, in which case every container is stopped and removed.
With TLS, its certificate must be an agent certificate for --name, and only
the scheduler and admins may call it (access.py).
"""

# ruff: noqa: E402 - gRPC's asyncio half is deferred before the imports below load grpc.

from __future__ import annotations

from mctl.common import lazyload

# First, before anything imports grpc or protobuf: asyncio, ssl, OpenSSL and
# protobuf's pure-Python classes are ~4.5 MiB of RSS the agent never uses
# (common/lazyload.py).
lazyload.defer(lazyload.GRPC_ASYNCIO + lazyload.GRPC_BUNDLED_ROOTS + lazyload.PROTOBUF_PYTHON)

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import threading

from mctl.common import imageref, logs, metrics, netns, pki, rpc, sdnotify, skopeo, tls
from mctl.common.authz import Authorizer
from mctl.common.health import Health as ReadinessService
from mctl.common.quantity import QuantityError, parse_memory
from mctl.common.sha256 import sha256
from mctl.v1 import agent_pb2_grpc, types_pb2

from . import debug, gauges, volumes
from .access import POLICY
from .containers import Container, ContainerManager
from .disklimit import CHECK_SECONDS, DiskGuard
from .diskusage import DEFAULT_LIMIT_BYTES
from .health import HealthChecker
from .idranges import IdRangeError, IdRanges
from .images.gc import EVENT_REASON, ImageGC
from .images.importer import ImageImporter
from .images.pull import Puller, RegistryConfig, image_of
from .images.source import Limits
from .images.store import ImageError, ImageStore
from .ipam import IpamError
from .network import NodeNetwork
from .node import MAX_PARALLEL_STARTS, NodeLoop
from .runtime.api import Runtime
from .runtime.cgroups import detect
from .runtime.choose import make_runtime
from .runtime.containerlog_writer import LogLimits
from .runtime.oci.client import RuntimeNotFound
from .scheduler_link import SchedulerLink
from .service import AgentService
from .services_sync import remove_table
from .usage import UsageSampler

log = logging.getLogger("mctl.agent")


def machine_capacity() -> types_pb2.Resources:
    cores = len(os.sched_getaffinity(0))
    memory = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    with open("/proc/sys/kernel/pid_max") as f:
        pids = int(f.read())
    return types_pb2.Resources(cpu_millis=cores * 1000, memory_bytes=memory, pids=pids)


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"label {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mctl-agent", description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", choices=["run", "cleanup"], default="run")
    p.add_argument("--name", default=socket.gethostname(), help="node name (default: hostname)")
    p.add_argument("--scheduler", default=os.environ.get("MCTL_SCHEDULER", "127.0.0.1:7070"),
                   help="address of the scheduler's API")
    p.add_argument("--listen", default="127.0.0.1:0", help="address of this agent's API")
    p.add_argument("--advertise", default="", help="address the scheduler dials (default: listen)")
    p.add_argument("--state-dir", default="", help="default /var/lib/mctl/agent-NAME")
    p.add_argument("--labels", type=parse_labels, default={}, help="k=v,k2=v2")
    p.add_argument("--cpu-millis", type=int, default=0, help="override the node's cpu capacity")
    p.add_argument("--memory-bytes", type=int, default=0, help="override the node's memory")
    p.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    p.add_argument("--runtime", default="native",
                   help="native (in-process, the default), runc, crun, mctl-runtime, or the "
                        "path of an OCI runtime command")
    p.add_argument("--cgroup-parent", default="",
                   help="cgroup under which containers are made (default mctl/NAME)")
    p.add_argument("--stop-grace", type=float, default=5.0,
                   help="seconds between TERM and KILL when stopping a container")
    p.add_argument("--max-parallel-starts", type=_parallel_starts, default=0, metavar="N",
                   help=f"containers made and started at once (1-{MAX_PARALLEL_STARTS}; "
                        "default twice the CPUs, at least 2)")
    p.add_argument("--cleanup-on-exit", action="store_true",
                   help="on SIGTERM, remove every container instead of leaving them running")
    p.add_argument("--netns", default="",
                   help="run inside this named network namespace (a local cluster's node)")
    p.add_argument("--netns-prefix", default="",
                   help="names of containers' network namespaces (default mctl-NAME-<id>-)")
    p.add_argument("--bridge", default="mctl0",
                   help="the node's container bridge (unique per network namespace)")
    p.add_argument("--log-file", default=None)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", choices=logs.FORMATS, default="text",
                   help="text (the default) or json: one object per line, the same keys")
    p.add_argument("--metrics-listen", default="", metavar="ADDR",
                   help="serve Prometheus metrics over HTTP on host:port, in the node's "
                        "network namespace (default: none); docs/observability.md lists them")
    p.add_argument("--image-max-bytes", type=_byte_size, default=Limits().max_archive_bytes,
                   help="largest image archive, its layers uncompressed and one file in them "
                        "(e.g. 8Gi, the default)")
    p.add_argument("--image-max-files", type=int, default=Limits().max_members,
                   help="most entries in an image archive and its layers")
    p.add_argument("--log-max-size", type=_byte_size, default=LogLimits().max_size,
                   help="size at which a container's log is rotated (default 10Mi), as the "
                        "kubelet's containerLogMaxSize")
    p.add_argument("--log-max-files", type=int, default=LogLimits().max_files,
                   help="log files kept per container, the current one included (default 2)")
    p.add_argument("--default-disk-limit", type=_byte_size, default=DEFAULT_LIMIT_BYTES,
                   help="what a container may write (writable layer, /etc files and logs) "
                        "when its workload sets no resources.disk (default 10Gi)")
    p.add_argument("--disk-check-period", type=float, default=CHECK_SECONDS,
                   help="seconds between measures of the containers' disk use (default 5)")
    p.add_argument("--host-path-allow", type=_allow_list, default=(),
                   help="comma-separated directories under which workloads may mount "
                        "hostPath volumes (default: none, every hostPath is refused)")
    p.add_argument("--userns-base", type=int, default=100_000,
                   help="first host id of the ranges given to containers with "
                        "securityContext.userNamespace (default 100000)")
    p.add_argument("--userns-size", type=int, default=65536,
                   help="host ids per such container (default 65536)")
    p.add_argument("--userns-count", type=int, default=0,
                   help="at most this many such containers (default: as many ranges as fit "
                        "below 2^31); with --userns-base, a window of host ids of this node's "
                        "own when several agents share a host")
    p.add_argument("--image-pull-timeout", type=float, default=1800.0,
                   help="seconds one image pull may take (default 1800)")
    p.add_argument("--image-gc-high", type=float, default=85.0, metavar="PERCENT",
                   help="when the image store's filesystem is fuller than this, unused images "
                        "are removed, least recently used first (default 85)")
    p.add_argument("--image-gc-low", type=float, default=80.0, metavar="PERCENT",
                   help="... until it is at most this full (default 80)")
    skopeo.add_flags(p)
    tls.add_flags(p)
    return p


def _byte_size(text: str) -> int:
    try:
        return parse_memory(text)
    except QuantityError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parallel_starts(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PARALLEL_STARTS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_PARALLEL_STARTS}, "
            f"got {text!r}")
    return n


def _allow_list(text: str) -> tuple[str, ...]:
    try:
        return volumes.parse_allow_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def image_limits(args: argparse.Namespace) -> Limits:
    return Limits(max_archive_bytes=args.image_max_bytes,
                  max_unpacked_bytes=args.image_max_bytes, max_file_bytes=args.image_max_bytes,
                  max_members=args.image_max_files)


def registry_config(args: argparse.Namespace) -> RegistryConfig:
    if not 0 < args.image_gc_low <= args.image_gc_high <= 100:
        raise ValueError(f"--image-gc-low {args.image_gc_low} and --image-gc-high "
                         f"{args.image_gc_high}: need 0 < low <= high <= 100")
    auth, cas = skopeo.checked_files(args)
    return RegistryConfig(auth_file=auth, ca_files=cas, insecure=frozenset(args.insecure_registry),
                          timeout_s=args.image_pull_timeout)


def make_manager(args: argparse.Namespace, runtime: Runtime) -> ContainerManager:
    cgroups = detect(args.cgroup_root)
    images = ImageStore(os.path.join(args.state_dir, "images"))
    try:
        images.ensure_busybox()
    except ImageError as e:
        log.error("%s", e)
    # The default prefix tells apart agents of the same name on one machine.
    prefix = (args.netns_prefix or
              f"mctl-{args.name}-{sha256(args.state_dir.encode()).hexdigest()[:6]}-")
    network = NodeNetwork(args.state_dir, prefix, bridge=args.bridge)
    return ContainerManager(args.state_dir, args.name, images, cgroups, runtime,
                            cgroup_parent=args.cgroup_parent or f"mctl/{args.name}",
                            network=network, id_ranges=args.id_ranges,
                            default_disk_limit=args.default_disk_limit,
                            host_path_allow=args.host_path_allow)


def configure_network(manager: ContainerManager, link: SchedulerLink) -> None:
    """After (re)registering: set up the node network for the subnet the scheduler gave."""
    network = manager.network
    if network is None:
        return
    if not link.pod_subnet:
        network.disable()
        return
    try:
        network.configure(link.pod_subnet, link.cluster_cidr, link.service_cidr)
    except (OSError, IpamError) as e:  # NetlinkError is an OSError
        # Containers wait (network_ready) rather than start without it.
        log.error("node network not set up for subnet %s: %s", link.pod_subnet, e)


def remove_network(manager: ContainerManager, node_netns_gone: bool) -> None:
    """Removes the node side of the network, once every container is gone."""
    if manager.network is None:
        return
    if node_netns_gone:
        # Bridge, routes and nft table went with the node's namespace.
        manager.network.forget_unowned(set())
        shutil.rmtree(manager.network.dir, ignore_errors=True)
        return
    # The services table first: it balances to addresses that are gone now.
    remove_table(manager.network)
    try:
        manager.network.cleanup()
    except OSError as e:
        log.error("node network not fully removed: %s", e)


def remove_all(manager: ContainerManager, grace: float) -> None:
    containers = manager.snapshot()
    def remove(c: Container) -> None:
        manager.stop(c, grace)
        manager.teardown(c)

    threads = [threading.Thread(target=remove, args=(c,)) for c in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.info("removed %d containers", len(containers))


def runtime_of(args: argparse.Namespace) -> Runtime:
    """The container runtime --runtime names; exits with one line if there is none."""
    try:
        return make_runtime(args.runtime, args.state_dir, args.cgroup_root, args.log_limits)
    except RuntimeNotFound as e:
        print(f"mctl-agent: {e}", file=sys.stderr)
        sys.exit(1)


def cleanup(args: argparse.Namespace) -> int:
    runtime = runtime_of(args)
    manager = make_manager(args, runtime)
    manager.adopt_all()
    remove_all(manager, args.stop_grace)
    remove_network(manager, args.netns_gone)
    runtime.close()
    return 0


def run(args: argparse.Namespace, credentials: tls.TLSConfig | None) -> int:
    try:
        registry = registry_config(args)
    except ValueError as e:
        print(f"mctl-agent: {e}", file=sys.stderr)
        return 1
    runtime = runtime_of(args)
    manager = make_manager(args, runtime)
    manager.adopt_all()
    # The loop, made below, reads usage from the sampler, which reads the guard's.
    disk = DiskGuard(manager, args.stop_grace, on_change=lambda: loop.wake(),
                     period=args.disk_check_period)
    sampler = UsageSampler(manager, disk=disk.used)
    link = SchedulerLink(args.scheduler, args.name, credentials)
    loop = NodeLoop(manager, sampler, link.report, args.name, args.stop_grace,
                    args.max_parallel_starts)

    server = rpc.make_server(interceptors=[Authorizer(POLICY)] if credentials else [])
    # NOT_SERVING until the containers are adopted (above) and the node registered.
    serving = ReadinessService(server)
    recent = debug.RecentLog()
    logging.getLogger().addHandler(recent)
    importer = ImageImporter(manager.images, image_limits(args))
    loop.puller = Puller(importer, registry, on_change=lambda: loop.wake())

    def image_removed(line: str) -> None:
        """A node event (delivered with the next status report, which this wakes)."""
        loop.selfcheck.incidents.add(EVENT_REASON, line)
        loop.wake()
    image_gc = ImageGC(importer, lambda: loop.wanted_images() | {
        imageref.normalize_reference(image_of(c.replica)) for c in manager.snapshot()},
        high=args.image_gc_high, low=args.image_gc_low, on_removed=image_removed)
    agent_pb2_grpc.add_AgentServicer_to_server(
        AgentService(loop, manager, sampler, args.name, recent, importer), server)
    port = rpc.bind(server, args.listen, credentials)
    server.start()
    address = args.advertise or f"{rpc.host_of(args.listen)}:{port}"
    capacity = machine_capacity()
    if args.cpu_millis:
        capacity.cpu_millis = args.cpu_millis
    if args.memory_bytes:
        capacity.memory_bytes = args.memory_bytes
    node = types_pb2.Node(name=args.name, address=address, capacity=capacity,
                          labels=args.labels, runtime=runtime.name,
                          cgroup_mode=manager.cgroups.mode, agent_version="0.1.0")
    log.info("agent serving address=%s state_dir=%s cgroups=%s tls=%s", address, args.state_dir,
             manager.cgroups.mode,
             f"verified as {pki.node_server_name(args.name)}" if credentials else "off")
    if credentials is None:
        log.warning("serving without TLS (--insecure): any peer may run containers here")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.metrics_listen:
        try:
            metrics_port = metrics.serve(args.metrics_listen, metrics.AGENT)
        except OSError as e:
            print(f"mctl-agent: --metrics-listen {args.metrics_listen}: {e.strerror or e}",
                  file=sys.stderr)
            server.stop(grace=0)
            runtime.close()
            return 1
        metrics.add_source(gauges.source(manager, sampler))
        log.info("metrics serving address=%s:%d", rpc.host_of(args.metrics_listen),
                 metrics_port)
    ready = threading.Event()

    def on_registered() -> None:
        configure_network(manager, link)
        loop.force_report()
        if not ready.is_set():
            ready.set()
            serving.ready()
            sdnotify.notify("READY=1")
            log.info("agent ready: containers adopted, node registered")

    watchdog = sdnotify.Watchdog()
    watchdog.start()

    link.start(node, usage=sampler.node_total, on_registered=on_registered, stop=stop)
    loop.start()
    sampler.start(on_sample=loop.wake)
    health = HealthChecker(manager, args.stop_grace, on_change=loop.wake)
    loop.ready_of = health.ready
    health.start()
    disk.start()
    image_gc.start()
    # Runtime first start: the zygote comes up now, not on the first replica.
    runtime.warm_up()
    stop.wait()
    log.info("agent stopping")
    sdnotify.notify("STOPPING=1")
    serving.shutdown()
    watchdog.close()
    metrics.close()
    server.stop(grace=1)
    link.close()
    health.close()
    disk.close()
    image_gc.close()
    loop.close()
    sampler.close()
    if args.cleanup_on_exit:
        remove_all(manager, args.stop_grace)
        remove_network(manager, False)
    runtime.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.state_dir = args.state_dir or f"/var/lib/mctl/agent-{args.name}"
    try:
        args.log_limits = LogLimits(args.log_max_size, args.log_max_files)
        if args.default_disk_limit <= 0:
            raise ValueError("--default-disk-limit must be more than 0")
        if not args.disk_check_period > 0:
            raise ValueError("--disk-check-period must be more than 0 seconds")
        if args.metrics_listen:
            metrics.parse_address(args.metrics_listen)
        args.id_ranges = IdRanges(os.path.join(args.state_dir, "userns"), args.userns_base,
                                  args.userns_size, args.userns_count)
    except (ValueError, IdRangeError) as e:
        print(f"mctl-agent: {e}", file=sys.stderr)
        sys.exit(2)
    logs.configure("agent", args.name, args.log_level, args.log_file, fmt=args.log_format)
    if os.geteuid() != 0:
        print("mctl-agent: must run as root (it makes namespaces, cgroups and mounts)",
              file=sys.stderr)
        sys.exit(1)
    args.netns_gone = False
    if args.netns:
        # First, while this process has one thread: every thread and child
        # made from now on (gRPC, zygote, monitors) lives in the node's namespace.
        try:
            netns.enter(args.netns)
        except netns.NetnsError as e:
            if args.command != "cleanup":
                print(f"mctl-agent: --netns: {e}", file=sys.stderr)
                sys.exit(1)
            args.netns_gone = True
    if args.command == "cleanup":
        os.makedirs(args.state_dir, exist_ok=True)
        sys.exit(cleanup(args))
    try:
        # Checked in a forked child while this process has one thread: the
        # agent itself never maps `cryptography` (tls.py).
        credentials = tls.from_flags(args.tls_ca, args.tls_cert, args.tls_key, args.insecure,
                                     isolated=True)
        if credentials is not None:
            credentials.require("agent", args.name)
    except tls.TLSError as e:
        print(f"mctl-agent: {e}", file=sys.stderr)
        sys.exit(1)
    os.makedirs(args.state_dir, exist_ok=True)
    sys.exit(run(args, credentials))


if __name__ == "__main__":
    main()
