"""The agent's link to the scheduler: register, heartbeat, report status.

Registration is retried with capped exponential back-off until a scheduler
answers; then a heartbeat thread keeps the node's lease alive, at the
interval the scheduler gives (and changes as the cluster grows). When the
scheduler says it has lost the node (a restarted scheduler, a lapsed lease)
the agent registers again and sends its full status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from mctl.common import pki, rpc
from mctl.common.tls import TLSConfig, explain_failure
from mctl.v1 import node_pb2, node_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

RPC_TIMEOUT = 5.0


class SchedulerLink:
    def __init__(self, address: str, node: str, tls: TLSConfig | None = None) -> None:
        self.address = address
        self.node = node
        self._tls = tls
        self._channel = rpc.make_channel(address, tls, pki.SCHEDULER_SERVER_NAME)
        self._stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self._interval = 2.0
        self.pod_subnet = ""
        self.cluster_cidr = ""
        self.service_cidr = ""
        self._thread: threading.Thread | None = None
        self.registered = threading.Event()

    def report(self, report: node_pb2.StatusReport) -> None:
        if not self.registered.is_set():
            raise ConnectionError("not registered yet")
        self._stub.ReportStatus(report, timeout=RPC_TIMEOUT)

    def _register(self, node: types_pb2.Node, stop: threading.Event) -> bool:
        delay = 0.2
        while not stop.is_set():
            try:
                reply = self._stub.Register(node_pb2.RegisterRequest(node=node),
                                            timeout=RPC_TIMEOUT)
                self._interval = max(0.2, reply.heartbeat_interval_ms / 1000 or 2.0)
                # Read by on_registered: the node's container subnet.
                self.pod_subnet, self.cluster_cidr = reply.pod_subnet, reply.cluster_cidr
                self.service_cidr = reply.service_cidr
                log.info("registered with scheduler=%s heartbeat=%.1fs subnet=%s", self.address,
                         self._interval, reply.pod_subnet or "none")
                self.registered.set()
                return True
            except grpc.RpcError as e:
                log.warning("cannot register with scheduler=%s: %s; retrying in %.1fs",
                            self.address, self._why(e), delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        return False

    def _run(self, node: types_pb2.Node, usage: Callable[[], types_pb2.Usage],
             on_registered: Callable[[], None], stop: threading.Event) -> None:
        if not self._register(node, stop):
            return
        on_registered()
        while not stop.wait(self._interval):
            try:
                reply = self._stub.Heartbeat(
                    node_pb2.HeartbeatRequest(node=self.node, usage=usage()), timeout=RPC_TIMEOUT)
            except grpc.RpcError as e:
                log.warning("heartbeat failed: %s", self._why(e))
                continue
            if reply.heartbeat_interval_ms:
                # The scheduler spreads heartbeats as the cluster grows; it
                # gave the lease three such intervals before saying so.
                interval = max(0.2, reply.heartbeat_interval_ms / 1000)
                if interval != self._interval:
                    log.info("heartbeat interval now %.1fs", interval)
                    self._interval = interval
            if reply.reregister:
                log.info("scheduler asked this node to register again")
                self.registered.clear()
                if self._register(node, stop):
                    on_registered()

    def _why(self, error: grpc.RpcError) -> str:
        details = (error.details() or "") if isinstance(error, grpc.Call) else str(error)
        tls_problem = explain_failure(details, self._tls is not None)
        return f"TLS handshake failed: {tls_problem}" if tls_problem else details

    def start(self, node: types_pb2.Node, usage: Callable[[], types_pb2.Usage],
              on_registered: Callable[[], None], stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._run, args=(node, usage, on_registered, stop),
                                        name="scheduler-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._channel.close()
