"""What cpuset, devices, freezer and blkio cost: the agent's start path and mctl-runtime's.

    .venv/bin/python bench/cgroup_extras.py [--runs 300]

Not a test; needs root. Every figure is CPU-bound and in microseconds, so it
holds up on a loaded machine where whole container starts do not. Timed on
the real cgroup hierarchies, under a prefix `mctl/bench-*` swept at the end:

- what the agent's start path gained: V1Driver.self_join_files (the files
  the init writes to join) for a container made by create() alone, against
  the code it ran before this change; load of the agent's config.json (parse_config), which now also
  looks at linux.resources.devices;
- what only mctl-runtime pays: container_setup.setup for a container (its cgroup made
  in the cpuset, devices, freezer and blkio hierarchies, cpuset copied from
  the parents, the deny-all and 11 default device rules written) and its
  removal, against create() + destroy() alone.
"""

from __future__ import annotations

import argparse
import os
import time

from _common import CgroupPrefix, Cleanup, Table, check_leftovers, print_header

from mctl.agent.runtime.cgroups import CgroupDriver, Limits, V1Driver, container_setup, detect
from mctl.agent.runtime.oci import config as oci


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("cgroup_extras.py: needs root")
    print_header("bench/cgroup_extras.py: cpuset, devices, freezer, blkio")
    with Cleanup() as stack:
        prefix = CgroupPrefix(stack)
        drv = detect()
        path = f"{prefix.path}/agent"
        drv.create(path, Limits(memory_bytes=64 << 20))
        agent = Table("the agent's start path", "us")
        if isinstance(drv, V1Driver):
            agent.add("self_join_files (an agent's container)",
                      timed(lambda: drv.self_join_files(path), args.runs))
            # What self_join_files was before this change, line for line.
            agent.add("the same before this change",
                      timed(lambda: [os.path.join(d, "tasks")
                                     for _, d in CgroupDriver._dirs(drv, path)], args.runs))
        config = oci.to_json(oci.Config(args=("true",), mounts=tuple(oci.default_mounts()),
                                        resources=oci.Resources(memory_limit=64 << 20)))
        agent.add("parse_config of the agent's config.json",
                  timed(lambda: oci.parse_config(config), args.runs))
        drv.destroy(path)
        cli = Table("mctl-runtime create/delete, cgroup part", "us")
        n = max(args.runs // 10, 10)
        counter = iter(range(10**6))

        def plain() -> None:
            p = f"{prefix.path}/p{next(counter)}"
            drv.create(p, Limits(memory_bytes=64 << 20))
            drv.destroy(p)

        def with_extras() -> None:
            p = f"{prefix.path}/e{next(counter)}"
            drv.create(p, Limits(memory_bytes=64 << 20))
            container_setup.setup(drv, p, None)
            drv.destroy(p)

        cli.add("create + destroy", timed(plain, n))
        cli.add("create + container_setup.setup + destroy", timed(with_extras, n))
    check_leftovers([], [prefix.path])


if __name__ == "__main__":
    main()
