"""mctl-agent: one per node. Registers the node, runs what the scheduler places on it.

    mctl-agent --scheduler 127.0.0.1:7070 --name node1 --state-dir /var/lib/mctl/node1
    mctl-agent cleanup --state-dir DIR     # remove every container a dead agent left

On SIGTERM the agent stops serving and leaves its containers running (a
restarted agent adopts them), unless --cleanup-on-exit is given, as the
local cluster does, in which case every container is stopped and removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from mctl.common import logs, rpc
from mctl.v1 import agent_pb2_grpc, types_pb2

from .containers import ContainerManager
from .link import SchedulerLink
from .node import NodeLoop
from .runtime.cgroups import detect
from .runtime.images import ImageError, ImageStore
from .runtime.native import NativeRuntime
from .service import AgentService
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
    p.add_argument("--cgroup-parent", default="",
                   help="cgroup under which containers are made (default mctl/NAME)")
    p.add_argument("--stop-grace", type=float, default=5.0,
                   help="seconds between TERM and KILL when stopping a container")
    p.add_argument("--cleanup-on-exit", action="store_true",
                   help="on SIGTERM, remove every container instead of leaving them running")
    p.add_argument("--log-file", default=None)
    p.add_argument("--log-level", default="INFO")
    return p


def make_manager(args: argparse.Namespace, runtime: NativeRuntime) -> ContainerManager:
    cgroups = detect(args.cgroup_root)
    images = ImageStore(os.path.join(args.state_dir, "images"))
    try:
        images.ensure_busybox()
    except ImageError as e:
        log.error("%s", e)
    return ContainerManager(args.state_dir, args.name, images, cgroups, runtime,
                            cgroup_parent=args.cgroup_parent or f"mctl/{args.name}")


def remove_all(manager: ContainerManager, grace: float) -> None:
    containers = manager.snapshot()
    threads = [threading.Thread(target=lambda c=c: (manager.stop(c, grace), manager.teardown(c)))
               for c in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.info("removed %d containers", len(containers))


def cleanup(args: argparse.Namespace) -> int:
    runtime = NativeRuntime(args.cgroup_root)
    manager = make_manager(args, runtime)
    manager.adopt_all()
    remove_all(manager, args.stop_grace)
    runtime.close()
    return 0


def run(args: argparse.Namespace) -> int:
    runtime = NativeRuntime(args.cgroup_root)
    manager = make_manager(args, runtime)
    manager.adopt_all()
    sampler = UsageSampler(manager)
    link = SchedulerLink(args.scheduler, args.name)
    loop = NodeLoop(manager, sampler, link.report, args.name, args.stop_grace)

    server = rpc.make_server()
    agent_pb2_grpc.add_AgentServicer_to_server(AgentService(loop, manager, sampler, args.name),
                                               server)
    port = rpc.bind(server, args.listen)
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
    log.info("agent serving address=%s state_dir=%s cgroups=%s", address, args.state_dir,
             manager.cgroups.mode)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    link.start(node, usage=sampler.node_total, on_registered=loop.force_report, stop=stop)
    loop.start()
    sampler.start(on_sample=loop.wake)
    # Runtime first start: the zygote comes up now, not on the first replica.
    runtime.warm_up()
    stop.wait()
    log.info("agent stopping")
    server.stop(grace=1)
    link.close()
    loop.close()
    sampler.close()
    if args.cleanup_on_exit:
        remove_all(manager, args.stop_grace)
    runtime.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.state_dir = args.state_dir or f"/var/lib/mctl/agent-{args.name}"
    logs.configure("agent", args.name, args.log_level, args.log_file)
    if os.geteuid() != 0:
        print("mctl-agent: must run as root (it makes namespaces, cgroups and mounts)",
              file=sys.stderr)
        sys.exit(1)
    os.makedirs(args.state_dir, exist_ok=True)
    sys.exit(cleanup(args) if args.command == "cleanup" else run(args))


if __name__ == "__main__":
    main()
