"""What container networking adds to container start and removal.

    .venv/bin/python bench/network_start.py [--runs 40]

Not a test; needs root. Each run makes a `busybox true` container the way
the agent does (`ContainerManager.create`, then `.start`, then `.teardown`),
alternately without a network (a fresh namespace with loopback only, as
before) and with one (named namespace, veth into the node bridge, address,
default route: `NodeNetwork.attach`). The "node" is a scratch network
namespace, so the host's network is never touched; everything is removed
at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import statistics
import tempfile
import time

from mctl.agent.containers import ContainerManager
from mctl.agent.images.store import ImageStore
from mctl.agent.network import NodeNetwork
from mctl.agent.runtime.cgroups import detect
from mctl.agent.runtime.native import NativeRuntime
from mctl.common import netns
from mctl.v1 import types_pb2


def replica(name: str) -> types_pb2.Replica:
    r = types_pb2.Replica(workload="bench", spec_hash="x")
    r.metadata.name = name
    r.metadata.namespace = "default"
    r.metadata.uid = secrets.token_hex(8)
    r.spec.image = "busybox"
    r.spec.command.extend(["/bin/true"])
    r.spec.resources.memory_bytes = 64 << 20
    return r


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[int(len(values) * 0.9) - 1] if len(values) >= 10 else values[-1]
    return f"median {statistics.median(values):6.2f} ms   p90 {p90:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tag = f"mctl-bench-{secrets.token_hex(3)}"
    tmp = tempfile.mkdtemp(prefix="mctl-bench-")
    node_ns = netns.create(tag)
    images = ImageStore(os.path.join(tmp, "images"))
    images.ensure_busybox()
    cgroups = detect("/sys/fs/cgroup")
    runtime = NativeRuntime()
    runtime.warm_up()
    net = NodeNetwork(os.path.join(tmp, "net"), f"{tag}-", node_netns=tag)
    net.configure("10.99.1.0/24", "10.99.0.0/16")
    plain = ContainerManager(os.path.join(tmp, "plain"), "bench", images, cgroups, runtime,
                             cgroup_parent=f"mctl/{tag}-plain")
    networked = ContainerManager(os.path.join(tmp, "net"), "bench", images, cgroups, runtime,
                                 cgroup_parent=f"mctl/{tag}-net", network=net)
    times: dict[str, list[float]] = {}
    try:
        for i in range(args.runs):
            for label, manager in (("without network", plain), ("with network", networked)):
                t0 = time.perf_counter()
                c = manager.create(replica(f"b{i}"))
                t1 = time.perf_counter()
                manager.start(c)
                t2 = time.perf_counter()
                manager.stop(c, 1.0)
                t3 = time.perf_counter()
                manager.teardown(c)
                t4 = time.perf_counter()
                for what, value in (("create", t1 - t0), ("start", t2 - t1),
                                    ("create+start", t2 - t0), ("teardown", t4 - t3)):
                    times.setdefault(f"{what:<13} {label}", []).append(value * 1000)
        for key in sorted(times):
            print(f"{key:<32} {ms(times[key])}")
    finally:
        runtime.close()
        net.cleanup()
        netns.remove(tag)
        for prefix in (f"mctl/{tag}-plain", f"mctl/{tag}-net"):
            cgroups.destroy(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
        del node_ns


if __name__ == "__main__":
    main()
