"""common/health.py over loopback gRPC: states, the leader service, bounded watches."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mctl.common import health, rpc


@pytest.fixture
def served() -> Iterator[tuple[health.Health, grpc.Channel]]:
    server = rpc.make_server(max_workers=4)
    serving = health.Health(server, (health.OVERALL, health.LEADER))
    port = rpc.bind(server, "127.0.0.1:0")
    server.start()
    channel = rpc.make_channel(f"127.0.0.1:{port}")
    yield serving, channel
    channel.close()
    server.stop(grace=0)


def test_not_serving_until_ready_and_leader_apart(served):
    serving, channel = served
    assert health.check(channel) == "NOT_SERVING"
    assert health.check(channel, health.LEADER) == "NOT_SERVING"
    serving.ready()
    assert health.check(channel) == "SERVING"
    assert health.check(channel, health.LEADER) == "NOT_SERVING"
    serving.set(health.LEADER, True)
    assert health.check(channel, health.LEADER) == "SERVING"
    serving.set(health.LEADER, False)
    assert health.check(channel, health.LEADER) == "NOT_SERVING"
    assert health.check(channel, "mctl.other") == "SERVICE_UNKNOWN"


def test_shutdown_is_not_serving_for_good(served):
    serving, channel = served
    serving.ready()
    serving.set(health.LEADER, True)
    serving.shutdown()
    serving.ready()           # too late: ignored
    assert health.check(channel) == "NOT_SERVING"
    assert health.check(channel, health.LEADER) == "NOT_SERVING"


def test_watch_follows_the_state(served):
    serving, channel = served
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
    serving.ready()
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()


def test_watches_are_bounded(served):
    _, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    streams = []
    for _ in range(health.MAX_WATCHES):
        s = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        next(s)
        streams.append(s)
    extra = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        next(extra)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    streams.pop().cancel()
    deadline = time.monotonic() + 5
    while True:      # the server learns of the cancel asynchronously
        again = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        try:
            next(again)
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "a closed watch was never counted off"
            time.sleep(0.05)
    again.cancel()
    for s in streams:
        s.cancel()


def test_unreachable_and_unimplemented():
    channel = rpc.make_channel("127.0.0.1:1")
    assert health.check(channel, timeout=0.5) == "UNREACHABLE"
    channel.close()
    server = rpc.make_server(max_workers=1)
    port = rpc.bind(server, "127.0.0.1:0")
    server.start()
    channel = rpc.make_channel(f"127.0.0.1:{port}")
    try:
        assert health.check(channel) == "UNIMPLEMENTED"
    finally:
        channel.close()
        server.stop(grace=0)
