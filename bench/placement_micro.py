"""Micro-benchmark of placement: placements per second on 1,000 nodes.

Not a test. Run with the project's interpreter:

    .venv/bin/python bench/placement_micro.py [--nodes 1000] [--seed 1]

Scenarios:
- batch: 50 workloads x 100 replicas in one place_batch call, the shape the
  scheduler produces when it places every pending replica of a snapshot.
- distinct: 1,000 single-replica workloads in one call, the worst case for
  the batch (every request is new, so every node is evaluated for each).
- one: place_one queries, each building its planner from scratch.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from mctl.scheduler.model import NodeView, Resources
from mctl.scheduler.placement import NodeState, PlacementRequest, place_batch, place_one

GIB = 1024**3


def make_nodes(count: int, rng: random.Random) -> list[NodeState]:
    nodes = []
    for i in range(count):
        cores = rng.choice((8, 16, 32))
        view = NodeView(
            name=f"node-{i:04d}",
            capacity=Resources(cores * 1000, cores * 4 * GIB, 32768),
            labels={"zone": f"z{i % 3}", "disk": "ssd" if i % 2 else "hdd"},
            ready=i % 97 != 0,
            cordoned=i % 101 == 0,
        )
        nodes.append(NodeState(view))
    return nodes


def make_request(i: int, rng: random.Random) -> PlacementRequest:
    selector = {"disk": "ssd"} if i % 5 == 0 else {}
    ports = (("TCP", 8000 + i),) if i % 7 == 0 else ()
    return PlacementRequest(
        workload_key=f"default/app-{i}",
        request=Resources(rng.choice((100, 250, 500)), rng.choice((64, 128, 256)) * 1024**2, 64),
        node_selector=selector,
        host_ports=ports,
        spread=i % 4 != 0,
    )


def measure(label: str, count: int, run: Callable[[], object]) -> None:
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    print(f"{label:<34} {count:>6} placements  {count / elapsed:>10,.0f} placements/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    workloads = [make_request(i, rng) for i in range(50)]
    batch = [(f"r{w}-{k}", workloads[w]) for k in range(100) for w in range(50)]
    nodes = make_nodes(args.nodes, rng)
    measure(
        f"batch 50x100 on {args.nodes} nodes",
        len(batch),
        lambda: place_batch(batch, nodes, args.seed),
    )

    distinct = [(f"d{i}", make_request(1000 + i, rng)) for i in range(1000)]
    nodes = make_nodes(args.nodes, rng)
    measure(
        f"distinct 1000 on {args.nodes} nodes",
        len(distinct),
        lambda: place_batch(distinct, nodes, args.seed),
    )

    nodes = make_nodes(args.nodes, rng)
    queries = [make_request(i, rng) for i in range(200)]
    measure(
        f"place_one on {args.nodes} nodes",
        len(queries),
        lambda: [place_one(q, nodes, args.seed) for q in queries],
    )


if __name__ == "__main__":
    main()
