"""gRPC health checking (grpc.health.v1) of the scheduler and the agents.

A daemon answers the standard health service on its own gRPC port, so that
`grpc_health_probe`, Kubernetes' gRPC probes, load balancers and `mctl
cluster status` can ask it whether it is ready. The overall service ("")
starts NOT_SERVING and turns SERVING only once the daemon is ready: an
agent once it has adopted its containers and registered its node, a
scheduler once its watch cache is loaded and it answers reads. Leadership is
not readiness (a follower serves reads too), so it is a service name of its
own, LEADER: SERVING on the leader only. On shutdown everything turns
NOT_SERVING before the port closes, so a balancer stops sending first.

The servicer is grpcio-health-checking's (the gRPC project's own
implementation, with Watch); its import costs about 20 ms and no measurable
memory, so it is imported at start-up rather than lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import pki
from .authz import Rule

OVERALL = ""
LEADER = "mctl.leader"
SERVICE_NAME: str = health.SERVICE_NAME
# Any member of the cluster may ask whether a daemon is ready: it reveals
# nothing but the state names, and the CLI, schedulers and agents all probe.
RULE = Rule(roles=frozenset(pki.ROLES))
# Watch streams open at once. Behind the authorization interceptor a Watch
# holds one of the server's worker threads for as long as it is open, so a
# few callers must not be able to take them all.
MAX_WATCHES = 8

_STATUS_NAMES = {
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
    health_pb2.HealthCheckResponse.SERVING: "SERVING",
    health_pb2.HealthCheckResponse.NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
}


class _BoundedServicer(health.HealthServicer):
    """grpcio-health-checking's servicer, with at most MAX_WATCHES Watch streams."""

    def __init__(self) -> None:
        self._watch_lock = threading.Lock()
        self._watches = 0
        super().__init__()

    def Watch(self, request: health_pb2.HealthCheckRequest,  # noqa: N802 - gRPC's name
              context: grpc.ServicerContext,
              send_response_callback: Callable[..., Any] | None = None) -> Any:
        with self._watch_lock:
            if self._watches >= MAX_WATCHES:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{MAX_WATCHES} health watches are open already; use Check")
            self._watches += 1

        def closed() -> None:
            with self._watch_lock:
                self._watches -= 1
        context.add_callback(closed)
        return super().Watch(request, context, send_response_callback)


class Health:
    """The health states one daemon serves, NOT_SERVING until told otherwise."""

    def __init__(self, server: grpc.Server, services: tuple[str, ...] = (OVERALL,)) -> None:
        self._servicer = _BoundedServicer()
        for service in services:
            self._servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def set(self, service: str, serving: bool) -> None:
        self._servicer.set(service, health_pb2.HealthCheckResponse.SERVING if serving
                           else health_pb2.HealthCheckResponse.NOT_SERVING)

    def ready(self) -> None:
        self.set(OVERALL, True)

    def shutdown(self) -> None:
        """Every service NOT_SERVING for good (later set() calls are ignored)."""
        self._servicer.enter_graceful_shutdown()


def check(channel: grpc.Channel, service: str = OVERALL, timeout: float = 2.0) -> str:
    """The state `service` reports through `channel`: SERVING, NOT_SERVING, ...

    A daemon that does not answer gives UNREACHABLE, one without the health
    service UNIMPLEMENTED, and one that does not know `service` SERVICE_UNKNOWN.
    """
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        if code == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return "UNIMPLEMENTED"
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return "PERMISSION_DENIED"
        return "UNREACHABLE"
    return _STATUS_NAMES.get(reply.status, "UNKNOWN")
