"""Simulated agents for scheduler_throughput.py: many nodes in one asyncio process.

    python bench/_simulated_agents.py --scheduler 127.0.0.1:7070 --nodes 1000

Each simulated node does what a real agent does towards the scheduler,
through the same gRPC APIs (proto/mctl/v1/node.proto, agent.proto), and
nothing on the machine:
- registers through NodeService.Register (all nodes share this process's
  Agent address; the scheduler tells them apart by DesiredSet.node);
- heartbeats from the moment it is registered, at the interval the
  scheduler answers (RegisterResponse, then each HeartbeatResponse: it
  stretches as the cluster grows), registering again when told to
  (HeartbeatResponse.reregister);
- answers Agent.SetDesired, then reports every desired replica as Running
  through NodeService.ReportStatus (complete, level-triggered, one report
  in flight per node; a set that changes meanwhile is reported next; a
  report equal to the last delivered one is not sent, as an agent's).

Lines on stdout tell the benchmark what happens: `port P`, `registered N
SECONDS`, and `stats ...` every few seconds. Runs until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from mctl.v1 import agent_pb2, agent_pb2_grpc, node_pb2, node_pb2_grpc, types_pb2

# As common/rpc.py sets them for every mctl channel and server: large desired
# sets, and keepalive pings accepted (the scheduler's channels to agents ping
# every 20 s; a server that refuses them answers GOAWAY "too_many_pings").
OPTIONS = [("grpc.max_send_message_length", 64 << 20),
           ("grpc.max_receive_message_length", 64 << 20),
           ("grpc.keepalive_time_ms", 20_000),
           ("grpc.keepalive_timeout_ms", 10_000),
           ("grpc.http2.max_pings_without_data", 0),
           ("grpc.keepalive_permit_without_calls", 1),
           ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000)]


@dataclass
class Stats:
    heartbeats: int = 0
    heartbeat_errors: int = 0
    reregistered: int = 0
    desired_sets: int = 0
    reports: int = 0
    report_errors: int = 0
    heartbeat_lag: list[float] = field(default_factory=list)   # s late against the interval
    heartbeat_codes: Counter[str] = field(default_factory=Counter)   # failures by status code


@dataclass
class SimNode:
    name: str
    interval: float = 1.0     # as the scheduler last said (RegisterResponse, HeartbeatResponse)
    started: dict[str, int] = field(default_factory=dict)   # uid -> when "started" (ms)
    last_report: bytes = b""  # the last delivered report: an agent sends no repeats
    desired: list[types_pb2.Replica] = field(default_factory=list)
    dirty: bool = False
    reporting: bool = False


class Simulation(agent_pb2_grpc.AgentServicer):
    def __init__(self, stub: node_pb2_grpc.NodeServiceStub, address: str, count: int,
                 prefix: str) -> None:
        self.stub = stub
        self.address = address
        self.nodes = {f"{prefix}{i:05d}": SimNode(f"{prefix}{i:05d}") for i in range(count)}
        self.stats = Stats()

    # -- Agent API (called by the scheduler) --

    async def SetDesired(self, request: agent_pb2.DesiredSet,
                         context: grpc.aio.ServicerContext) -> agent_pb2.DesiredAck:
        node = self.nodes.get(request.node)
        if node is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"no simulated node {request.node}")
        self.stats.desired_sets += 1
        node.desired = list(request.replicas)
        node.dirty = True
        if not node.reporting:
            node.reporting = True
            asyncio.get_running_loop().create_task(self._report(node))
        return agent_pb2.DesiredAck(accepted=True, revision=request.revision)

    # -- towards the scheduler --

    def _node_record(self, name: str) -> types_pb2.Node:
        return types_pb2.Node(
            name=name, address=self.address, labels={"sim": "true"},
            capacity=types_pb2.Resources(cpu_millis=16_000, memory_bytes=64 << 30,
                                         pids=100_000),
            agent_version="sim", runtime="sim", cgroup_mode="v1")

    async def register(self, name: str) -> None:
        delay = 0.1
        while True:
            try:
                reply = await self.stub.Register(
                    node_pb2.RegisterRequest(node=self._node_record(name)), timeout=30)
                self.nodes[name].interval = max(0.2, reply.heartbeat_interval_ms / 1000 or 1.0)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def heartbeat(self, name: str) -> None:
        node = self.nodes[name]
        await asyncio.sleep(random.uniform(0, node.interval))   # spread them out
        due = time.monotonic()
        while True:
            due += node.interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.stats.heartbeat_lag.append(max(0.0, time.monotonic() - due))
            try:
                reply = await self.stub.Heartbeat(
                    node_pb2.HeartbeatRequest(node=name, usage=types_pb2.Usage()), timeout=5)
                self.stats.heartbeats += 1
                if reply.heartbeat_interval_ms:
                    node.interval = max(0.2, reply.heartbeat_interval_ms / 1000)
                if reply.reregister:
                    self.stats.reregistered += 1
                    await self.register(name)
            except grpc.aio.AioRpcError as e:
                self.stats.heartbeat_errors += 1
                self.stats.heartbeat_codes[e.code().name] += 1
            if time.monotonic() - due > node.interval:
                due = time.monotonic()   # fell behind: skip, as a real agent's loop does

    async def _report(self, node: SimNode) -> None:
        try:
            while node.dirty:
                node.dirty = False
                report = node_pb2.StatusReport(node=node.name, complete=True)
                now = int(time.time() * 1000)
                node.started = {r.metadata.uid: node.started.get(r.metadata.uid, now)
                                for r in node.desired}
                for r in node.desired:
                    rep = report.replicas.add(namespace=r.metadata.namespace,
                                              name=r.metadata.name, uid=r.metadata.uid,
                                              spec_hash=r.spec_hash)
                    rep.status.phase = types_pb2.REPLICA_PHASE_RUNNING
                    rep.status.started_unix_ms = node.started[r.metadata.uid]
                raw = report.SerializeToString(deterministic=True)
                if raw == node.last_report:
                    continue    # as agent/node.py: an unchanged status is not sent again
                try:
                    await self.stub.ReportStatus(report, timeout=30)
                    node.last_report = raw
                    self.stats.reports += 1
                except grpc.aio.AioRpcError:
                    self.stats.report_errors += 1
                    node.dirty = True
                    await asyncio.sleep(0.5)
        finally:
            node.reporting = False


async def run(args: argparse.Namespace) -> None:
    server = grpc.aio.server(options=OPTIONS)
    port = server.add_insecure_port(args.listen)
    channel = grpc.aio.insecure_channel(args.scheduler, options=OPTIONS)
    sim = Simulation(node_pb2_grpc.NodeServiceStub(channel), f"127.0.0.1:{port}",
                     args.nodes, args.prefix)
    agent_pb2_grpc.add_AgentServicer_to_server(sim, server)
    await server.start()
    print(f"port {port}", flush=True)
    start = time.monotonic()
    limit = asyncio.Semaphore(args.concurrency)

    beats = []

    async def register(name: str) -> None:
        async with limit:
            await sim.register(name)
        # As an agent does: heartbeats start once the node is registered, not
        # once all are (5,000 registrations take longer than a lease lives).
        beats.append(asyncio.create_task(sim.heartbeat(name)))
    await asyncio.gather(*(register(n) for n in sim.nodes))
    print(f"registered {len(sim.nodes)} {time.monotonic() - start:.3f}", flush=True)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    while not stdin_closed.done():
        await asyncio.wait([stdin_closed], timeout=args.stats_every)
        s = sim.stats
        lag = sorted(s.heartbeat_lag)
        p90 = lag[int(len(lag) * 0.9)] if lag else 0.0
        print(f"stats heartbeats={s.heartbeats} heartbeat_errors={s.heartbeat_errors} "
              f"reregistered={s.reregistered} desired_sets={s.desired_sets} "
              f"reports={s.reports} report_errors={s.report_errors} "
              f"heartbeat_lag_p90_ms={p90 * 1000:.0f}" + "".join(
                  f" failed_{code}={n}" for code, n in sorted(s.heartbeat_codes.items())),
              flush=True)
        s.heartbeat_lag.clear()
    for task in beats:
        task.cancel()
    await server.stop(0.5)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--prefix", default="sim-")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="registrations in flight at once")
    parser.add_argument("--stats-every", type=float, default=2.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
