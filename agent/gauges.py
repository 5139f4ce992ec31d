"""The agent's per-replica gauges, computed at each scrape (common/metrics.py).

cpu, memory and pids of each running replica are the usage sampler's latest
values, labelled by workload and replica; they are read from the node's own
container table when Prometheus asks, so there are never more series than
replicas on the node, and a removed replica's series go with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mctl.common.metrics import Sample

from .containers import ContainerManager
from .usage import UsageSampler


def source(manager: ContainerManager, sampler: UsageSampler) -> Callable[[], Iterator[Sample]]:
    def samples() -> Iterator[Sample]:
        for c in manager.snapshot():
            usage = sampler.latest(c.id)
            if usage is None:
                continue
            namespace, name = c.key
            labels = {"workload": f"{namespace}/{c.replica.workload}",
                      "replica": f"{namespace}/{name}"}
            yield "replica_cpu_millis", labels, round(usage.cpu_cores * 1000, 1)
            yield "replica_memory_bytes", labels, float(usage.memory_bytes)
            yield "replica_pids", labels, float(usage.pids)
    return samples
