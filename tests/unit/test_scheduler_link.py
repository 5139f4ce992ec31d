"""The agent's link adopts the heartbeat interval the scheduler gives as the cluster grows."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc

from mctl.agent.scheduler_link import SchedulerLink
from mctl.v1 import node_pb2, node_pb2_grpc, types_pb2


class Scheduler(node_pb2_grpc.NodeServiceServicer):
    def __init__(self) -> None:
        self.beats: list[float] = []

    def Register(self, request, context):
        return node_pb2.RegisterResponse(heartbeat_interval_ms=200)

    def Heartbeat(self, request, context):
        self.beats.append(time.monotonic())
        # The cluster grew: a longer lease was granted, heartbeat less often.
        return node_pb2.HeartbeatResponse(heartbeat_interval_ms=600)


def test_the_link_heartbeats_at_the_interval_the_scheduler_says():
    scheduler = Scheduler()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    node_pb2_grpc.add_NodeServiceServicer_to_server(scheduler, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    link = SchedulerLink(f"127.0.0.1:{port}", "n1")
    try:
        link.start(types_pb2.Node(name="n1"), types_pb2.Usage, lambda: None, stop)
        deadline = time.monotonic() + 10
        while len(scheduler.beats) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(scheduler.beats) >= 3
        gaps = [b - a for a, b in zip(scheduler.beats[1:], scheduler.beats[2:], strict=False)]
        # The first heartbeat came 0.2 s after registering; the later ones 0.6 s apart.
        assert scheduler.beats[0] and all(gap >= 0.55 for gap in gaps)
    finally:
        stop.set()
        link.close()
        server.stop(0)
