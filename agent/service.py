"""The agent's gRPC API: desired sets in, containers and logs out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import grpc

from mctl.common import containerlog
from mctl.v1 import agent_pb2, agent_pb2_grpc, control_pb2

from .containers import ContainerManager
from .node import NodeLoop
from .usage import UsageSampler

log = logging.getLogger(__name__)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, loop: NodeLoop, manager: ContainerManager, sampler: UsageSampler,
                 node: str) -> None:
        self.loop = loop
        self.manager = manager
        self.sampler = sampler
        self.node = node

    def SetDesired(self, request: agent_pb2.DesiredSet,
                   context: grpc.ServicerContext) -> agent_pb2.DesiredAck:
        if request.node and request.node != self.node:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"this is node {self.node}, not {request.node}")
        accepted = self.loop.set_desired(request.revision, list(request.replicas))
        return agent_pb2.DesiredAck(accepted=accepted, revision=request.revision)

    def ListContainers(self, request: agent_pb2.ListContainersRequest,
                       context: grpc.ServicerContext) -> agent_pb2.ContainerList:
        out = agent_pb2.ContainerList()
        now = int(time.time() * 1000)
        for c in sorted(self.manager.snapshot(), key=lambda c: c.id):
            info = out.containers.add(
                id=c.id, namespace=c.replica.metadata.namespace, replica=c.replica.metadata.name,
                uid=c.replica.metadata.uid, monitor_pid=c.monitor_pid, init_pid=c.init_pid,
                cgroup=c.cgroup, bundle=c.bundle)
            info.status.CopyFrom(self.loop.status_of(c, now))
            info.limits.CopyFrom(c.replica.spec.resources)
            usage = self.sampler.latest(c.id)
            if usage is not None:
                info.usage.CopyFrom(usage)
        return out

    def Logs(self, request: control_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[control_pb2.LogChunk]:
        path = self.manager.log_path(request.namespace or "default", request.replica)
        if not os.path.exists(path):
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"replica {request.replica} has no container on node {self.node}")
        for lines in containerlog.read(path, request.tail, request.follow, context.is_active):
            chunk = control_pb2.LogChunk()
            for ns, stream, data in lines:
                chunk.lines.add(unix_ns=ns, stream=stream, data=data)
            yield chunk
